"""TensorBoard curves of a run, written from the rows of its CSV logs: the CSVs stay the one source.

Training (with the `tb` extra, tensorboardX) writes every step and epoch row to event files in
RUN/tensorboard/ as it writes them to the CSVs; `cmgan tb-export RUN_ROOT` writes them for runs that exist.
tensorboardX because it writes event files with protobuf alone (about 3 MB installed);
`torch.utils.tensorboard` imports the `tensorboard` package (about 55 MB with grpcio and its data server),
which only the machine that shows the curves needs (`tb-view` extra, `tensorboard --logdir RUN_ROOT`).

Tags are `step/<column>` against the step log's `step` and `epoch/<column>` against the epoch log's `epoch`
(counted from 0, as in the CSV). A NaN cell (e.g. `disc_loss` on a skipped discriminator update) is no point.
On every start the event folder is rewritten from the CSVs as they stand (a resumed run's logs are repaired
first), so it never holds rows the CSVs dropped.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from cmgan_lib.training.runs import EPOCH_LOG, STEP_LOG, find_runs, read_log

TB_DIR = "tensorboard"
# CSV log -> (tag prefix, the column that is the x axis)
AXES: dict[str, tuple[str, str]] = {STEP_LOG: ("step", "step"), EPOCH_LOG: ("epoch", "epoch")}
INSTALL_HINT = "TensorBoard logging needs tensorboardX: pip install 'cmgan-study[tb]' (or pip install tensorboardX)"


def available() -> bool:
    """True when tensorboardX is importable (the `tb` extra)."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        return False
    return True


def _number(value: Any) -> float | None:
    """A cell as a float, or None for text, empty and NaN cells."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


class EventLog:
    """Event files of one run folder, fed the same row dicts as its CSV logs."""

    def __init__(self, logdir: Path, flush_secs: int = 10):
        from tensorboardX import SummaryWriter

        self.logdir = logdir
        self.writer = SummaryWriter(str(logdir), flush_secs=flush_secs)

    @classmethod
    def open(cls, run_dir: str | os.PathLike, logdir: str | os.PathLike | None = None) -> EventLog | None:
        """A fresh event folder (RUN/tensorboard by default) holding the CSVs' rows so far; None without
        tensorboardX, so training goes on with its CSVs alone."""
        if not available():
            return None
        run_dir = Path(run_dir)
        logdir = Path(logdir) if logdir is not None else run_dir / TB_DIR
        if logdir.is_dir():
            shutil.rmtree(logdir)
        log = cls(logdir)
        for name in AXES:  # regular files only: a log that is a device or a pipe is not read to its end
            if (run_dir / name).is_file():
                for row in read_log(run_dir / name).to_dict("records"):
                    log.write(name, row)
        log.writer.flush()
        return log

    def write(self, log_name: str, row: dict[str, Any]) -> None:
        """One CSV row as scalars; logs without curves (validation_dropped.csv, ...) are ignored."""
        if log_name not in AXES:
            return
        prefix, x_col = AXES[log_name]
        x = _number(row.get(x_col))
        if x is None:
            return
        for key, value in row.items():
            y = _number(value) if key != x_col else None
            if y is not None:
                self.writer.add_scalar(f"{prefix}/{key}", y, global_step=int(x))
        if log_name == EPOCH_LOG:
            self.writer.flush()  # an epoch is minutes apart: show it now

    def close(self) -> None:
        self.writer.close()


def export_runs(run_root: str | os.PathLike, out: str | os.PathLike | None = None) -> list[Path]:
    """Write event files for every run under `run_root` (or the run folder itself) from its CSV logs: into
    RUN/tensorboard/, or OUT/<run>/ when `out` is given (e.g. for committed reports). Returns the folders."""
    if not available():
        raise ImportError(INSTALL_HINT)
    root = Path(run_root)
    runs = [root] if (root / EPOCH_LOG).is_file() else find_runs(root)
    if not runs:
        raise FileNotFoundError(f"{root}: no run folders (folders with {EPOCH_LOG})")
    written = []
    for run in runs:
        log = EventLog.open(run, None if out is None else Path(out) / run.name)
        assert log is not None  # available() was checked
        log.close()
        written.append(log.logdir)
    return written


def read_scalars(logdir: str | os.PathLike) -> dict[str, pd.Series]:
    """Every scalar tag of an event folder as a Series indexed by step (tensorboard's own reader; `tb-view`)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {
        tag: pd.Series([e.value for e in acc.Scalars(tag)], index=[e.step for e in acc.Scalars(tag)], name=tag)
        for tag in acc.Tags()["scalars"]
    }
