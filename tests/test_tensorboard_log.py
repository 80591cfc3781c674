"""TensorBoard: training writes the CSV logs' rows as event files, live; `tb-export` writes them for existing
runs; without the extra nothing is written and training goes on."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from cmgan_lib.cli import main as cli_main
from cmgan_lib.training import tensorboard_log
from cmgan_lib.training.runs import EPOCH_LOG, STEP_LOG
from cmgan_lib.training.tensorboard_log import AXES, TB_DIR

ROOT = Path(__file__).resolve().parents[1]
REPORT_RUNS = ROOT / "reports" / "2026-11-25_injection_cpu" / "runs"  # 20 steps a run: quick


def needs_extra():
    pytest.importorskip("tensorboardX", reason="TensorBoard logging needs the tb extra (pip install '.[tb]')")
    pytest.importorskip("tensorboard", reason="reading events back needs the tb-view extra (pip install '.[tb-view]')")


def assert_events_hold_the_csvs(run: Path, logdir: Path) -> int:
    """Every finite cell of both CSV logs is a point at its step/epoch, and nothing else is; returns points."""
    scalars = tensorboard_log.read_scalars(logdir)
    points = 0
    expected_tags = set()
    for log, (prefix, x_col) in AXES.items():
        table = pd.read_csv(run / log)
        for col in table.columns:
            if col == x_col:
                continue
            values = pd.to_numeric(table[col], errors="coerce")
            keep = np.isfinite(values)
            if not keep.any():
                continue
            tag = f"{prefix}/{col}"
            expected_tags.add(tag)
            got = scalars[tag]
            assert list(got.index) == list(table[x_col][keep].astype(int)), tag
            np.testing.assert_allclose(got.to_numpy(), values[keep].to_numpy(), rtol=1e-6, atol=1e-30, err_msg=tag)
            points += len(got)
    assert set(scalars) == expected_tags
    return points


def test_tb_export_of_a_committed_report_holds_its_csv_values(tmp_path, capsys):
    needs_extra()
    run = REPORT_RUNS / "official_s0"
    assert cli_main(["tb-export", str(run), "--out", str(tmp_path)]) == 0
    assert "wrote TensorBoard events of 1 run(s)" in capsys.readouterr().out
    assert not (run / TB_DIR).exists()  # --out leaves the committed report as it is
    points = assert_events_hold_the_csvs(run, tmp_path / run.name)
    assert points > 500
    val = tensorboard_log.read_scalars(tmp_path / run.name)["epoch/val_pesq"]
    assert val.iloc[-1] == pytest.approx(pd.read_csv(run / EPOCH_LOG).val_pesq.iloc[-1], rel=1e-6)


def test_tb_export_of_a_run_root_writes_every_run_in_place(tmp_path):
    needs_extra()
    root = tmp_path / "runs"
    for name in ("official_s0", "masked_p186_s0"):
        (root / name).mkdir(parents=True)
        for log in (STEP_LOG, EPOCH_LOG):
            (root / name / log).write_text((REPORT_RUNS / name / log).read_text())
    written = tensorboard_log.export_runs(root)
    assert sorted(p.parent.name for p in written) == ["masked_p186_s0", "official_s0"]
    for name in ("official_s0", "masked_p186_s0"):
        assert_events_hold_the_csvs(root / name, root / name / TB_DIR)
    tensorboard_log.export_runs(root)  # again: rewritten from the CSVs, not appended
    assert len(list((root / "official_s0" / TB_DIR).glob("events.out.tfevents.*"))) == 1


def test_the_trainers_log_hook_writes_each_row_to_csv_and_events_live(tmp_path):
    """Trainer._log, the one place training writes a CSV row, also writes it as events, flushed per epoch row:
    a TensorBoard reading the folder sees each epoch as it ends. Rows come from a committed run's logs."""
    needs_extra()
    from cmgan_lib.training.runs import LOGS, CsvLog
    from cmgan_lib.training.train import Trainer

    src = ROOT / "reports" / "2026-12-01_collapse_cpu" / "runs" / "official_p56_s0"  # 56% of D updates skipped
    run = tmp_path / "run"
    run.mkdir()
    trainer = SimpleNamespace(logs={name: CsvLog(run / name, cols) for name, cols in LOGS.items()})
    trainer.events = tensorboard_log.EventLog.open(run)
    steps, epochs = pd.read_csv(src / STEP_LOG), pd.read_csv(src / EPOCH_LOG)
    for epoch in range(3):
        for row in steps[steps.epoch == epoch].to_dict("records"):
            Trainer._log(trainer, STEP_LOG, row)
        Trainer._log(trainer, EPOCH_LOG, epochs[epochs.epoch == epoch].to_dict("records")[0])
        live = tensorboard_log.read_scalars(run / TB_DIR)["epoch/val_pesq"]
        assert list(live.index) == list(range(epoch + 1))  # on disk before the writer is closed
    trainer.events.close()
    for log in trainer.logs.values():
        log.close()
    assert len(pd.read_csv(run / EPOCH_LOG)) == 3
    assert_events_hold_the_csvs(run, run / TB_DIR)
    skipped = pd.read_csv(run / STEP_LOG).disc_loss.isna()
    assert skipped.any()  # skipped discriminator updates: those steps have no disc_loss point
    disc = tensorboard_log.read_scalars(run / TB_DIR)["step/disc_loss"]
    assert len(disc) == (~skipped).sum()


def test_a_resumed_run_rewrites_its_events_from_the_repaired_csvs(tmp_path):
    """EventLog.open replays the CSVs as they stand, so events of rows a resume dropped do not survive."""
    needs_extra()
    run = tmp_path / "run"
    run.mkdir()
    src = REPORT_RUNS / "official_s0"
    epochs = pd.read_csv(src / EPOCH_LOG)
    epochs.to_csv(run / EPOCH_LOG, index=False)
    tensorboard_log.EventLog.open(run).close()
    stale = next((run / TB_DIR).glob("events.out.tfevents.*")).rename(run / TB_DIR / "events.out.tfevents.1.old")
    epochs.head(2).to_csv(run / EPOCH_LOG, index=False)  # what repair_csv leaves after a resume at epoch 1
    tensorboard_log.EventLog.open(run).close()
    assert list(tensorboard_log.read_scalars(run / TB_DIR)["epoch/val_pesq"].index) == [0, 1]
    assert not stale.exists()  # the old events are gone, not merely shadowed by newer steps


def test_without_the_extra_training_writes_csvs_only(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tensorboard_log, "available", lambda: False)
    assert tensorboard_log.EventLog.open(tmp_path) is None
    assert not (tmp_path / TB_DIR).exists()
    assert cli_main(["tb-export", str(tmp_path)]) == 2
    assert "pip install 'cmgan-study[tb]'" in capsys.readouterr().err


def test_cells_that_are_not_numbers_are_no_points():
    assert tensorboard_log._number("1.5") == 1.5 and tensorboard_log._number(True) == 1.0
    for cell in (math.nan, "", None, "p232_001", float("inf")):
        assert tensorboard_log._number(cell) is None
