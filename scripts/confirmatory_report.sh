#!/usr/bin/env bash
# Issue 33's shared report from what scripts/run_confirmatory.sh trained: notebooks 01 (the audit, its claims
# table from this grid), 02 and 03 on the main grid (`cmgan ablate --no-train --audit`: no run is trained again),
# notebook 04 (the plan's analysis, the replications included, its bottom line), then `cmgan share-report` into
# DEST. Notebook 04 says INTERIM until every planned seed has finished, so this can run at any time.
#   bash scripts/confirmatory_report.sh                       # DEST=reports/<today>_confirmatory_cpu
#   DEST=reports/x NOTE=findings.md WALL_MINUTES=1234 bash scripts/confirmatory_report.sh
# DEVICE names the machine in the README; NOTE (markdown) is appended to it; OVERWRITE=1 writes into a DEST that
# holds a report (its README is rewritten).
set -eu
cd "$(dirname "$0")/.."
CMGAN=${CMGAN:-.venv/bin/cmgan}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/CONFIRMATORY_CPU}
DEST=${DEST:-reports/$(date -u +%F)_confirmatory_cpu}
DEVICE=${DEVICE:-"$(nproc)-core $(uname -m) CPU, no GPU, torch $($PY -c 'import torch; print(torch.__version__)')"}
start=$(date +%s)
$CMGAN ablate --grid configs/confirmatory_cpu.yaml --out "$OUT" --no-train --audit
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
