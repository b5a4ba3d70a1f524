#!/usr/bin/env bash
# align's DPO step benchmark on the CPU bench shape; the last line printed is
# one JSON object (median seconds per step, tokens/s, CPU seconds per step,
# peak RSS, load average). Compare with scripts/bench-trl.sh, run right after
# on the same machine (scripts/bench-vs-trl.sh runs both).
#   PROFILE=release (default) or PROFILE=dev (dependencies are -O3 in both;
#   dev skips the ~6 min release build of burn).
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${PROFILE:-release}"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cargo bench --profile "$profile" --bench dpo_step --quiet
