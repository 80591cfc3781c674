"""Tests of cmgan_lib.training.runs: run names, finding runs (finished or not), checkpoints, run identity."""

from __future__ import annotations

import pytest

from cmgan_lib.training import runs
from cmgan_lib.training.runs import parse_run_name


def test_parse_run_name_and_find_runs(tmp_path):
    assert parse_run_name("seed_fixes_s12") == ("seed_fixes", 12)
    assert parse_run_name("official") == ("official", None)
    assert parse_run_name(runs.run_name("seed_fixes", 12)) == ("seed_fixes", 12)
    done = tmp_path / "runs" / "official_s0"
    done.mkdir(parents=True)
    (done / "done.json").write_text("{}")
    (done / "best.pt").write_bytes(b"")
    unfinished = tmp_path / "runs" / "masked_s0"
    unfinished.mkdir()
    (unfinished / "last.pt").write_bytes(b"")
    no_ckpt = tmp_path / "runs" / "failed_s0"
    no_ckpt.mkdir()
    (no_ckpt / "done.json").write_text("{}")
    assert runs.find_finished_runs(tmp_path / "runs") == [done]
    assert runs.find_finished_runs(tmp_path / "nothing") == []
    assert runs.resolve_checkpoint(unfinished) == unfinished / "last.pt"
    assert runs.run_identity(done / "best.pt") == ("official_s0", "official", 0)
    with pytest.raises(FileNotFoundError):
        runs.resolve_checkpoint(no_ckpt)


def test_find_finished_runs_never_merges_two_grids(tmp_path):
    """Two `cmgan ablate --out` folders under one folder hold runs of the same name: neither is taken from the
    parent, and each grid folder (or its runs/) gives only its own."""
    for grid in ("grid_a", "grid_b"):
        (tmp_path / grid).mkdir()
        (tmp_path / grid / "grid.yaml").write_text("seeds: [0]\n")
        run = tmp_path / grid / "runs" / "official_s0"
        run.mkdir(parents=True)
        (run / "done.json").write_text("{}")
        (run / "best.pt").write_bytes(b"")
    assert runs.find_finished_runs(tmp_path) == []
    a = tmp_path / "grid_a" / "runs" / "official_s0"
    assert runs.find_finished_runs(tmp_path / "grid_a") == [a]
    assert runs.find_finished_runs(tmp_path / "grid_a" / "runs") == [a]


def test_reading_runs_and_the_reports_import_no_torch():
    """The reports (notebooks 02-04, `cmgan ablate --status`) read run folders and never touch a tensor: they must
    not pay torch's import (about 2.5 s of CPU in every kernel and command on this machine), which runs.py did
    when it imported torch (and the log columns through pesq_labels) at the top."""
    import subprocess
    import sys

    modules = ["cmgan_lib.training.runs", "cmgan_lib.reports.report_02_training", "cmgan_lib.reports.report_02_figures",
               "cmgan_lib.reports.report_03_evaluate", "cmgan_lib.reports.report_confirmatory", "cmgan_lib.study",
               "cmgan_lib.cluster", "cmgan_lib.analysis.confirmatory"]  # fmt: skip
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
