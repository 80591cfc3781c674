#!/usr/bin/env bash
# Issue 33's runs in the order docs/analysis_plan.md fixes: the main grid, then the replications. Each grid resumes
# where it stopped (finished runs are kept, interrupted ones continue from last.pt), so run this again after any
# stop. Hours of CPU: start it in the background and keep the log,
#   setsid nohup bash scripts/run_confirmatory.sh > runs/confirmatory.log 2>&1 < /dev/null &
# CPU_RUNS runs share the cores (one thread each); OUT is where the grids' folders go. TIME_LIMIT (seconds from
# now): no run starts that should end after it (judged by the longest run finished so far), since a session's end
# kills the grid and a fresh checkout keeps no run folder. RESTORE: a shared report's copies of finished main-grid
# runs (logs and config.yaml, no checkpoint), put back with a done.json so that they are not trained again.
set -u
cd "$(dirname "$0")/.."
CMGAN=${CMGAN:-.venv/bin/cmgan}
OUT=${OUT:-runs}
CPU_RUNS=${CPU_RUNS:-2}
RESTORE=${RESTORE:-reports/2026-12-07_confirmatory_cpu_interim/runs}
end=$(( $(date +%s) + ${TIME_LIMIT:-10000000} ))
if [ -d "$RESTORE" ]; then
  mkdir -p "$OUT/CONFIRMATORY_CPU/runs"
  for d in "$RESTORE"/*/; do
    run=$(basename "$d"); dest=$OUT/CONFIRMATORY_CPU/runs/$run
    [ -e "$dest" ] && continue
    cp -r "$d" "$dest" && printf '{"seconds": null, "restored_from": "%s"}\n' "$d" > "$dest/done.json"
    echo "=== restored $run from $d"
  done
fi
grids="confirmatory_cpu:CONFIRMATORY_CPU replication_syn1_cpu:REPLICATION_SYN1_CPU replication_syn2_cpu:REPLICATION_SYN2_CPU"
grids="$grids replication_vb_cpu:REPLICATION_VB_CPU replication_width32_cpu:REPLICATION_W32_CPU"
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
  $CMGAN ablate --grid "$grid" --out "$OUT/${g##*:}" --cpu-runs "$CPU_RUNS" --no-notebooks --time-limit "$left"
  echo "=== $(date -u +%FT%TZ) end $grid (exit $?)"
done
