#!/usr/bin/env bash
# align vs PyTorch + TRL on the CPU bench shape, one right after the other on
# this machine; prints both JSON results and the ratios (align / TRL) of the
# median step time, the CPU seconds per step and the peak RSS.
#   PROFILE=dev scripts/bench-vs-trl.sh   (see scripts/bench-dpo.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
align_json="$(scripts/bench-dpo.sh | tail -n 1)"
trl_json="$(scripts/bench-trl.sh | tail -n 1)"
echo "align: $align_json"
echo "trl:   $trl_json"
python3 -c 'import json, sys
a, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
ratio = lambda key: round(a[key] / t[key], 3)
print(json.dumps({
    "step_time_ratio": ratio("seconds_per_step_median"),
    "cpu_seconds_ratio": ratio("process_cpu_seconds_per_step_mean"),
    "peak_rss_ratio": ratio("peak_rss_bytes"),
    "align_seconds_per_step_median": a["seconds_per_step_median"],
    "trl_seconds_per_step_median": t["seconds_per_step_median"],
}))' "$align_json" "$trl_json"
