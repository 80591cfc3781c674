"""Shared fixtures: the ../shared folder (skipped with a reason when absent) and the slow switch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CMGAN_SHARED", ROOT.parent / "shared"))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    """slow: only with --runslow (make test has it)."""
    slow = config.getoption("--runslow") or os.environ.get("CMGAN_RUN_SLOW") == "1"
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow (make test does)")
    for item in items:
        if "slow" in item.keywords and not slow:
            item.add_marker(skip_slow)


# Modules whose tests share a module fixture that costs a minute (test_cluster's 2x2 submitit grid): on one worker,
# so it is built once.
ONE_WORKER = {"tests/test_cluster.py"}


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: ignored where xdist is not installed
def pytest_xdist_make_scheduler(config, log):
    """Under `pytest -n N` (make test): each test goes to whichever worker is free, but a notebook's cells go
    together, in order, to one worker, since they share one kernel. (xdist's own `loadgroup` cannot group them
    here: it renames items through a node attribute pytest 9 no longer has.)"""
    from xdist.scheduler import LoadScopeScheduling

    class NotebookScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::")[0]
            return path if path.endswith(".ipynb") or path in ONE_WORKER else nodeid

    return NotebookScheduling(config, log)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present (a user's fresh clone has no ../shared)")
    return SHARED


@pytest.fixture(scope="session")
def vb_samples(shared_dir) -> Path:
    """The 25 real Voice Bank + DEMAND test utterances: <dir>/clean/*.wav and <dir>/noisy/*.wav."""
    path = shared_dir / "data" / "voicebank_demand_samples"
    if not (path / "clean").is_dir():
        pytest.skip(f"{path}/clean not present")
    return path


@pytest.fixture(scope="session")
def reference_dir(shared_dir) -> Path:
    path = shared_dir / "data" / "reference"
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


# Axis labels a reader should never see: raw log/CSV column names (issue 13); any snake_case label is raw too.
# ("epoch" is plain English and allowed.)
RAW_COLUMN_NAMES = {
    "step", "val_pesq", "val_stoi", "val_loss", "skip_rate_cum", "disc_loss", "disc_skipped",
    "disc_skip_rate", "grad_norm_g", "grad_norm_d", "input_snr_db", "snr_db", "batch_size", "pesq_valid_frac",
    "pesq_mean", "speech_fraction", "value", "norm", "rate", "variant", "metric", "best_val_pesq", "crop_s",
    "cut_len", "count", "seed", "run",
}  # fmt: skip


def _check_figure(fig) -> None:
    """Every visible axes shows data, has readable axis labels (no raw column name) and the figure says what it
    compares (a suptitle or a title per axes); epoch axes have whole-number ticks."""
    import re

    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    assert visible, "a figure without axes"
    has_suptitle = fig._suptitle is not None and fig._suptitle.get_text().strip()
    for ax in visible:
        drawn = ax.lines or ax.collections or ax.patches or ax.images
        assert drawn, f"empty axes: {ax.get_title()!r}"
        assert has_suptitle or ax.get_title().strip(), "a figure whose axes say nothing of what is compared"
        for label in (ax.get_xlabel(), ax.get_ylabel()):
            assert label.strip().lower() not in RAW_COLUMN_NAMES, f"raw column name as axis label {label!r}"
            assert not re.search(r"\b[a-z]+_[a-z0-9_]+\b", label), f"raw column name in axis label {label!r}"
        if "epoch" in ax.get_xlabel():
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert all(float(t).is_integer() for t in ticks), f"fractional epoch ticks {ticks}"
    assert any(ax.get_xlabel().strip() for ax in visible), "no axes says what its x axis is"


@pytest.fixture
def check_figure():
    """The readability checks of issue 13 for a matplotlib Figure (shared by every report's tests)."""
    return _check_figure


def write_fake_run(
    root: Path,
    name: str,
    val_pesq,
    skipped,
    *,
    config: dict | None = None,
    early_stop_at=None,
    steps_per_epoch: int = 4,
    grad_norm_d=None,
    injected=None,
    disc_loss=None,
    skipped_disc_loss: float = float("nan"),
    finished: bool = True,
    step_columns: dict | None = None,
    epoch_columns: dict | None = None,
) -> Path:
    """A run folder with the trainer's logs (0-based epochs, as train.py writes them) and config.yaml, without
    training: report code and notebook 02 are then tested on numbers chosen to make a verdict go one way.
    `skipped_disc_loss`: what a skipped update logs (this trainer: NaN; the published code: 0.0).
    `step_columns` / `epoch_columns`: further (or replacing) log columns, e.g. the gradient share or the losses."""
    import numpy as np
    import pandas as pd
    import yaml

    run = Path(root) / name
    run.mkdir(parents=True, exist_ok=True)
    n_ep = len(val_pesq)
    n = n_ep * steps_per_epoch
    skipped = np.asarray(skipped if np.ndim(skipped) else [skipped] * n, dtype=int)
    assert skipped.size == n
    dl = np.where(skipped == 1, skipped_disc_loss, 0.3 if disc_loss is None else disc_loss)
    gd = np.where(skipped == 1, np.nan, 4.0 if grad_norm_d is None else grad_norm_d)
    step = pd.DataFrame({
        "epoch": np.repeat(np.arange(n_ep), steps_per_epoch), "step": np.arange(1, n + 1), "loss": 0.5,
        "disc_loss": dl, "disc_skipped": skipped, "pesq_valid_frac": 1.0, "pesq_mean": 2.0,
        "grad_norm_g": np.linspace(2.0, 1.0, n), "grad_norm_d": gd, "nonfinite": 0,
        "pesq_fail_silent_reference": 0, "pesq_fail_too_short": 0, "pesq_fail_estimate": 0, "pesq_fail_other": 0,
        "pesq_fail_injected": np.zeros(n, dtype=int) if injected is None else injected,
        "lr_g": 5e-4, "lr_d": 1e-3, "seconds": 0.1,
    })  # fmt: skip
    step = step.assign(**(step_columns or {}))
    step.to_csv(run / "training_step_log.csv", index=False)
    stop = np.zeros(n_ep, dtype=int)
    if early_stop_at is not None:
        stop[early_stop_at:] = 1
    epoch = pd.DataFrame({
        "epoch": np.arange(n_ep), "loss": 0.5, "val_loss": 0.4, "val_pesq": val_pesq, "val_stoi": 0.8,
        "val_files": 3, "disc_skip_rate": step.groupby("epoch").disc_skipped.mean().to_numpy(),
        "nonfinite_steps": 0, "best": 0, "patience_counter": 0, "early_stop": stop,
    })  # fmt: skip
    epoch = epoch.assign(**(epoch_columns or {}))
    epoch.to_csv(run / "training_epoch_log.csv", index=False)
    cfg = {"pesq_strategy": "skip", "pesq_fail_inject": 0.0, "grad_clip_norm": 0.0, "batch_size": 4, **(config or {})}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    if finished:
        (run / "done.json").write_text("{}")
    return run


@pytest.fixture
def fake_run():
    """write_fake_run: a run folder with logs and config.yaml, no checkpoint."""
    return write_fake_run
