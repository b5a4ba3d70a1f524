#!/usr/bin/env bash
# The GPU check, run from its bundle (`scripts/gpu-check.sh prepare` writes
# target/gpu-bundle/: this script, find_cuda.py, summarize.py, bin/ with the
# release `--features cuda` executables, fixtures/). It needs no cargo, no
# network and no file outside the bundle:
#
#   target/gpu-bundle/run.sh               # on the GPU machine (cuda:0)
#   target/gpu-bundle/run.sh --cpu-smoke   # the same steps on the CPU, tiny shapes
#   target/gpu-bundle/run.sh --discover    # only find the CUDA libraries, print the JSON
#
# Steps, cheapest first, each under its own timeout; a failed step does not
# stop the next:
#   device   a matmul on the device against the host (driver, NVRTC, a launch);
#   parity   the fixture's DPO parity against TRL in fp32 and in bf16
#            (tests/gpu_parity.rs: micro-batches and the 16-step run);
#   dpo_run  `align dpo` on the fixture recipe end to end (metrics, a
#            checkpoint, the saved model generating again);
#   bench    a DPO step on a gemma-2b-shaped model in bf16 (tiny on the CPU):
#            step time, tokens/s, MFU, peak GPU memory against --dry-run's
#            estimate; once more with 1 pair per step only after running out
#            of memory;
#   nccl     skipped: there is no NCCL exchange yet.
# Logs go to $OUT when set, else out/gpu-check/; the last line on stdout is
# one JSON object (summarize.py). Exit status 0 when every step that ran passed.
#
# Environment: OUT; ALIGN_GPU_CHECK_BIN (a folder with align, gpu_parity and
# dpo_step instead of the bundle's bin/); ALIGN_TEST_FIXTURES (instead of the
# bundle's fixtures/); ALIGN_GPU_CHECK_CACHE (cubecl's caches, default
# $OUT/cubecl-cache); ALIGN_CUDA_DRIVER_VERSION (see find_cuda.py).
set -uo pipefail
bundle=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

mode=gpu
case "${1:-}" in
  "") ;;
  --cpu-smoke) mode=cpu ;;
  --discover) mode=discover ;;
  *) echo "usage: $0 [--cpu-smoke | --discover]" >&2; exit 2 ;;
esac

out=${OUT:-out/gpu-check}
mkdir -p "$out" && out=$(cd "$out" && pwd)
work=$out/work
mkdir -p "$work"
started=$(date +%s)
log() { echo "[gpu-check $(($(date +%s) - started))s] $*" | tee -a "$out/run.log" >&2; }
: >"$out/steps.tsv"

# CUDA libraries and headers (find_cuda.py says why each was chosen).
if [[ $mode != cpu ]]; then
  python3 "$bundle/find_cuda.py" "$out/cuda-libs" "$out/cuda.env" >"$out/cuda.json" 2>>"$out/run.log"
  # shellcheck disable=SC1091
  [[ -f $out/cuda.env ]] && source "$out/cuda.env"
  log "CUDA libraries: $(cat "$out/cuda.json")"
  if [[ $mode == discover ]]; then
    cat "$out/cuda.json"
    exit 0
  fi
fi

# The executables: the bundle's (xz-compressed), or a folder given.
bin=${ALIGN_GPU_CHECK_BIN:-}
if [[ -z $bin ]]; then
  bin=$out/bin
  mkdir -p "$bin"
  for packed in "$bundle"/bin/*; do
    name=$(basename "$packed" .xz)
    if [[ $packed == *.xz ]]; then
      if command -v xz >/dev/null; then
        xz -dc "$packed" >"$bin/$name"
      else
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
          "$packed" "$bin/$name"
      fi
    else
      cp "$packed" "$bin/$name"
    fi
    chmod +x "$bin/$name"
  done
fi
export ALIGN_TEST_FIXTURES=${ALIGN_TEST_FIXTURES:-$bundle/fixtures}

# cubecl reads cubecl.toml from the working directory or a parent: every step
# runs under $work. Minimal autotune keeps the first run short; the caches
# let a second run skip compilation and tuning.
cache=${ALIGN_GPU_CHECK_CACHE:-$out/cubecl-cache}
mkdir -p "$cache"
cat >"$work/cubecl.toml" <<EOF
[autotune]
level = "minimal"
[autotune.cache]
file = "$cache/autotune"
[compilation.cache]
file = "$cache/compilation"
EOF

if [[ $mode == gpu ]]; then
  backend=cuda device=cuda:0
  shape=gemma-2b warmup=2 steps=5
else
  backend=cpu device=cpu
  shape=tiny warmup=1 steps=2
fi
export ALIGN_GPU_PARITY_BACKEND=$backend

# step NAME SECONDS COMMAND...: runs COMMAND in $work under a timeout, its
# output in $OUT/NAME.log, and records the outcome in steps.tsv.
step() {
  local name=$1 limit=$2 t0 status rc
  shift 2
  t0=$(date +%s)
  log "$name: started (timeout ${limit}s)"
  (cd "$work" && timeout --kill-after=10 "$limit" "$@") >"$out/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status=failed; echo "timed out after ${limit}s" >>"$out/$name.log" ;;
    *) status=failed ;;
  esac
  printf '%s\t%s\t%s\n' "$name" "$status" "$(($(date +%s) - t0))" >>"$out/steps.tsv"
  log "$name: $status"
  [[ $status == ok ]] || tail -15 "$out/$name.log" >&2
  return $rc
}
skip() { printf '%s\tskipped\t0\t%s\n' "$1" "$2" >>"$out/steps.tsv"; log "$1: skipped ($2)"; }

parity() {  # the gpu_parity tests whose names contain $1
  "$bin/gpu_parity" --include-ignored --test-threads=1 --nocapture "$1"
}

# The fixture recipe end to end, then its saved model answering a prompt.
dpo_run() {
  rm -rf "$work/tiny-gemma" "$out/dpo-run"
  cp -r "$ALIGN_TEST_FIXTURES/tiny-gemma" "$work/tiny-gemma"
  (cd "$work/tiny-gemma" && "$bin/align" dpo recipe_dpo.yaml --backend "$backend" \
    --devices "$device" --quiet --set output_dir="$out/dpo-run" \
    --set save_strategy=steps --set save_steps=8) || return 1
  [[ -s $out/dpo-run/metrics.jsonl ]] || { echo "no metrics.jsonl"; return 1; }
  compgen -G "$out/dpo-run/checkpoint-*" >/dev/null || { echo "no checkpoint"; return 1; }
  "$bin/align" generate --model "$out/dpo-run" --prompt "What is 2+2?" \
    --max-new-tokens 8 --backend "$backend" --device "$device"
}

# The bench, with the GPU's memory sampled beside it; $1: pairs per step.
bench() {
  local sampler="" base=0
  if [[ $mode == gpu ]] && command -v nvidia-smi >/dev/null; then
    base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 | head -1)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 200 \
      >"$out/gpu-memory.csv" 2>/dev/null &
    sampler=$!
  fi
  ALIGN_BENCH_SHAPE=$shape ALIGN_BENCH_BACKEND=$backend ALIGN_BENCH_DTYPE=bf16 \
    ALIGN_BENCH_CHECKPOINTING=1 ALIGN_BENCH_PAIRS=$1 ALIGN_BENCH_WARMUP=$warmup \
    ALIGN_BENCH_STEPS=$steps "$bin/dpo_step" --bench
  local rc=$?
  if [[ -n $sampler ]]; then
    kill "$sampler" 2>/dev/null
    wait "$sampler" 2>/dev/null
    echo "peak_gpu_memory_mib $(($(sort -n "$out/gpu-memory.csv" | tail -1) - base))"
  fi
  return $rc
}

export bin backend device shape warmup steps mode out work
export -f parity dpo_run bench

step device 180 bash -c 'parity device_runs_a_kernel'
if [[ $(cut -f2 "$out/steps.tsv") == ok ]]; then
  step parity_fp32 240 bash -c 'parity fp32'
  step parity_bf16 240 bash -c 'parity bf16'
  step dpo_run 180 bash -c 'dpo_run'
  if ! step bench 240 bash -c 'bench 2' && grep -qiE "out of memory|OutOfMemory" "$out/bench.log"; then
    mv "$out/bench.log" "$out/bench-2-pairs.log"
    sed -i '$d' "$out/steps.tsv"
    step bench 240 bash -c 'bench 1'
  fi
else
  for name in parity_fp32 parity_bf16 dpo_run bench; do skip "$name" "the device step failed"; done
fi
skip nccl "no NCCL exchange yet"

python3 "$bundle/summarize.py" "$out" "$mode" "$(($(date +%s) - started))"
