"""The run-folder contract, in one place (issue 22): what the trainer writes into a run folder (logs,
checkpoints, their repair on resume, the refusal to overwrite a run) and how the study, the trainer's readers
and the three notebooks find and read it. A run folder is `<variant>_s<seed>/` with config.yaml,
training_epoch_log.csv, training_step_log.csv, checkpoints (best.pt, last.pt, epoch_NNN.pt) and done.json once
it finished."""

from __future__ import annotations

import csv
import io
import math
import os
import pickle
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from cmgan_lib import SAMPLE_RATE
from cmgan_lib.core.paths import run_config, umask_mode
from cmgan_lib.training import runguard
from cmgan_lib.training.log_columns import CAUSE_COLUMNS, GRAD_SHARE_COLUMNS

if TYPE_CHECKING:
    import torch

    from cmgan_lib.training.config import TrainConfig


# ---- writing: the trainer's run folder

FAIL_COLUMNS = list(CAUSE_COLUMNS.values())  # failed PESQ labels per cause (a skip is always traceable)
STEP_COLUMNS = [
    "epoch", "step", "loss", "loss_ri", "loss_mag", "loss_time", "loss_gan", "disc_loss", "disc_skipped",
    "pesq_valid_frac", "pesq_mean", *FAIL_COLUMNS, "grad_norm_g", "grad_norm_d", *GRAD_SHARE_COLUMNS, "nonfinite",
    "lr_g", "lr_d", "seconds",
]  # fmt: skip
EPOCH_COLUMNS = [
    "epoch", "loss", "loss_ri", "loss_mag", "loss_time", "loss_gan", "disc_loss", "grad_norm_g", "grad_norm_d",
    "val_loss", "val_pesq", "val_stoi", "val_files", "disc_skip_rate", "pesq_valid_frac", *FAIL_COLUMNS,
    "nonfinite_steps", "lr_g", "lr_d", "best", "patience_counter", "early_stop", "seconds",
]  # fmt: skip
RUN_FILES = (  # what a run writes into its folder (and epoch_NNN.pt); `--overwrite` removes them all
    "config.yaml", "last.pt", "best.pt", "training_step_log.csv", "training_epoch_log.csv", "ddp_ranks.json",
    "validation_dropped.csv", "nonfinite_batches.csv", "resume_overrides.csv",
)  # fmt: skip
# A run's own test scores, written as soon as it finished when its grid asks (`test_after_training`): the best
# checkpoint scored on the grid's test split, as notebook 03 scores it (study.score_run_on_test).
TEST_SCORES = "test/metrics_per_file.csv"
# What a checkpoint must hold to be resumed; keys added later (e.g. nonfinite_in_a_row) are read with a default.
CHECKPOINT_REQUIRED = frozenset({
    "generator", "discriminator", "opt_g", "opt_d", "sched_g", "sched_d", "early_stopping", "epoch", "step",
    "config", "rng_cpu", "rng_cuda",
})  # fmt: skip
VAL_DROPPED_COLUMNS = ["epoch", "name", "reason"]
NONFINITE_COLUMNS = ["epoch", "step", "name", "reason"]
RESUME_COLUMNS = ["time", "resumed_after_epoch", "key", "old", "new"]

# Every CSV log of a run and its columns (checked and repaired together on resume).
LOGS = {"training_step_log.csv": STEP_COLUMNS, "training_epoch_log.csv": EPOCH_COLUMNS,
        "validation_dropped.csv": VAL_DROPPED_COLUMNS, "nonfinite_batches.csv": NONFINITE_COLUMNS}  # fmt: skip


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: a crash never leaves a half file."""
    import torch  # imported where a checkpoint is written or read: what only reads logs runs without torch

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        fsync_file(tmp)  # on disk before the rename makes it visible: a power cut never leaves an empty file
        os.chmod(tmp, umask_mode())  # as open() would make it, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError | RuntimeError):  # a full disk reads "unexpected pos": say what it is
            raise runguard.write_failure(exc, obj, path) from None
        raise


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file to the disk (its data, before a rename or a commit relies on it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CsvLog:
    """An append-only CSV log whose header goes out in the same write as the first row: a full disk can
    leave a truncated last line (repaired on resume by `repair_csv`) but never a file of rows with no header.
    Each row is one unbuffered append (`_append`), so nothing waits in a buffer after a failed write."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        self.fh: io.FileIO | None = None  # opened on the first row: a run that logs nothing leaves no empty file

    def write(self, row: dict[str, Any]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns)
        try:
            if self.fh is None:
                self.fh = open(self.path, "ab", buffering=0)  # unbuffered: a row is on its way to disk when written
            if self.fh.tell() == 0:
                writer.writeheader()
            writer.writerow(row)
            self._append(buf.getvalue().encode())
        except OSError as exc:
            if exc.errno not in runguard.DISK_FULL_ERRNOS:
                raise
            free = shutil.disk_usage(self.path.parent).free
            raise runguard.DiskFullError(
                f"{self.path}: disk full while writing a log row ({free} bytes free); the epoch in progress is not "
                f"committed; free some space: {interrupted_note(self.path.parent)}"
            ) from None

    def _append(self, data: bytes) -> None:
        """Write all of `data` at the end of the file (a short write goes on where it stopped)."""
        view = memoryview(data)
        while view:
            view = view[self.fh.write(view) :]

    def sync(self) -> None:
        """Its rows on disk (before the checkpoint that commits them is written)."""
        if self.fh is not None:
            os.fsync(self.fh.fileno())

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def check_log_columns(path: Path, columns: list[str]) -> None:
    """Refuse a log whose header is another one (an older version of this trainer wrote it): `repair_csv` would
    keep none of its rows. A missing header (first line a data row) is fine: repair restores it."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        header = next(csv.reader(f), None)
    if header and header != columns and not header[0].lstrip("-").isdigit():
        raise ValueError(f"{path}: its columns are not this trainer's (missing {sorted(set(columns) - set(header))}, "
                         f"extra {sorted(set(header) - set(columns))}); another version of cmgan-study wrote this "
                         "run, and resuming would lose its log: start a new run")  # fmt: skip


def repair_csv(path: Path, columns: list[str], max_epoch: int) -> None:
    """Rewrite a log as the checkpoint of `max_epoch` knows it: the header, then only complete rows of epochs
    up to `max_epoch` (drops rows a crash wrote after its checkpoint, a truncated last line from a full disk,
    and restores a missing header)."""
    if not path.exists():
        return
    text = path.read_text()
    rows = list(csv.reader(io.StringIO(text)))
    if rows and not text.endswith("\n"):
        rows = rows[:-1]  # the last line was cut off mid-write

    def epoch_of(row: list[str]) -> int | None:
        try:
            return int(row[0])
        except (ValueError, IndexError):
            return None

    keep = [r for r in rows if len(r) == len(columns) and epoch_of(r) is not None and epoch_of(r) <= max_epoch]
    buf = io.StringIO()
    csv.writer(buf).writerows([columns, *keep])
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete `.last.pt.*.tmp`-style files a killed checkpoint write left behind; returns what was removed."""
    stale = sorted(run_dir.glob(".*.pt.*.tmp")) if run_dir.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class RunExistsError(FileExistsError):
    """`train --config` into a folder that holds a run."""


def refuse_existing_run(run_dir: Path) -> None:
    """A folder with a checkpoint holds a run: starting afresh there would delete it."""
    found = [name for name in ("last.pt", "best.pt") if (run_dir / name).is_file()]
    if found:
        raise RunExistsError(
            f"{run_dir}: holds a run ({', '.join(found)}); continue it with `cmgan train --resume {run_dir}`, "
            "or start afresh with --overwrite (deletes its checkpoints and logs), or choose another run_dir"
        )


def start_run_folder(run_dir: Path, cfg: TrainConfig) -> None:
    """A fresh run: remove what an earlier run wrote there (RUN_FILES, epoch_NNN.pt), write config.yaml."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for path in [*(run_dir / name for name in RUN_FILES), *run_dir.glob("epoch_*.pt")]:
        path.unlink(missing_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def record_resume_changes(run_dir: Path, changes: list[tuple[str, Any, Any]], cfg: TrainConfig, epoch: int) -> None:
    """Append each change to RUN/resume_overrides.csv and rewrite config.yaml (when it does not say it already),
    so the folder says what ran."""
    if changes:
        log = CsvLog(run_dir / "resume_overrides.csv", RESUME_COLUMNS)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for key, old, new in changes:
            log.write(dict(time=stamp, resumed_after_epoch=epoch, key=key, old=old, new=new))
        log.close()
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    path = run_dir / "config.yaml"
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def checkpoint_state(parts: dict[str, Any], epoch: int, step: int, config: dict[str, Any],
                     nonfinite_in_a_row: int) -> dict[str, Any]:  # fmt: skip
    """What `--resume` needs: each part's state dict under its key, the counters, the config, the RNG states."""
    import torch

    return {
        **{key: part.state_dict() for key, part in parts.items()},
        "epoch": epoch,
        "step": step,
        "config": config,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "nonfinite_in_a_row": nonfinite_in_a_row,
    }


def restore_checkpoint(parts: dict[str, Any], ck: dict[str, Any]) -> None:
    """Load each part's state dict from `ck` (as `checkpoint_state` wrote it) and the RNG states."""
    import torch

    for key, part in parts.items():
        part.load_state_dict(ck[key])
    torch.set_rng_state(ck["rng_cpu"].cpu())
    if ck["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in ck["rng_cuda"]])


def read_checkpoint(path: Path, device: torch.device | str, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint this trainer can resume, or an error saying what the file is and what to do instead.
    `mmap`: map the tensors instead of reading them (to look at the counters and the config only)."""
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from (the run never finished an epoch; "
                                "start it again with --config FILE --overwrite)")  # fmt: skip
    try:
        ck = torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise ValueError(f"{path}: not a checkpoint of this trainer (it needs unpickling, which can run "
                         "code; this trainer's checkpoints never do)") from None  # fmt: skip
    except (RuntimeError, EOFError, OSError) as exc:  # truncated or corrupt file (a full disk, a bad copy)
        raise ValueError(f"{path}: unreadable checkpoint ({str(exc).splitlines()[0]}); resume from a copy, or "
                         "start again with --config FILE --overwrite") from None  # fmt: skip
    missing = sorted(CHECKPOINT_REQUIRED - set(ck)) if isinstance(ck, dict) else ["generator"]
    if missing:
        raise ValueError(f"{path}: not a training checkpoint of this project (no {', '.join(missing)}); a bare "
                         "generator state dict is for cmgan enhance / evaluate, it cannot be resumed")  # fmt: skip
    return ck


def repair_logs(run_dir: Path, max_epoch: int) -> None:
    """Every log as the checkpoint of `max_epoch` knows it; every header is checked before any is rewritten."""
    for name, columns in LOGS.items():
        check_log_columns(run_dir / name, columns)
    for name, columns in LOGS.items():
        repair_csv(run_dir / name, columns, max_epoch)


def interrupted_note(run_dir: Path) -> str:
    """What an interrupted run left: the checkpoint `--resume` continues from (the partial epoch is redone)."""
    if not (run_dir / "last.pt").is_file():
        return f"no epoch had finished, so there is nothing to resume; start again with --overwrite ({run_dir})"
    log = run_dir / "training_epoch_log.csv"
    epochs = max(0, len(log.read_text().splitlines()) - 1) if log.is_file() else 0
    return (
        f"{run_dir / 'last.pt'} holds {epochs} finished epoch(s); `cmgan train --resume {run_dir}` continues "
        "exactly from there (the steps after it are redone)"
    )


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
    """A checkpoint file itself, or a run folder's best.pt (else, while the run is unfinished, last.pt).

    A finished run (done.json) without best.pt has no best model (no epoch improved on the validation metric,
    or best.pt was lost): its last.pt is never taken in its place without being asked for by name."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / "best.pt").is_file():
        return path / "best.pt"
    if (path / "last.pt").is_file() and not (path / "done.json").is_file():
        return path / "last.pt"
    if not strict:
        return None
    if (path / "last.pt").is_file():
        raise FileNotFoundError(f"{path}: a finished run without best.pt (no epoch improved on the validation "
                                f"metric, or it was lost); pass {path / 'last.pt'} to use its last epoch")  # fmt: skip
    raise FileNotFoundError(f"{path}: neither a checkpoint nor a run folder with best.pt/last.pt")


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
    from cmgan_lib.training.config import load_config

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
