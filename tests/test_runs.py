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
