#!/usr/bin/env bash
# Issue 33's shared report from what scripts/run_confirmatory.sh trained: notebooks 01 (the audit, its claims
# table from this grid), 02 and 03 on the main grid (`cmgan ablate --no-train --audit`: no run is trained again),
# notebook 04 (the plan's analysis, the replications included, its bottom line), then `cmgan share-report` into
# DEST. Notebook 04 says INTERIM until every planned seed has finished, so this can run at any time.
#   bash scripts/confirmatory_report.sh                       # DEST=reports/<today>_confirmatory_cpu
#   DEST=reports/x NOTE=findings.md WALL_MINUTES=1234 bash scripts/confirmatory_report.sh
# DEVICE names the machine in the README; NOTE (markdown) is appended to it; OVERWRITE=1 writes into a DEST that
# holds a report (its README is rewritten). NOTEBOOKS=04: notebook 04 again only (the replications moved on; the
# main grid's notebooks 01-03 do not change), with 01-03 as they are in OUT, or copied back from DEST where OUT has
# none (a fresh checkout keeps no run folder, and notebook 03 needs the checkpoints the grid's session had).
{  # read whole before it runs: editing this file under a running build changes nothing
set -eu
cd "$(dirname "$0")/.."
CMGAN=${CMGAN:-.venv/bin/cmgan}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/CONFIRMATORY_CPU}
DEST=${DEST:-reports/$(date -u +%F)_confirmatory_cpu}
DEVICE=${DEVICE:-"$(nproc)-core $(uname -m) CPU, no GPU, torch $($PY -c 'import torch; print(torch.__version__)')"}
start=$(date +%s)
if [ "${NOTEBOOKS:-all}" = 04 ]; then
  [ -d "$DEST" ] || { echo "NOTEBOOKS=04: no report in $DEST to take notebooks 01-03 from" >&2; exit 1; }
  mkdir -p "$OUT"
  for f in "$DEST"/*; do  # what the main grid's notebooks wrote, back where share-report reads it
    name=$(basename "$f")
    case "$name" in *.md|04_confirmatory.*|analysis|runs) continue ;; esac  # the README and notes stay in DEST
    [ -e "$OUT/$name" ] || { cp -r "$f" "$OUT/$name" && echo "  $OUT/$name: from $DEST"; }
  done
else
  $CMGAN ablate --grid configs/confirmatory_cpu.yaml --out "$OUT" --no-train --audit
fi
$PY - "$OUT" <<'PY'
import sys
from cmgan_lib.study import execute_notebook
out = sys.argv[1]
print("  notebook 04_confirmatory")
execute_notebook("04_confirmatory", out, dict(run_root=f"{out}/runs", audit_claims=f"{out}/audit/claims.csv",
                                              out_dir=f"{out}/analysis"))
PY
args=(--command "bash scripts/run_confirmatory.sh; bash scripts/confirmatory_report.sh" --device "$DEVICE")
[ -n "${WALL_MINUTES:-}" ] && args+=(--wall-minutes "$WALL_MINUTES")
[ -n "${NOTE:-}" ] && args+=(--note "$NOTE")
[ "${OVERWRITE:-0}" = 1 ] && args+=(--overwrite)
$CMGAN share-report "$OUT" "$DEST" "${args[@]}"
echo "report: $DEST (reports built in $(( $(date +%s) - start )) s)"
exit
}
