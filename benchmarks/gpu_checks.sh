#!/usr/bin/env bash
# Issue 21's GPU checks for a lent GPU machine (../shared/gpu/README.md), in one device call. Here, first:
#   bash ../shared/gpu/prepare.sh                     # wheels, installer and shared data into .gpu/ (git-ignored)
#   GPU_CHECKS_DRY=1 bash benchmarks/gpu_checks.sh all   # the same script on this CPU at tiny sizes (~1 min):
#                                                     # a typo must never cost GPU minutes
# then one device call, carrying [".gpu"], timeout_s 600:
#   bash benchmarks/gpu_checks.sh all       # <= 9 min in all (BUDGET_S=540), set-up included:
#     bench    published step vs ours, fp32 / tf32 / bf16: ms/step, ratio, peak memory (official config) ~1 min
#     tests    the fast suite on CUDA (failures reported, nothing stops)                                <= 3 min
#     causal   configs/causal_gpu.yaml (official / 56% skipped / no_disc at the published width, collapse
#              regime) for the minutes left: whole seeds that would not end in time are left out
# or one check per call: `bench`, `tests` (the suite with --runslow), `precision` (bf16 vs fp32, 3 seeds x 300
# steps, configs/precision_gpu.yaml). CAUSAL_PRECISION=bf16 trains the causal grid in bf16: only once `precision`
# found bf16 within the seed-to-seed spread of fp32.
#
# The device returns at most 8 files, 2 folders down: everything is written to runs/gpu_checks/ there and packed
# (logs, configs, tables; no checkpoints) into $OUT/gpu_checks.tgz after every stage, so a stage cut short
# still leaves the earlier ones; $OUT/summary.txt is what the script printed at the end. Back here:
#   bash benchmarks/gpu_checks.sh report FILES_AT/gpu_checks.tgz "the device call's command" [WALL_MINUTES]
# unpacks it into runs/gpu_checks_<date>/, renders notebook 02 on the causal runs (`cmgan ablate --no-train`) and
# shares reports/<date>_gpu/ (README with device, command, commit, wall time; bench.txt, tests.txt, device.txt).
set -euo pipefail
mode="${1:-}"
dry="${GPU_CHECKS_DRY:-0}"
work="${GPU_CHECKS_WORK:-runs/gpu_checks}"  # where it writes (the tests: a temporary folder)
out="${OUT:-runs/gpu_checks_out}"
start=$(date +%s)
budget="${BUDGET_S:-540}"
left() { echo $(( budget - ($(date +%s) - start) )); }

if [[ "$mode" == report ]]; then  # back on the CPU machine
  tgz="${2:?usage: bash benchmarks/gpu_checks.sh report GPU_CHECKS_TGZ COMMAND [WALL_MINUTES]}"
  command="${3:?the device call's command, for the report's README}"
  py="${PY:-.venv/bin/python}"
  day=$(tar -xzOf "$tgz" ./date.txt)
  dest="${REPORT_DIR:-reports/${day}_gpu}"
  here="${work}_${day}"
  rm -rf "$here" && mkdir -p "$here" && tar -xzf "$tgz" -C "$here"
  device=$(cat "$here/device.txt")
  if [[ -f "$here/CAUSAL_GPU/grid.yaml" ]]; then
    "$py" -m cmgan_lib.cli ablate --grid "$here/CAUSAL_GPU/grid.yaml" --out "$here/CAUSAL_GPU" --no-train
  else  # the causal stage never started: a report of the bench and the tests alone
    mkdir -p "$here/CAUSAL_GPU" && echo "run" > "$here/CAUSAL_GPU/summary.csv"
  fi
  wall="${4:-$(awk '{printf "%.1f", $2 / 60}' "$here/wall.txt")}"
  "$py" -m cmgan_lib.cli share-report "$here/CAUSAL_GPU" "$dest" --command "$command" --device "$device" \
    --wall-minutes "$wall"
  for f in bench.txt tests.txt causal.txt device.txt summary.txt; do
    if [[ -f "$here/$f" ]]; then cp "$here/$f" "$dest/"; fi
  done
  echo "Also from the GPU machine: \`summary.txt\` (what the script printed at the end), \`bench.txt\` (published \
step vs ours per precision), \`tests.txt\` (the suite on CUDA), \`causal.txt\`, \`device.txt\`." >> "$dest/README.md"
  echo "shared: $dest (add the findings: cmgan share-report ... --note FILE, or edit its README)"
  exit 0
fi

case "$mode" in all | bench | tests | precision) ;; *)
  echo "usage: bash benchmarks/gpu_checks.sh all|bench|tests|precision (GPU), or report TGZ COMMAND (here)" >&2
  exit 2 ;;
esac
rm -rf "$work" && mkdir -p "$work" "$out"
date -u +%Y-%m-%d > "$work/date.txt"
if [[ "$dry" == 1 ]]; then
  py="${PY:-.venv/bin/python}"
  echo "CPU dry run (GPU_CHECKS_DRY=1, tiny sizes), $(nproc) cores, no GPU" | tee "$work/device.txt"
else
  bash .gpu/setup-on-device.sh
  export PYTHONPATH="/tmp/site:$PWD" CMGAN_SHARED="$PWD/.gpu/shared"
  py=python3
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$work/device.txt"
fi
export PYTHONUNBUFFERED=1
pack() { tar -czf "$out/gpu_checks.tgz" --exclude='*.pt' -C "$work" .; }
log() { tr '\r' '\n' | grep --line-buffered -v -e '%|' -e '^ *$' | tee -a "$1"; }  # whole lines, no bars

stage_bench() {
  echo "== bench ($(left) s left)"
  local args=(--published --steps 10 --warmup 3)
  [[ "$dry" == 1 ]] && args=(--published --config configs/tiny_cpu.yaml --steps 1 --warmup 1 --precisions fp32
                              batch_size=2 num_channel=4 num_tscb=1 cut_len=4000)
  timeout "${BENCH_S:-150}" "$py" benchmarks/bench_train_step.py "${args[@]}" 2>&1 | log "$work/bench.txt" \
    || echo "bench: exit ${PIPESTATUS[0]} (124: cut at ${BENCH_S:-150} s)" | tee -a "$work/bench.txt"
  pack
}

stage_tests() {  # $1: extra pytest arguments; SIGINT at the limit so pytest still prints its summary
  echo "== tests ($(left) s left)"
  # the tests whose code runs on the GPU first, so a cut at the limit leaves the CUDA results; then the rest
  local sel=(tests/test_train.py tests/test_numerics.py tests/test_grad_share.py tests/test_validation.py
             tests/test_nothing_lost.py tests/test_bench_train_step.py tests/test_enhance.py tests/test_models.py
             tests/test_pesq_labels.py tests/test_evaluate.py tests/test_bad_inputs.py tests)
  [[ "$dry" == 1 ]] && sel=(tests/test_study.py)
  timeout -s INT -k 20 "${TESTS_S:-180}" "$py" -m pytest -q -p no:cacheprovider "$@" "${sel[@]}" 2>&1 \
    | log "$work/tests.txt" | tail -15 || true
  pack
}

stage_causal() {
  local limit=$(( $(left) - 45 ))  # 45 s kept for packing and the summary
  echo "== causal ($(left) s left; runs start while they should end within ${limit} s)"
  if (( limit < ${MIN_CAUSAL_S:-60} )); then
    echo "causal: too little time left (${limit} s)" | tee "$work/causal.txt"
    return
  fi
  "$py" - "$work/causal_grid.yaml" "$dry" "${CAUSAL_PRECISION:-fp32}" <<'EOF'
import sys

import yaml

path, dry, precision = sys.argv[1:]
grid = yaml.safe_load(open("configs/causal_gpu.yaml"))
grid["overrides"]["precision"] = precision
if dry == "1":  # the same grid at a size two CPU cores train in a minute: 2 seeds x 3 variants, 2 epochs
    grid["overrides"].update(num_channel=4, ndf=4, epochs=2, train_repeat=2, pesq_workers=1, val_max_files=2)
    grid["seeds"] = [0, 1]
yaml.safe_dump(grid, open(path, "w"), sort_keys=False)
EOF
  local per_gpu=6 threads=2  # six runs share the card; each trainer's CPU threads kept to a share of 16 cores
  [[ "$dry" == 1 ]] && per_gpu=1 threads=1
  OMP_NUM_THREADS=$threads timeout -k 10 $(( limit + 30 )) "$py" -m cmgan_lib.cli ablate --grid "$work/causal_grid.yaml" \
    --out "$work/CAUSAL_GPU" --runs-per-gpu "$per_gpu" --cpu-runs 2 --no-notebooks --time-limit "$limit" 2>&1 \
    | log "$work/causal.txt" || echo "causal: exit ${PIPESTATUS[0]}" | tee -a "$work/causal.txt"
  pack
}

case "$mode" in
  all)
    stage_bench
    stage_tests
    stage_causal ;;
  bench) stage_bench ;;
  tests) TESTS_S="${TESTS_S:-480}" stage_tests --runslow ;;
  precision)
    "$py" -m cmgan_lib.cli ablate --grid configs/precision_gpu.yaml --out "$work/PRECISION_GPU" --runs-per-gpu 3 \
      --no-notebooks 2>&1 | log "$work/precision.txt" | tail -20
    pack ;;
esac
echo "wall $(( $(date +%s) - start )) s" > "$work/wall.txt"
"$py" benchmarks/gpu_summary.py "$work" | tee "$work/summary.txt"
pack
cp "$work/summary.txt" "$out/summary.txt"
