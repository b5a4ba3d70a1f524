#!/usr/bin/env bash
# GPU check, one command on a CUDA machine (1 H100 or more, no
# internet; the crates must already be in ~/.cargo or vendored):
#
#   scripts/gpu-check.sh               # build (release, --features cuda), parity, DDP, gemma-2b bench
#   scripts/gpu-check.sh --cpu-smoke   # the same steps on the CPU: dev build, bf16 parity,
#                                      # the tiny shape instead of gemma-2b (no GPU needed)
#
# Steps:
# 1. build `align`, the parity tests and the dpo_step bench in one cargo call;
# 2. fixture DPO parity against the fp32 TRL log (tests/gpu_parity.rs): fp32
#    within 7.5e-3 relative / 5e-3 absolute (burn's autotune may run f32
#    matmuls on tensor cores as TF32, 2^-11 per rounding), bf16 within 3e-2
#    relative / 2e-2 absolute (2^-9 per rounding; see
#    tests/common/fixture_dpo.rs); on the CPU, tests/bf16_mixed.rs;
# 3. with more than one GPU, DDP on all of them against one GPU (fixture DPO);
# 4. a random-weight gemma-2b-shaped model (vocab 256000, hidden 2048,
#    intermediate 16384, 18 layers, 8 heads, 1 KV head, head_dim 256), bf16
#    mixed precision, 2 pairs x (chosen + rejected) x 1024 tokens per DPO
#    step: step time, tokens/s, MFU (model FLOPs 8*N*T + 16*L*H*d*S*T per
#    step, see benches/dpo_step.rs; H100 SXM dense bf16 peak 989 TFLOP/s,
#    ALIGN_BENCH_PEAK_TFLOPS to change), peak GPU memory (nvidia-smi, sampled
#    every 200 ms, minus the reading before the run) against the --dry-run
#    estimate of the same shape (plan::memory). With per-layer gradient
#    checkpointing (train::recompute; ALIGN_GPU_CHECK_CHECKPOINTING=0 to run
#    without): the
#    estimate without it is 85.6 GB for this shape on one device (activations
#    29.4 GB), over an H100's 80 GB. If the step fails (out of memory), again
#    with 1 pair per step, which the JSON line says ("pairs": 1).
#
# The last line on stdout is one JSON object; logs go to $ALIGN_GPU_CHECK_OUT
# (default out/gpu-check/).
set -uo pipefail
cd "$(dirname "$0")/.."

mode=gpu
case "${1:-}" in
  --cpu-smoke) mode=cpu ;;
  "") ;;
  *) echo "usage: $0 [--cpu-smoke]" >&2; exit 2 ;;
esac
out=${ALIGN_GPU_CHECK_OUT:-out/gpu-check}
mkdir -p "$out"
started=$(date +%s)
export CARGO_NET_OFFLINE=true

if [[ $mode == gpu ]]; then
  build_flags=(--release --features cuda)
  parity_test=gpu_parity
  shape=gemma-2b backend=cuda warmup=2 steps=5
else
  build_flags=(--profile dev)
  parity_test=bf16_mixed
  shape=tiny backend=cpu warmup=1 steps=2
fi

log() { echo "[gpu-check $(($(date +%s) - started))s] $*" >&2; }

# 1. Build everything in one cargo call; the executables' paths come from
#    cargo's JSON messages (no second build under another profile).
log "building (${build_flags[*]})"
if ! cargo build "${build_flags[@]}" --bin align --test "$parity_test" --bench dpo_step \
    --message-format=json-render-diagnostics >"$out/build.jsonl" 2>"$out/build.log"; then
  tail -30 "$out/build.log" >&2
  echo '{"gpu_check":"build failed","log":"'"$out/build.log"'"}'
  exit 1
fi
build_seconds=$(($(date +%s) - started))
executable() {
  python3 - "$out/build.jsonl" "$1" <<'EOF'
import json, sys
path = None
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[2]:
        path = m["executable"]
print(path or "")
EOF
}
align_bin=$(executable align)
parity_bin=$(executable "$parity_test")
bench_bin=$(executable dpo_step)
log "built in ${build_seconds}s: $align_bin"

# 2. Fixture parity (fp32 and bf16 on CUDA; bf16 on the CPU).
log "parity: $parity_test"
if timeout 240 "$parity_bin" --nocapture --test-threads=1 >"$out/parity.log" 2>&1; then
  parity=passed
else
  parity=failed
  tail -40 "$out/parity.log" >&2
fi
grep -E "worst|share" "$out/parity.log" >&2 || true

# 3. Data parallelism on every visible GPU.
gpus=0
if [[ $mode == gpu ]]; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
ddp=skipped
if (( gpus > 1 )); then
  # The fixture DPO on 1 GPU x accumulation N against N GPUs x accumulation 1:
  # the same micro-batches per step, so every logged value should agree (to
  # the TF32 tolerance of the parity test: 7.5e-3 relative).
  bin=$(realpath "$align_bin")
  fixture=tests/fixtures/tiny-gemma
  run_ddp() {  # $1: devices, $2: accumulation, $3: output folder
    (cd "$fixture" && timeout 300 "$bin" dpo recipe_dpo.yaml --backend cuda --devices "$1" --quiet \
      --set output_dir="$3" --set per_device_train_batch_size=1 \
      --set gradient_accumulation_steps="$2") >>"$out/ddp.log" 2>&1
  }
  if run_ddp cuda:0 "$gpus" "$out/ddp-1gpu" && run_ddp cuda:all 1 "$out/ddp-all"; then
    python3 - "$out/ddp-1gpu/metrics.jsonl" "$out/ddp-all/metrics.jsonl" >>"$out/ddp.log" 2>&1 <<'PY' && ddp=passed || ddp=failed
import json, sys
one, all_ = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
assert len(one) == len(all_), (len(one), len(all_))
worst = 0.0
for a, b in zip(one, all_):
    for key, value in a.items():
        if "runtime" in key or "per_second" in key or not isinstance(value, float):
            continue
        error = abs(value - b[key]) / max(abs(value), 1e-2)
        worst = max(worst, error)
print("ddp worst relative difference", worst)
assert worst <= 7.5e-3, worst
PY
  else
    ddp=failed
  fi
  log "DDP on $gpus GPUs: $ddp (log: $out/ddp.log)"
fi

# 4. The bench shape, with the peak device memory sampled beside it.
bench() {  # $1: gradient checkpointing 0/1, $2: pairs; prints the bench's JSON line
  local sampler="" base=0
  if [[ $mode == gpu ]]; then
    base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 | head -1)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 200 \
      >"$out/gpu-memory-$1.csv" 2>/dev/null &
    sampler=$!
  fi
  local line status
  line=$(ALIGN_BENCH_SHAPE=$shape ALIGN_BENCH_BACKEND=$backend ALIGN_BENCH_DTYPE=bf16 \
    ALIGN_BENCH_CHECKPOINTING=$1 ALIGN_BENCH_PAIRS=$2 ALIGN_BENCH_WARMUP=$warmup ALIGN_BENCH_STEPS=$steps \
    timeout 240 "$bench_bin" 2>"$out/bench-$1.log" | tail -1)
  status=$?
  if [[ -n $sampler ]]; then
    kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
    local peak
    peak=$(sort -n "$out/gpu-memory-$1.csv" | tail -1)
    line=$(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); j["peak_gpu_memory_bytes"]=(int(sys.argv[2])-int(sys.argv[3]))*2**20; print(json.dumps(j))' \
      "$line" "${peak:-0}" "$base" 2>/dev/null || echo "")
  fi
  [[ $status == 0 && -n $line ]] && echo "$line"
}
checkpointing=${ALIGN_GPU_CHECK_CHECKPOINTING:-1}
log "bench: $shape, bf16, $backend, gradient checkpointing $checkpointing, 2 pairs"
result=$(bench "$checkpointing" 2)
if [[ -z $result ]]; then
  tail -5 "$out/bench-$checkpointing.log" >&2
  log "bench failed (see $out/bench-$checkpointing.log); again with 1 pair per step"
  mv "$out/bench-$checkpointing.log" "$out/bench-$checkpointing-2pairs.log"
  result=$(bench "$checkpointing" 1)
fi
[[ -z $result ]] && { tail -5 "$out/bench-$checkpointing.log" >&2; result='{"bench":"failed"}'; }

python3 - "$result" "$parity" "$ddp" "$gpus" "$build_seconds" "$mode" "$(($(date +%s) - started))" <<'EOF'
import json, sys
bench = json.loads(sys.argv[1])
bench.update({
    "gpu_check": sys.argv[6],
    "parity": sys.argv[2],
    "ddp": sys.argv[3],
    "gpus": int(sys.argv[4]),
    "build_seconds": int(sys.argv[5]),
    "total_seconds": int(sys.argv[7]),
    "tf32": "fp32 matmuls may run as TF32 on tensor cores (burn autotune, cubek-matmul)",
})
measured = bench.get("peak_gpu_memory_bytes") or bench.get("peak_rss_bytes")
if measured and bench.get("estimate_bytes"):
    bench["measured_over_estimate"] = measured / bench["estimate_bytes"]
print(json.dumps(bench))
EOF
[[ $parity == passed && $result != '{"bench":"failed"}' ]]
