"""scripts/confirmatory_report.sh's plumbing, with `cmgan` and Python replaced by stubs that record their calls:
the notebooks are rendered elsewhere (test_notebook_reports, test_study); here, what the script asks for."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "confirmatory_report.sh"


def _run(tmp_path: Path, fail: str = "", **env: str) -> tuple[int, list[str]]:
    log = tmp_path / "calls.txt"
    stub = tmp_path / "stub"
    stub.write_text(f'#!/bin/sh\necho "$(basename "$0") $*" >> {log}\n[ "$1" = "-" ] && cat >> {log}\n'
                    f'[ -n "{fail}" ] && [ "$1" = "{fail}" ] && exit 3\nexit 0\n')  # fmt: skip
    stub.chmod(0o755)
    (tmp_path / "cmgan").symlink_to(stub)
    (tmp_path / "python").symlink_to(stub)
    full = {**os.environ, "CMGAN": str(tmp_path / "cmgan"), "PY": str(tmp_path / "python"), "OUT": "runs/X",
            "DEST": "reports/d", "DEVICE": "2-core CPU", **env}  # fmt: skip
    proc = subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True)
    return proc.returncode, log.read_text().splitlines() if log.is_file() else []


def test_it_renders_01_to_03_without_training_then_04_then_shares_with_the_options_given(tmp_path):
    rc, calls = _run(tmp_path, WALL_MINUTES="1234", NOTE="findings.md", OVERWRITE="1")
    assert rc == 0, calls
    assert calls[0] == "cmgan ablate --grid configs/confirmatory_cpu.yaml --out runs/X --no-train --audit"
    assert calls[1] == "python - runs/X" and any('execute_notebook("04_confirmatory"' in c for c in calls)
    share = calls[-1]
    assert share.startswith("cmgan share-report runs/X reports/d --command bash scripts/run_confirmatory.sh;")
    assert share.endswith("--device 2-core CPU --wall-minutes 1234 --note findings.md --overwrite")


def test_options_not_given_are_left_out_and_a_failing_step_stops_it(tmp_path):
    rc, calls = _run(tmp_path)
    assert rc == 0 and calls[-1].endswith("--device 2-core CPU")
    again = tmp_path / "again"
    again.mkdir()
    rc, calls = _run(again, fail="ablate")
    assert rc == 3 and len(calls) == 1 and calls[0].startswith("cmgan ablate")  # nothing shared after a failure


def test_notebooks_04_renders_04_only_with_01_to_03_taken_back_from_the_report(tmp_path):
    """NOTEBOOKS=04 (the replications moved on): no `ablate`; what OUT lacks of the main grid's notebooks comes back
    from DEST (a fresh checkout), what it has stays, and the report's README, runs and notebook 04 are not copied."""
    dest, out = tmp_path / "report", tmp_path / "out"
    (dest / "audit").mkdir(parents=True)
    (dest / "audit" / "claims.csv").write_text("claim\n")
    (dest / "runs" / "official_s100").mkdir(parents=True)
    for name in ("03_evaluate.html", "summary.csv", "README.md", "04_confirmatory.html"):
        (dest / name).write_text(f"report's {name}")
    out.mkdir()
    (out / "summary.csv").write_text("this session's")
    rc, calls = _run(tmp_path, NOTEBOOKS="04", DEST=str(dest), OUT=str(out))
    assert rc == 0, calls
    assert not any(c.startswith("cmgan ablate") for c in calls) and calls[0] == f"python - {out}"
    assert (out / "03_evaluate.html").read_text() == "report's 03_evaluate.html"
    assert (out / "audit" / "claims.csv").is_file() and (out / "summary.csv").read_text() == "this session's"
    assert not any((out / n).exists() for n in ("README.md", "04_confirmatory.html", "runs"))
    assert calls[-1].startswith(f"cmgan share-report {out} {dest}")
    (tmp_path / "none").mkdir()
    rc, calls = _run(tmp_path / "none", NOTEBOOKS="04", DEST=str(tmp_path / "no_report"), OUT=str(out))
    assert rc == 1 and calls == []  # no report to take 01-03 from: nothing runs
