#!/usr/bin/env bash
# Issue 33's runs in the order docs/analysis_plan.md fixes: the main grid, then the replications. Each grid resumes
# where it stopped (finished runs are kept, interrupted ones continue from last.pt), so run this again after any
# stop. Hours of CPU: start it in the background and keep the log,
#   setsid nohup bash scripts/run_confirmatory.sh > runs/confirmatory.log 2>&1 < /dev/null &
# CPU_RUNS runs share the cores (one thread each); OUT is where the grids' folders go. TIME_LIMIT (seconds from
# now): no run starts that should end after it (judged by the longest run finished so far, in any grid), since a session's end
# kills the grid and a fresh checkout keeps no run folder; a grid it leaves unfinished keeps the later ones waiting
# (the plan's order). So finished runs are kept in the INTERIM report (logs,
# config.yaml and test/metrics_per_file.csv where the grid scores its runs; never a checkpoint: the main grid's in runs/, a replication's in replications/<its OUT name>/):
#   bash scripts/run_confirmatory.sh save    # copy the runs finished since into INTERIM, then commit it
# and every start first puts them back with a done.json naming their source, so that none is trained again
# (RESTORE=0: train them again; their logs should come out the same apart from `seconds`: same seed, same math).
{  # read whole before it runs: editing this file (a commit, a checkout) under a running grid changes nothing
set -u
cd "$(dirname "$0")/.."
CMGAN=${CMGAN:-.venv/bin/cmgan}
OUT=${OUT:-runs}
CPU_RUNS=${CPU_RUNS:-2}
INTERIM=${INTERIM:-reports/2026-12-07_confirmatory_cpu_interim}
end=$(( $(date +%s) + ${TIME_LIMIT:-10000000} ))
grids="confirmatory_cpu:CONFIRMATORY_CPU replication_syn1_cpu:REPLICATION_SYN1_CPU replication_syn2_cpu:REPLICATION_SYN2_CPU"
grids="$grids replication_vb_cpu:REPLICATION_VB_CPU replication_width32_cpu:REPLICATION_W32_CPU"
kept() { if [ "$1" = CONFIRMATORY_CPU ]; then echo "$INTERIM/runs"; else echo "$INTERIM/replications/$1"; fi; }

if [ "${1:-}" = save ]; then
  for g in $grids; do
    name=${g##*:}
    for d in "$OUT/$name"/runs/*/; do
      [ -f "$d/done.json" ] || continue
      grep -q restored_from "$d/done.json" && continue  # came from INTERIM
      dest=$(kept "$name")/$(basename "$d")
      [ -e "$dest" ] && continue
      mkdir -p "$dest" && cp "$d"/config.yaml "$d"/training_epoch_log.csv "$d"/training_step_log.csv "$dest"/ || exit 1
      if [ -f "$d/test/metrics_per_file.csv" ]; then  # its test scores (grids with test_after_training)
        mkdir -p "$dest/test" && cp "$d/test/metrics_per_file.csv" "$dest/test/" || exit 1
      fi
      echo "saved $dest"
    done
  done
  exit 0
fi

if [ "${RESTORE:-1}" != 0 ]; then
  for g in $grids; do
    name=${g##*:}
    src=$(kept "$name")
    [ -d "$src" ] || continue
    mkdir -p "$OUT/$name/runs"
    for d in "$src"/*/; do
      run=$(basename "$d"); dest=$OUT/$name/runs/$run
      [ -e "$dest" ] && continue
      cp -r "$d" "$dest" && printf '{"seconds": null, "restored_from": "%s"}\n' "$d" > "$dest/done.json"
      echo "=== restored $name/$run from $d"
    done
  done
fi
for g in $grids; do
  grid=configs/${g%%:*}.yaml
  if [ ! -f "$grid" ]; then echo "=== $grid: not in this checkout, left out"; continue; fi
  if [ "${g%%:*}" = replication_vb_cpu ]; then  # the real-speech corpora of the plan's rule (section 2, R-vb)
    src=${VB_SOURCE:-../shared/data/voicebank_demand_samples}
    if [ ! -d "$src" ]; then echo "=== $grid: no $src (the 25 real pairs), left out"; continue; fi
    for arm in speech lead; do
      [ -d runs/vb_regime/$arm ] || $CMGAN make-vb-regime --source "$src" --out runs/vb_regime/$arm --arm $arm || exit 1
    done
  fi
  code=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- cmgan_lib configs 2>/dev/null || echo "+changes")
  echo "=== $(date -u +%FT%TZ) start $grid (code $code)"  # the commit the runs of this start train with
  left=$(( end - $(date +%s) ))
  if [ "$left" -le 0 ]; then echo "=== $grid: TIME_LIMIT reached, left out"; continue; fi
  longest=0  # the longest run finished here so far, any grid: a new grid's first runs are judged by it
  for f in "$OUT"/*/runs/*/done.json; do
    [ -f "$f" ] || continue
    s=$(grep -o '"[a-z_]*seconds": [0-9.]*' "$f" | awk '{ t += $2 } END { printf "%d", t }')  # + test_seconds
    [ "$s" -gt "$longest" ] && longest=$s
  done
  $CMGAN ablate --grid "$grid" --out "$OUT/${g##*:}" --cpu-runs "$CPU_RUNS" --no-notebooks --time-limit "$left" \
    --run-seconds "$longest"
  echo "=== $(date -u +%FT%TZ) end $grid (exit $?)"
  if grep -q "not started" "$OUT/${g##*:}/summary.csv" 2>/dev/null; then  # the plan's order: no later grid first
    echo "=== $grid: runs left for the next start; the later grids wait"; break
  fi
done
exit
}
