#!/usr/bin/env bash
# PyTorch + TRL on the same bench shape (scripts/oracle/bench_trl.py, 2
# threads); prints its JSON result with `peak_rss_bytes` added (from
# /usr/bin/time). Needs a venv with scripts/oracle/requirements.txt
# (about 5 GB):
#   python3 -m venv /opt/trl-venv && /opt/trl-venv/bin/pip install -r scripts/oracle/requirements.txt
#   TRL_PYTHON=/opt/trl-venv/bin/python scripts/bench-trl.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python="${TRL_PYTHON:-/opt/trl-venv/bin/python}"
if [ ! -x "$python" ]; then
    echo "no TRL venv at $python (set TRL_PYTHON; see the comment at the top of $0)" >&2
    exit 1
fi
rss_file="$(mktemp)"
json="$(/usr/bin/time -f '%M' -o "$rss_file" "$python" scripts/oracle/bench_trl.py \
    --tokenizer tests/fixtures/tiny-gemma/model --threads 2 2>/dev/null)"
peak_kb="$(tail -n 1 "$rss_file")"
rm -f "$rss_file"
python3 -c 'import json, sys
result = json.loads(sys.argv[1])
result["peak_rss_bytes"] = int(sys.argv[2]) * 1024
print(json.dumps(result))' "$json" "$peak_kb"
