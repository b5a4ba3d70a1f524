#!/usr/bin/env python3
"""The GPU check's one JSON line: each step's outcome, seconds and figures
(read from its log in OUT), the CUDA libraries used and the GPU.
Usage: summarize.py OUT MODE TOTAL_SECONDS"""

import glob
import json
import os
import re
import subprocess
import sys


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def numbers(text, pattern):
    return [float(m) for m in re.findall(pattern, text)]


def gpu():
    try:
        line = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        ).stdout.strip().splitlines()[0]
        name, driver, memory = (part.strip() for part in line.split(","))
        return {"name": name, "driver": driver, "memory": memory}
    except (OSError, IndexError, ValueError, subprocess.SubprocessError):
        return None


def parity_figures(text):
    return {
        "passed": "test result: ok" in text,
        "largest_share_of_tolerance": numbers(text, r"largest share of the tolerance used: ([0-9.eE+-]+)"),
        "final_weights_worst_abs_diff": numbers(text, r"final weights: worst abs diff ([0-9.eE+-]+)"),
    }


def dpo_run_figures(out, text):
    lines = [json.loads(l) for l in read(os.path.join(out, "dpo-run", "metrics.jsonl")).splitlines() if l.strip()]
    train = [l for l in lines if "loss" in l and "eval_loss" not in l]
    evals = [l for l in lines if "eval_loss" in l]
    figures = {
        "logged_steps": len(train),
        "checkpoints": sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "dpo-run", "checkpoint-*"))),
    }
    generated = numbers(text, r"\[(\d+) tokens, [0-9.]+ tokens/s\]")
    if generated:
        figures["generated_tokens"] = int(generated[-1])
    if train:
        figures["last_loss"] = train[-1].get("loss")
    if evals:
        figures["eval_loss"] = evals[-1].get("eval_loss")
        figures["eval_rewards_accuracies"] = evals[-1].get("eval_rewards/accuracies")
    return figures


def bench_figures(text):
    result = None
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                pass
    if result is None:
        return {}
    peak = numbers(text, r"peak_gpu_memory_mib (-?\d+)")
    if peak:
        result["peak_gpu_memory_bytes"] = int(peak[-1]) * 2**20
    measured = result.get("peak_gpu_memory_bytes") or result.get("peak_rss_bytes")
    if measured and result.get("estimate_bytes"):
        result["measured_over_estimate"] = measured / result["estimate_bytes"]
    return result


def main(out, mode, total):
    steps = {}
    for row in read(os.path.join(out, "steps.tsv")).splitlines():
        name, status, seconds, *why = row.split("\t")
        text = read(os.path.join(out, name + ".log"))
        step = {"status": status, "seconds": int(seconds)}
        if why:
            step["why"] = why[0]
        if name == "device":
            step["matmul_worst_error"] = next(iter(numbers(text, r"matmul worst error ([0-9.eE+-]+)")), None)
        elif name.startswith("parity"):
            step.update(parity_figures(text))
        elif name == "dpo_run" and status != "skipped":
            step.update(dpo_run_figures(out, text))
        elif name == "bench" and status != "skipped":
            step.update(bench_figures(text))
        steps[name] = step
    try:
        libraries = json.loads(read(os.path.join(out, "cuda.json")) or "null")
    except ValueError:
        libraries = None
    print(json.dumps({
        "gpu_check": mode,
        "ok": all(s["status"] != "failed" for s in steps.values()),
        "gpu": gpu() if mode == "gpu" else None,
        "cuda_libraries": libraries,
        "steps": steps,
        "total_seconds": int(total),
        "logs": out,
    }))
    return 0 if all(s["status"] != "failed" for s in steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
