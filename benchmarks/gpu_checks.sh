#!/usr/bin/env bash
# Issue 12's GPU checks, for a lent GPU machine (../shared/gpu/README.md). Here, first:
#   bash ../shared/gpu/prepare.sh          # copies wheels, installer and shared data into .gpu/ (git-ignored)
# then one device call per check, carrying [".gpu"] (each call starts on a bare machine, so each sets up):
#   bash benchmarks/gpu_checks.sh bench      # published step vs ours, fp32 / tf32 / bf16, 30 steps each (~3 min)
#   bash benchmarks/gpu_checks.sh tests      # the whole suite on CUDA, slow tests included
#   bash benchmarks/gpu_checks.sh precision  # bf16 vs fp32, 3 seeds x 300 steps (configs/precision_gpu.yaml)
# Everything is written under $OUT (the device tool's return folder) or runs/gpu_checks. `precision` brings back
# the run logs and summary.csv (no checkpoints); notebook 02 renders the bf16 - fp32 verdict from them here:
#   papermill notebooks/02_train_baseline_vs_fixed.ipynb runs/precision_02.ipynb -p run_root R/PRECISION_GPU/runs \
#     -p out_dir R/PRECISION_GPU -y "comparisons: [[bf16, fp32]]"
set -euo pipefail
bash .gpu/setup-on-device.sh
export PYTHONPATH="/tmp/site:$PWD" CMGAN_SHARED="$PWD/.gpu/shared" PYTHONUNBUFFERED=1
out="${OUT:-runs/gpu_checks}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/device.txt"
case "${1:-}" in
  bench)
    python3 benchmarks/bench_train_step.py --published --steps 30 2>&1 | tee "$out/bench_published.txt" ;;
  tests)
    python3 -m pytest -q --runslow -p no:cacheprovider tests 2>&1 | tr '\r' '\n' | tee "$out/tests.txt" | tail -40 ;;
  precision)
    start=$(date +%s)
    python3 -m cmgan_lib.cli ablate --grid configs/precision_gpu.yaml --out "$out/PRECISION_GPU" \
      --runs-per-gpu 3 --no-notebooks 2>&1 | tr '\r' '\n' | grep -v '%|' | tail -20
    echo "wall $(( $(date +%s) - start )) s" | tee "$out/precision_wall.txt"
    find "$out/PRECISION_GPU" -name '*.pt' -delete ;;  # logs and configs come back, checkpoints do not
  *)
    echo "usage: bash benchmarks/gpu_checks.sh bench|tests|precision" >&2; exit 2 ;;
esac
