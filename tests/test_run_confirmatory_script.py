"""scripts/run_confirmatory.sh's plumbing with `cmgan` replaced by a stub that records its calls: a fresh checkout
gets the shared report's finished runs back (so they are not trained again) and TIME_LIMIT reaches every grid."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "run_confirmatory.sh"


def _run(tmp_path: Path, **env: str) -> tuple[int, list[str], str]:
    log = tmp_path / "calls.txt"
    stub = tmp_path / "cmgan"
    stub.write_text(f'#!/bin/sh\necho "cmgan $*" >> {log}\nexit 0\n')
    stub.chmod(0o755)
    full = {**os.environ, "CMGAN": str(stub), "OUT": str(tmp_path / "out"), "VB_SOURCE": str(tmp_path / "none"),
            **env}  # fmt: skip
    proc = subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True)
    return proc.returncode, log.read_text().splitlines() if log.is_file() else [], proc.stdout


def test_shared_runs_come_back_with_done_json_and_a_kept_run_is_not_overwritten(tmp_path):
    shared = tmp_path / "shared"
    for run in ("official_s100", "no_disc_s100"):
        (shared / run).mkdir(parents=True)
        (shared / run / "training_epoch_log.csv").write_text(f"epoch\n0\n# {run}\n")
    kept = tmp_path / "out" / "CONFIRMATORY_CPU" / "runs" / "no_disc_s100"
    kept.mkdir(parents=True)
    (kept / "last.pt").write_text("a live run's checkpoint")
    rc, calls, out = _run(tmp_path, RESTORE=str(shared))
    assert rc == 0, out
    back = tmp_path / "out" / "CONFIRMATORY_CPU" / "runs" / "official_s100"
    assert (back / "training_epoch_log.csv").read_text().endswith("# official_s100\n")
    assert json.loads((back / "done.json").read_text())["restored_from"].startswith(str(shared))
    assert not (kept / "done.json").exists() and not (kept / "training_epoch_log.csv").exists()
    assert "restored official_s100" in out and "restored no_disc_s100" not in out
    assert calls and calls[0].startswith("cmgan ablate --grid configs/confirmatory_cpu.yaml")


def test_time_limit_is_passed_on_and_once_spent_no_grid_starts(tmp_path):
    rc, calls, _ = _run(tmp_path, RESTORE=str(tmp_path / "none"), TIME_LIMIT="5000")
    ablate = [c for c in calls if c.startswith("cmgan ablate")]
    assert rc == 0 and len(ablate) >= 4  # the main grid and the synthetic and width replications
    limits = [float(c.split("--time-limit ")[1]) for c in ablate]
    assert all(4900 < t <= 5000 for t in limits), limits
    rc, calls, out = _run(tmp_path, RESTORE="", TIME_LIMIT="0")
    assert rc == 0 and len(calls) == len(ablate)  # nothing new was called
    assert "TIME_LIMIT reached, left out" in out
