"""The run-folder contract: what a run folder holds and how the study, the trainer's readers and the three
notebooks find and read it, in one place (issue 22). A run folder is `<variant>_s<seed>/` with config.yaml,
training_epoch_log.csv, training_step_log.csv, checkpoints (best.pt, last.pt, epoch_NNN.pt) and done.json once
it finished.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cmgan_lib import SAMPLE_RATE
from cmgan_lib.paths import run_config

# ---- reading: finding runs and their logs

TINY_CONFIG = "configs/tiny_cpu.yaml"  # the config a notebook falls back on when it finds no runs
EPOCH_LOG = "training_epoch_log.csv"
STEP_LOG = "training_step_log.csv"
RUN_NAME = re.compile(r"^(?P<variant>.+)_s(?P<seed>\d+)$")


def run_name(variant: str, seed: int) -> str:
    """The folder name of one seed of a variant (`parse_run_name` reads it back)."""
    return f"{variant}_s{seed}"


def parse_run_name(name: str) -> tuple[str, int | None]:
    """`masked_s1` -> ("masked", 1); any other folder name is its own variant with no seed."""
    m = RUN_NAME.match(name)
    return (m["variant"], int(m["seed"])) if m else (name, None)


def find_runs(run_root: str | os.PathLike) -> list[Path]:
    """Run folders (those with a training_epoch_log.csv) directly under `run_root`, sorted."""
    root = Path(run_root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / EPOCH_LOG).is_file())


def run_dirs(run_root_or_dirs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The runs under a root (`find_runs`), or the given run folders as they are."""
    if isinstance(run_root_or_dirs, str | os.PathLike):
        return find_runs(run_root_or_dirs)
    return [Path(d) for d in run_root_or_dirs]


def read_log(path: Path) -> pd.DataFrame:
    """A log CSV; missing or still empty (the trainer has not written its header yet) reads as no rows."""
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


def load_runs(run_root_or_dirs: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(epoch log, step log) of every run, each row tagged with run, variant and seed; epochs from 1."""
    epochs, steps = [], []
    for d in run_dirs(run_root_or_dirs):
        variant, seed = parse_run_name(d.name)
        tag = dict(run=d.name, variant=variant, seed=seed)
        e = read_log(d / EPOCH_LOG)
        if not len(e):  # a run that has not finished its first epoch yet
            continue
        epochs.append(e.assign(epoch=e.epoch + 1, **tag))
        s = read_log(d / STEP_LOG)
        if len(s):
            steps.append(s.assign(epoch=s.epoch + 1, **tag))
    empty = pd.DataFrame(columns=["run", "variant", "seed", "epoch"])
    return (pd.concat(epochs, ignore_index=True) if epochs else empty,
            pd.concat(steps, ignore_index=True) if steps else empty)  # fmt: skip


def find_finished_runs(run_root: str | os.PathLike) -> list[Path]:
    """Finished runs (done.json and a checkpoint) directly under `run_root`, or under its runs/ when `run_root`
    is a `cmgan ablate --out` folder (grid.yaml). Never deeper: two grids under one folder would merge runs of
    the same name."""
    root = Path(run_root)
    if (root / "grid.yaml").is_file() and (root / "runs").is_dir():
        root = root / "runs"
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if (d / "done.json").is_file() and resolve_checkpoint(d, strict=False))


def resolve_checkpoint(path: str | os.PathLike, strict: bool = True) -> Path | None:
    """A checkpoint file itself, or a run folder's best.pt (else last.pt)."""
    path = Path(path)
    if path.is_file():
        return path
    for name in ("best.pt", "last.pt"):
        if (path / name).is_file():
            return path / name
    if strict:
        raise FileNotFoundError(f"{path}: neither a checkpoint nor a run folder with best.pt/last.pt")
    return None


def run_identity(path: str | os.PathLike) -> tuple[str, str, int | None]:
    """(run name, variant, seed) of a run folder or of a checkpoint inside one."""
    path = Path(path)
    run = path.parent.name if path.is_file() else path.name
    return (run, *parse_run_name(run))


def step_logs(train_log: str | os.PathLike | Sequence[str | os.PathLike]) -> list[tuple[str, pd.DataFrame]]:
    """(run name, step log) of run folders, a folder of them, or training_step_log.csv files, as given."""
    paths = [train_log] if isinstance(train_log, str | os.PathLike) else list(train_log)
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and not (p / STEP_LOG).exists():  # a folder of run folders
            found += sorted(p.glob(f"*/{STEP_LOG}"))
        else:
            found.append(p / STEP_LOG if p.is_dir() else p)
    return [(f.parent.name, pd.read_csv(f)) for f in found if f.exists()]


def runs_crop_seconds(run_root: str | os.PathLike | None, fallback_config: str | os.PathLike = TINY_CONFIG) -> float:
    """The crop length the runs under `run_root` trained on (they must agree); the config's when there are none.

    Why: a failure rate means nothing without its crop length; the audit's headline crop is the training one.
    """
    from cmgan_lib.train import load_config

    runs = find_runs(run_root) if run_root is not None else []
    lengths = sorted({run_crop_seconds(r) for r in runs if (r / "config.yaml").is_file()})
    if len(lengths) > 1:
        raise ValueError(f"{run_root}: runs trained on different crop lengths {lengths}; audit them separately")
    return lengths[0] if lengths else load_config(fallback_config).cut_len / 16000


def run_crop_seconds(run_dir: str | os.PathLike) -> float:
    """The crop length (s) a run trained on, from its config.yaml (cut_len / 16 kHz)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a run folder (no config.yaml)")
    seconds = config_crop_seconds(run_config(run_dir))
    if math.isnan(seconds):
        raise ValueError(f"{path}: no cut_len")
    return seconds


def config_crop_seconds(cfg: dict, missing: float = math.nan) -> float:
    """The crop length (s) of a run's config (cut_len / 16 kHz), `missing` when the config has no cut_len."""
    return int(cfg["cut_len"]) / SAMPLE_RATE if "cut_len" in cfg else missing


def run_checkpoints(run_dir: str | os.PathLike) -> list[tuple[str, Path | None]]:
    """(label, path) of every generator a run kept: untrained (None), epoch_NNN.pt in order, and last.pt."""
    run_dir = Path(run_dir)
    found: list[tuple[str, Path | None]] = [("untrained", None)]
    for path in sorted(run_dir.glob("epoch_*.pt")):
        found.append((f"after epoch {int(path.stem.split('_')[1])}", path))
    if not found[1:] and (run_dir / "last.pt").is_file():
        found.append(("last", run_dir / "last.pt"))
    return found


def runs_at(run_root_or_dirs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """A run folder itself (it holds a step log), the runs under a root (`find_runs`), or the given folders."""
    if isinstance(run_root_or_dirs, str | os.PathLike):
        root = Path(run_root_or_dirs)
        return [root] if (root / STEP_LOG).is_file() else find_runs(root)
    return [Path(d) for d in run_root_or_dirs]
