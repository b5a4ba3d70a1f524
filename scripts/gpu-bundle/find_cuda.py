#!/usr/bin/env python3
"""Finds the CUDA libraries and headers an `align --features cuda` build
loads at run time, on a machine laid out like the GPU machine: the driver's
`libcuda.so.1`, and NVRTC, NCCL and the CUDA headers either from a toolkit
(`/usr/local/cuda`) or from the `nvidia-*` pip packages of this `python3`.

Why a folder of links: cudarc 0.19 (through cubecl-cuda) dlopens
`libnvrtc.so` / `libnvrtc.so.<major>` and `libnccl.so`, never NCCL's real
soname `libnccl.so.2`, and the pip packages ship only the real names.

Why the version check: cubecl compiles kernels to PTX with NVRTC, and a
driver refuses PTX from an NVRTC newer than itself
(CUDA_ERROR_UNSUPPORTED_PTX_VERSION), so the NVRTC (and the headers paired
with it) must be no newer than the driver's CUDA version.

Writes a folder of links, a shell file of exports (`LD_LIBRARY_PATH`,
`CUDA_PATH`) and prints a JSON report of what was used and why.
Usage: find_cuda.py LINK_DIR ENV_FILE
Environment: ALIGN_CUDA_DRIVER_VERSION=13.0 replaces the driver's own
answer (for tests on machines without a driver).
"""

import ctypes
import glob
import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys

HEADERS = ["cuda_runtime.h", "cuda_bf16.h", "mma.h"]


def version_tuple(text):
    """'13.0.88' -> (13, 0); None when it is not a version."""
    match = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def driver_version():
    """The CUDA version the driver supports, as (major, minor), and how it was read."""
    forced = os.environ.get("ALIGN_CUDA_DRIVER_VERSION")
    if forced:
        return version_tuple(forced), "ALIGN_CUDA_DRIVER_VERSION"
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        value = ctypes.c_int()
        if cuda.cuDriverGetVersion(ctypes.byref(value)) == 0:
            return (value.value // 1000, value.value % 1000 // 10), "cuDriverGetVersion"
    except OSError:
        pass
    try:
        text = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
        match = re.search(r"CUDA Version:\s*(\d+\.\d+)", text)
        if match:
            return version_tuple(match.group(1)), "nvidia-smi"
    except (OSError, subprocess.SubprocessError):
        pass
    return None, "not found"


def libcuda_path():
    """Where the dynamic loader finds the driver's libcuda.so.1, if anywhere."""
    try:
        text = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=30).stdout
        for line in text.splitlines():
            if "libcuda.so.1 " in line and "=>" in line:
                return line.split("=>")[-1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return first(["/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1", "/usr/lib/wsl/lib/libcuda.so.1"])


def nvrtc_version_of(path):
    """NVRTC's own answer (nvrtcVersion), or None when it cannot be loaded."""
    try:
        nvrtc = ctypes.CDLL(path)
        major, minor = ctypes.c_int(), ctypes.c_int()
        if nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)) == 0:
            return (major.value, minor.value)
    except (OSError, AttributeError):
        pass
    return None


def pip_version(site, *distributions):
    """The version pip installed of the first of `distributions` found in `site`."""
    for dist in importlib.metadata.distributions(path=[site]):
        if dist.metadata["Name"] in distributions:
            return version_tuple(dist.version)
    return None


def nvidia_folders():
    """Every folder of the `nvidia` namespace package this python3 sees."""
    try:
        import nvidia  # noqa: F401  (a namespace package: only its __path__)

        return [os.path.abspath(p) for p in nvidia.__path__]
    except ImportError:
        return []


def first(pattern_list):
    for pattern in pattern_list:
        found = sorted(glob.glob(pattern))
        if found:
            return found[-1]
    return None


def has_headers(include):
    present = all(os.path.isfile(os.path.join(include, h)) for h in HEADERS)
    barrier = any(
        os.path.isfile(os.path.join(include, sub, "cuda", "barrier")) for sub in ("", "cccl")
    )
    return present and barrier


def toolkits():
    """Candidate (root, nvrtc library, version, source) with headers under root/include."""
    found = []
    roots = [os.environ.get("CUDA_PATH"), "/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"))
    for root in dict.fromkeys(r for r in roots if r and os.path.isdir(r)):
        library = first([f"{root}/lib64/libnvrtc.so.*[0-9]", f"{root}/targets/*/lib/libnvrtc.so.*[0-9]"])
        version = None
        try:
            with open(os.path.join(root, "version.json")) as f:
                version = version_tuple(json.load(f).get("cuda_nvrtc", {}).get("version"))
        except (OSError, ValueError):
            pass
        if library:
            version = nvrtc_version_of(library) or version
            found.append((os.path.realpath(root), library, version, "toolkit"))
    for folder in nvidia_folders():
        # cu13 wheels share one tree (nvidia/cu13/{lib,include}); cu12 wheels one per library.
        for root, pattern, dists in [
            (f"{folder}/cu13", "lib/libnvrtc.so.13*", ("nvidia-cuda-nvrtc", "nvidia-cuda-nvrtc-cu13")),
            (f"{folder}/cuda_nvrtc", "lib/libnvrtc.so.12*", ("nvidia-cuda-nvrtc-cu12",)),
        ]:
            library = first([f"{root}/{pattern}"])
            if library:
                site = os.path.dirname(folder)
                version = nvrtc_version_of(library) or pip_version(site, *dists)
                found.append((root, library, version, "pip"))
    return found


def header_root(root):
    """The CUDA_PATH whose include/ holds the headers cubecl compiles with."""
    if has_headers(os.path.join(root, "include")):
        return root
    # cu12 wheels: headers in the runtime package beside the NVRTC one.
    sibling = os.path.join(os.path.dirname(root), "cuda_runtime")
    if has_headers(os.path.join(sibling, "include")):
        return sibling
    return None


def choose_nvrtc(candidates, driver):
    """The newest NVRTC no newer than the driver, among those with headers."""
    usable = [(c, header_root(c[0])) for c in candidates]
    usable = [(c, h) for c, h in usable if h]
    if not usable:
        return None, None, "no NVRTC with the CUDA headers beside it"
    fits = [(c, h) for c, h in usable if driver and c[2] and c[2] <= driver]
    if fits:
        chosen, headers = max(fits, key=lambda ch: ch[0][2])
        return chosen, headers, "newest NVRTC no newer than the driver"
    chosen, headers = min(usable, key=lambda ch: ch[0][2] or (99, 99))
    why = "no NVRTC is known to be no newer than the driver: the oldest found"
    return chosen, headers, why


def find_nccl():
    for folder in nvidia_folders():
        library = first([f"{folder}/nccl/lib/libnccl.so.*[0-9]"])
        if library:
            return library
    return first(["/usr/lib/x86_64-linux-gnu/libnccl.so.*[0-9]", "/usr/local/cuda/lib64/libnccl.so.*[0-9]"])


def link(folder, name, target):
    path = os.path.join(folder, name)
    if os.path.lexists(path):
        os.remove(path)
    os.symlink(target, path)
    return path


def main(link_dir, env_file):
    os.makedirs(link_dir, exist_ok=True)
    driver, driver_source = driver_version()
    chosen, headers, why = choose_nvrtc(toolkits(), driver)
    nccl = find_nccl()
    report = {
        "driver_cuda": "%d.%d" % driver if driver else None,
        "driver_cuda_from": driver_source,
        "libcuda": libcuda_path(),
        "nvrtc": chosen[1] if chosen else None,
        "nvrtc_version": "%d.%d" % chosen[2] if chosen and chosen[2] else None,
        "nvrtc_from": chosen[3] if chosen else None,
        "nvrtc_choice": why,
        "cuda_path": headers,
        "nccl": nccl,
        "links": link_dir,
    }
    library_dirs = [link_dir]
    if chosen:
        major = chosen[2][0] if chosen[2] else 13
        link(link_dir, "libnvrtc.so", chosen[1])
        link(link_dir, f"libnvrtc.so.{major}", chosen[1])
        # NVRTC loads its builtins library from its own folder.
        library_dirs.append(os.path.dirname(chosen[1]))
    if nccl:
        link(link_dir, "libnccl.so", nccl)
        library_dirs.append(os.path.dirname(nccl))
    with open(env_file, "w") as f:
        existing = os.environ.get("LD_LIBRARY_PATH")
        paths = ":".join(library_dirs + ([existing] if existing else []))
        f.write("export LD_LIBRARY_PATH=%s\n" % shlex.quote(paths))
        if headers:
            f.write("export CUDA_PATH=%s\n" % shlex.quote(headers))
    print(json.dumps(report))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: find_cuda.py LINK_DIR ENV_FILE")
    main(sys.argv[1], sys.argv[2])
