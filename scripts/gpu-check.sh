#!/usr/bin/env bash
# The GPU check, prepared here and run on a GPU machine that has no Rust
# toolchain and no network (scripts/gpu-bundle/run.sh says what it checks):
#
#   scripts/gpu-check.sh prepare    # build, then write target/gpu-bundle/ (at most 48 MiB)
#   target/gpu-bundle/run.sh        # on the GPU machine: one JSON line last
#   target/gpu-bundle/run.sh --cpu-smoke   # the same steps on the CPU
#
# `prepare` builds `align`, the parity test (tests/gpu_parity.rs) and the
# dpo_step bench with `--release --features cuda` in one cargo call, strips
# them, compresses them with xz, and copies the fixture they read and the
# bundle's scripts. The executables load the CUDA libraries at run time, so
# they also start on a machine without a CUDA driver (the CPU smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  prepare) ;;
  *) echo "usage: $0 prepare" >&2; exit 2 ;;
esac

limit_mib=48
bundle=target/gpu-bundle
messages=$(mktemp)
trap 'rm -f "$messages"' EXIT

echo "building align, gpu_parity and dpo_step (--release --features cuda)" >&2
cargo build --release --features cuda --bin align --test gpu_parity --bench dpo_step \
  --message-format=json-render-diagnostics >"$messages"

# The executables' paths, from cargo's own messages.
executable() {
  python3 - "$messages" "$1" <<'EOF'
import json, sys
path = ""
for line in open(sys.argv[1]):
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable") \
            and message["target"]["name"] == sys.argv[2]:
        path = message["executable"]
print(path)
EOF
}

rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/fixtures"
for name in align gpu_parity dpo_step; do
  path=$(executable "$name")
  [[ -n $path ]] || { echo "cargo built no executable named $name" >&2; exit 1; }
  strip -o "$bundle/bin/$name" "$path"
  xz -T2 -6 "$bundle/bin/$name"
done
cp -r tests/fixtures/tiny-gemma "$bundle/fixtures/"
cp scripts/gpu-bundle/run.sh scripts/gpu-bundle/find_cuda.py scripts/gpu-bundle/summarize.py "$bundle/"
chmod +x "$bundle/run.sh"
printf '{"commit": "%s", "dirty": %s, "built": "%s"}\n' \
  "$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  "$([[ -n $(git status --porcelain 2>/dev/null) ]] && echo true || echo false)" \
  "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$bundle/manifest.json"

size=$(du -sb "$bundle" | cut -f1)
du -ab "$bundle/bin" | sort -n >&2
echo "target/gpu-bundle: $((size / 1024 / 1024)) MiB ($size bytes; limit $limit_mib MiB)"
if ((size > limit_mib * 1024 * 1024)); then
  echo "the bundle is over $limit_mib MiB: it would not travel with the working tree" >&2
  exit 1
fi
