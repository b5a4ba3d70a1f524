#!/usr/bin/env bash
# DPO step benchmark (release build); the last line printed is one JSON object.
# Compare with ../shared/oracle/bench_trl.py on the same machine, run right after.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cargo bench --bench dpo_step --quiet
