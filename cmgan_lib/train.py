"""The CMGAN trainer: the published recipe by default, each proposed fix a switch, every fact logged.

Read top to bottom: `TrainConfig` (the hyperparameters, loaded from YAML with key=value overrides), then
`Trainer.train_step` (generator step, then the metric discriminator on PESQ labels of the detached
estimate), `Trainer.validate` (full validation files), `Trainer.fit` (epochs, logs, checkpoints, early
stopping), and `main` (the `cmgan train` / `torchrun -m cmgan_lib.train` entry point).

Distributed: torchrun sets RANK/WORLD_SIZE; the generator is wrapped in DistributedDataParallel (NCCL on
GPU, Gloo on CPU). The discriminator's gradients are averaged by hand over the ranks that actually updated
it, because PESQ labels are computed per rank and one rank may skip while another does not (the published
code would then deadlock in DDP's all-reduce).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import math
import os
import pickle
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from cmgan_lib import runguard
from cmgan_lib.dsp import istft, power_compress, power_uncompress, rms_normalizer, stft
from cmgan_lib.enhance import resolve_device
from cmgan_lib.grad_share import COLUMNS as GRAD_SHARE_COLUMNS
from cmgan_lib.grad_share import NOT_MEASURED, adversarial_grads, share_stats
from cmgan_lib.models import Discriminator, TSCNet
from cmgan_lib.numerics import PRECISIONS, autocast_call, configure, loader_generator, seed_worker
from cmgan_lib.paths import run_config
from cmgan_lib.pesq_labels import (
    CAUSE_COLUMNS,
    STRATEGIES,
    FailureInjector,
    PesqPool,
    PesqWorkerDied,
    cause_counts,
    discriminator_loss,
    make_labels,
)

DEFAULT_CORPUS = "runs/synthetic"
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
VAL_SPLITS = ("valid", "test")


_POSITIVE = (lambda v: v > 0, "> 0")
_AT_LEAST_ONE = (lambda v: v >= 1, ">= 1")
_NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
# The range of every numeric TrainConfig field (tests/test_bad_inputs.py checks that none is missing).
RANGES: dict[str, tuple[Any, str]] = {
    "seed": _NON_NEGATIVE, "epochs": _AT_LEAST_ONE, "batch_size": _AT_LEAST_ONE, "cut_len": _AT_LEAST_ONE,
    "num_channel": _AT_LEAST_ONE, "ndf": _AT_LEAST_ONE, "n_fft": (lambda v: v >= 2, ">= 2"), "hop": _AT_LEAST_ONE,
    "compress": _POSITIVE, "lr_g": _POSITIVE, "lr_d": _POSITIVE, "decay_epoch": _AT_LEAST_ONE,
    "lr_gamma": _POSITIVE, "loss_weights": (lambda v: v >= 0, "finite and >= 0"), "es_patience": _AT_LEAST_ONE,
    "es_min_delta": _NON_NEGATIVE, "grad_clip_norm": (lambda v: v >= 0, ">= 0 (0: off)"),
    "max_nonfinite_in_a_row": _AT_LEAST_ONE, "val_max_files": (lambda v: v >= 1, ">= 1 or null (all)"),
    "max_steps_per_epoch": (lambda v: v >= 1, ">= 1 or null (all)"), "num_workers": _NON_NEGATIVE,
    "pesq_workers": (lambda v: v >= 1, ">= 1 or null (all CPUs)"), "synthetic_n_train": _AT_LEAST_ONE,
    "synthetic_n_test": _AT_LEAST_ONE, "synthetic_n_valid": _NON_NEGATIVE, "synthetic_seed": _NON_NEGATIVE,
    "pesq_fail_inject": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    "checkpoint_every": (lambda v: v >= 0, ">= 0 (0: off)"), "train_repeat": _AT_LEAST_ONE,
    "grad_share_every": (lambda v: v >= 0, ">= 0 (0: off)"),
}  # fmt: skip
OPTIONAL_NUMBERS = {"val_max_files", "max_steps_per_epoch", "pesq_workers"}  # None means "no limit" / "default"
# Keys `--resume` may change: how long, where and how fast the run goes, never what it learns from or how.
RESUMABLE_KEYS = frozenset({
    "epochs", "max_steps_per_epoch", "device", "num_workers", "pesq_workers", "log_steps",
    "checkpoint_every", "overlap_pesq", "max_nonfinite_in_a_row",
})  # fmt: skip
RUN_FILES = (  # what a run writes into its folder (and epoch_NNN.pt); `--overwrite` removes them all
    "config.yaml", "last.pt", "best.pt", "training_step_log.csv", "training_epoch_log.csv", "ddp_ranks.json",
    "validation_dropped.csv", "nonfinite_batches.csv", "resume_overrides.csv",
)  # fmt: skip
# What a checkpoint must hold to be resumed; keys added later (e.g. nonfinite_in_a_row) are read with a default.
CHECKPOINT_REQUIRED = frozenset({
    "generator", "discriminator", "opt_g", "opt_d", "sched_g", "sched_d", "early_stopping", "epoch", "step",
    "config", "rng_cpu", "rng_cuda",
})  # fmt: skip
VAL_DROPPED_COLUMNS = ["epoch", "name", "reason"]
NONFINITE_COLUMNS = ["epoch", "step", "name", "reason"]
RESUME_COLUMNS = ["time", "resumed_after_epoch", "key", "old", "new"]


@dataclass
class TrainConfig:
    """Hyperparameters. Defaults are the published recipe (official src/train.py)."""

    data_dir: str | None = None  # None: the embedded synthetic corpus in runs/synthetic, built on demand
    run_dir: str = "runs/train"
    seed: int = 0
    epochs: int = 120
    batch_size: int = 4
    cut_len: int = 32000
    num_channel: int = 64
    ndf: int = 16
    n_fft: int = 400
    hop: int = 100
    compress: float = 0.3
    lr_g: float = 5e-4
    lr_d: float = 1e-3
    decay_epoch: int = 30
    lr_gamma: float = 0.5
    loss_weights: list[float] = field(default_factory=lambda: [0.1, 0.9, 0.2, 0.05])  # RI, mag, time, GAN
    pesq_strategy: str = "skip"  # skip (published) | batch_mean (fix document) | masked (per-sample) | mpsenet
    pesq_fail_inject: float = 0.0  # probability a sample's PESQ label is treated as failed (cause "injected")
    # False (published, official.yaml): the same file order every epoch, as CMGAN's DistributedSampler without
    # set_epoch (crops still move). Default True: what this trainer always did, so older run folders keep it.
    reshuffle_each_epoch: bool = True
    val_split: str = "valid"  # valid: held-out split (study default) | test: the published code validates on test
    val_speakers: list[str] = field(default_factory=list)  # training speakers held out when there is no valid/
    checkpoint_every: int = 0  # > 0: also keep epoch_NNN.pt every N epochs (for the audit of model estimates)
    early_stopping: bool = False
    es_patience: int = 15
    es_min_delta: float = 1e-4
    es_monitor: str = "val_pesq"  # val_pesq (higher is better) | val_loss (lower is better)
    grad_clip_norm: float = 0.0  # 0: off; pre-clip norms are logged either way
    train_disc: bool = True  # false: the discriminator is never updated (every step skipped: the bug's limit)
    grad_share_every: int = 0  # > 0: every N steps log the adversarial term's share of G's gradient (grad_share.py)
    eval_denormalize: bool = False  # PESQ labels on audio divided by c (PESQ is scale-invariant: a check)
    max_nonfinite_in_a_row: int = 10
    overlap_pesq: bool = True  # PESQ labels run in the pool while the generator's backward pass runs
    log_steps: bool = True
    val_max_files: int | None = None
    max_steps_per_epoch: int | None = None
    train_repeat: int = 1  # an epoch visits every training clip this many times (new crops each visit): with a
    # handful of clips an epoch would be one or two steps and validation would dominate (issue 18 regime search)
    fixed_crops: bool = False  # every clip keeps one crop all run: the training set is n fixed examples (overfitting)
    num_workers: int = 0
    pesq_workers: int | None = None
    device: str | None = None
    resample: bool = False
    precision: str = "fp32"  # fp32 (published math) | tf32 (CUDA matmuls/convs; no effect on CPU) | bf16 autocast
    deterministic: bool = False  # deterministic kernels, fixed cuBLAS workspace, seeded loader workers
    synthetic_n_train: int = 160
    synthetic_n_test: int = 40
    synthetic_n_valid: int = 16
    synthetic_seed: int = 0

    def __post_init__(self) -> None:
        self._coerce_types()
        problems = []
        if self.pesq_strategy not in STRATEGIES:
            problems.append(f"pesq_strategy={self.pesq_strategy!r} is not one of {sorted(STRATEGIES)}")
        if self.val_split not in VAL_SPLITS:
            problems.append(f"val_split={self.val_split!r} must be one of {list(VAL_SPLITS)}")
        if self.es_monitor not in ("val_pesq", "val_loss"):
            problems.append(f"es_monitor={self.es_monitor!r} must be val_pesq or val_loss")
        if self.precision not in PRECISIONS:
            problems.append(f"precision={self.precision!r} is not one of {list(PRECISIONS)}")
        if len(self.loss_weights) != 4:
            problems.append(f"loss_weights needs 4 values (RI, magnitude, time, GAN), got {self.loss_weights}")
        problems += self._range_problems()
        if not problems and self.hop > self.n_fft:
            problems.append(f"hop={self.hop} must be <= n_fft={self.n_fft} (frames would leave gaps)")
        if not problems and self.cut_len < self.n_fft:
            problems.append(f"cut_len={self.cut_len} must be >= n_fft={self.n_fft}")
        if not problems and self.cut_len % self.hop:
            problems.append(f"cut_len={self.cut_len} must be a multiple of hop={self.hop}")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _range_problems(self) -> list[str]:
        """Every numeric field against its range in RANGES, before anything starts (hop=0 would divide by zero,
        decay_epoch=0 would fail in StepLR after a whole epoch)."""
        problems = []
        for name, (ok, text) in RANGES.items():
            value = getattr(self, name)
            values = value if isinstance(value, list) else [value]
            if value is None and name in OPTIONAL_NUMBERS:
                continue
            if any(v is None or not math.isfinite(v) or not ok(v) for v in values):
                problems.append(f"{name}={value!r} must be {text}")
        return problems

    def _coerce_types(self) -> None:
        """YAML 1.1 reads `1e-3` as a string and `5` as an int: cast to each field's declared type."""
        casts = {"float": float, "int": int, "float | None": float, "int | None": int, "str | None": str}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or f.type not in casts and f.type not in ("bool", "list[float]", "list[str]"):
                continue
            try:
                if f.type == "bool":
                    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                        value = value.lower() in ("true", "yes", "1")
                    elif not isinstance(value, bool):
                        raise ValueError
                elif f.type == "list[float]":
                    value = [float(v) for v in value]
                elif f.type == "list[str]":
                    value = [str(v) for v in ([value] if isinstance(value, str) else value)]
                else:
                    value = casts[f.type](value)
            except (TypeError, ValueError):
                raise ValueError(f"invalid training config: {f.name}={value!r} is not a {f.type}") from None
            setattr(self, f.name, value)


def _grad(p: torch.nn.Parameter) -> torch.Tensor:
    return p.grad if p.grad is not None else torch.zeros_like(p)


def _parse_overrides(overrides: list[str]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        if key not in names:
            raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(names))}")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"override {item!r}: the value is not valid YAML") from None
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{path}:{where} YAML syntax error: {problem}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping")
    base = data.pop("base", None)
    if base is not None:
        data = {**_read_yaml(path.parent / base), **data}
    return data


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """A TrainConfig from YAML (with an optional `base:` file it extends) and `key=value` overrides."""
    values = _read_yaml(Path(path)) if path is not None else {}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{path}: unknown config keys {unknown}")
    if path is not None:
        try:
            TrainConfig(**values)  # the file alone first, so an error is blamed on what caused it
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    values.update(_parse_overrides(overrides or []))
    try:
        return TrainConfig(**values)
    except ValueError as exc:
        raise ValueError(f"{path} with key=value overrides: {exc}" if path else str(exc)) from None


def config_changes(run_dir: str | os.PathLike, overrides: list[str]) -> tuple[TrainConfig, list[tuple[str, Any, Any]]]:
    """The run's config.yaml with `overrides` applied, and (key, old, new) for every value they change, both read
    as the trainer reads them (the one comparison behind `--resume` and `cmgan ablate`'s finished-run check)."""
    run = Path(run_dir)
    # a run written before `val_split` existed validated on the test split: keep that, never switch silently
    pinned = [] if "val_split" in run_config(run) else ["val_split=test"]
    old = load_config(run / "config.yaml", [f"run_dir={run}", *pinned]).to_dict()
    new = load_config(run / "config.yaml", [f"run_dir={run}", *pinned, *overrides])
    new_d = new.to_dict()
    return new, [(k, old[k], new_d[k]) for k in old if old[k] != new_d[k]]


def resume_config(run_dir: str | os.PathLike, overrides: list[str]) -> tuple[TrainConfig, list[tuple[str, Any, Any]]]:
    """The config of the run in `run_dir` with `overrides`, and the (key, old, new) changes they make.

    Refuses what is not a run folder, and any change to a key outside RESUMABLE_KEYS: continuing a run with
    another recipe would give a model that no config describes.
    """
    run = Path(run_dir)
    if run.is_file():
        raise ValueError(f"{run}: --resume takes a run folder (holding config.yaml and last.pt), not a file; "
                         "a checkpoint file is for cmgan enhance / cmgan evaluate --checkpoint")  # fmt: skip
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: run folder does not exist")
    if not (run / "config.yaml").is_file():
        raise ValueError(f"{run}: not a run folder (no config.yaml); start a run with cmgan train --config FILE")
    new, changes = config_changes(run, [f"run_dir={run}", *overrides])
    refused = [f"{k} ({o!r} -> {n!r})" for k, o, n in changes if k not in RESUMABLE_KEYS]
    if refused:
        raise ValueError(
            f"{run}: --resume cannot change {', '.join(refused)}: that changes the recipe of the run being "
            f"continued; keys that may change: {', '.join(sorted(RESUMABLE_KEYS))}. "
            "Start a new run instead (--config FILE run_dir=NEW_DIR)."
        )
    return new, changes


def record_resume_changes(run_dir: Path, changes: list[tuple[str, Any, Any]], cfg: TrainConfig, epoch: int) -> None:
    """Append each change to RUN/resume_overrides.csv and rewrite config.yaml, so the folder says what ran."""
    if not changes:
        return
    log = CsvLog(run_dir / "resume_overrides.csv", RESUME_COLUMNS)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for key, old, new in changes:
        log.write(dict(time=stamp, resumed_after_epoch=epoch, key=key, old=old, new=new))
    log.close()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


class EarlyStopping:
    """Patience counter on a monitored value; tracked even when early stopping is off, so the logs say
    when it would have fired."""

    def __init__(self, patience: int, min_delta: float, mode: str):
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.best = math.nan
        self.best_epoch = -1
        self.counter = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record this epoch's value; True if it is a new best."""
        better = (
            math.isnan(self.best)
            or (self.mode == "max" and value > self.best + self.min_delta)
            or (self.mode == "min" and value < self.best - self.min_delta)
        )
        if not math.isnan(value) and better:
            self.best, self.best_epoch, self.counter = value, epoch, 0
            return True
        self.counter += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.counter >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "counter": self.counter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.counter = state["best"], state["best_epoch"], state["counter"]


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses in a row."""


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: a crash never leaves a half file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError | RuntimeError):  # a full disk reads "unexpected pos": say what it is
            raise runguard.write_failure(exc, obj, path) from None
        raise


class CsvLog:
    """An append-only CSV log whose header goes out in the same write as the first row: a full disk can
    leave a truncated last line (repaired on resume by `repair_csv`) but never a file of rows with no header."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        self.fh = None  # opened on the first row: a run that logs nothing leaves no empty file

    def write(self, row: dict[str, Any]) -> None:
        if self.fh is None:
            self.fh = open(self.path, "a", newline="")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns)
        if self.fh.tell() == 0:
            writer.writeheader()
        writer.writerow(row)
        self.fh.write(buf.getvalue())
        self.fh.flush()

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


def synthetic_corpus_path(n_train: int, n_test: int, seed: int, n_valid: int = 0) -> Path:
    """One folder per corpus size and seed, so differently sized runs never share a half-matching corpus."""
    sizes = f"{n_train}_{n_valid}_{n_test}" if n_valid else f"{n_train}_{n_test}"
    return Path(DEFAULT_CORPUS) / f"n{sizes}_s{seed}"


def config_corpus_path(cfg: TrainConfig) -> Path:
    return synthetic_corpus_path(cfg.synthetic_n_train, cfg.synthetic_n_test, cfg.synthetic_seed,
                                 cfg.synthetic_n_valid)  # fmt: skip


def resolve_data_dir(cfg: TrainConfig, is_main: bool = True) -> Path:
    """The configured data folder, or the embedded synthetic corpus, generated on first use."""
    if cfg.data_dir is not None:
        return Path(cfg.data_dir)
    path = config_corpus_path(cfg)
    if is_main and not (path / "manifest.csv").exists():
        from cmgan_lib.data.synthetic import make_dataset

        make_dataset(path, n_train=cfg.synthetic_n_train, n_test=cfg.synthetic_n_test, seed=cfg.synthetic_seed,
                     n_valid=cfg.synthetic_n_valid)  # fmt: skip
    return path


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False, overwrite: bool = False):
        from cmgan_lib.data.dataset import CMGANDataset, training_pairs
        from cmgan_lib.data.validate import validate_dataset

        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        if not resume and not overwrite:
            refuse_existing_run(self.run_dir)  # before anything starts: nothing is lost without asking
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.is_main = self.rank == 0
        configure(cfg.precision, cfg.deterministic)  # before any CUDA work (cuBLAS reads its workspace once)
        device = resolve_device(cfg.device)
        if device.type == "cuda" and self.world > 1:
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

        # Data: refuse bad data before anything starts (no run folder, no checkpoint).
        self.data_dir = resolve_data_dir(cfg, self.is_main)
        self._barrier()
        validate_dataset(self.data_dir, resample=cfg.resample)
        held_out = cfg.val_speakers if cfg.val_split == "valid" else []
        self.train_set = CMGANDataset(self.data_dir, "train", cut_len=cfg.cut_len, seed=cfg.seed,
                                      resample=cfg.resample, val_speakers=held_out,
                                      repeat=cfg.train_repeat, fixed_crops=cfg.fixed_crops)  # fmt: skip
        self.sampler = DistributedSampler(self.train_set, num_replicas=self.world, rank=self.rank, shuffle=True,
                                          seed=cfg.seed)  # fmt: skip
        self.loader = DataLoader(self.train_set, batch_size=cfg.batch_size, sampler=self.sampler, drop_last=True,
                                 num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                                 worker_init_fn=seed_worker,
                                 generator=loader_generator(cfg.seed, 0) if cfg.deterministic else None)  # fmt: skip
        if len(self.loader) == 0:  # drop_last with batch_size > clips per rank: every epoch would be empty
            raise ValueError(f"batch_size={cfg.batch_size} is larger than the {len(self.sampler)} training clips "
                             f"of {self.data_dir} per process; no step would run (drop_last); use batch_size <= "
                             f"{len(self.sampler)}")  # fmt: skip
        # Model selection and early stopping look at val_split only; "test" is the published behaviour.
        self.val_pairs = training_pairs(self.data_dir, cfg.val_split, held_out)[: cfg.val_max_files]
        self._val_audio: list[tuple[str, np.ndarray, np.ndarray]] | None = None
        self._val_dropped: list[tuple[str, str]] = []  # (name, reason) of files validation cannot score

        # Models and optimizers, identical on every rank (same seed; DDP also broadcasts from rank 0).
        torch.manual_seed(cfg.seed)
        self.gen = TSCNet(num_channel=cfg.num_channel, num_features=cfg.n_fft // 2 + 1).to(device)
        self.disc = Discriminator(ndf=cfg.ndf).to(device)
        self.gen_params = list(self.gen.parameters())
        self.generator = DDP(self.gen, device_ids=[device.index] if device.type == "cuda" else None) \
            if self.world > 1 else self.gen  # fmt: skip
        # cfg.precision: bf16 autocast inside these two calls only; they return fp32 (losses and PESQ stay fp32)
        self.disc_fwd = autocast_call(self.disc, cfg.precision, device)
        self.opt_g = torch.optim.AdamW(self.gen.parameters(), lr=cfg.lr_g)
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=cfg.lr_d)
        self.sched_g = torch.optim.lr_scheduler.StepLR(self.opt_g, step_size=cfg.decay_epoch, gamma=cfg.lr_gamma)
        self.sched_d = torch.optim.lr_scheduler.StepLR(self.opt_d, step_size=cfg.decay_epoch, gamma=cfg.lr_gamma)
        mode = "max" if cfg.es_monitor == "val_pesq" else "min"
        self.stopper = EarlyStopping(cfg.es_patience, cfg.es_min_delta, mode)
        self.injector = FailureInjector(cfg.pesq_fail_inject, cfg.seed, self.rank)

        self.start_epoch, self.global_step = 0, 0
        self.nonfinite_in_a_row = 0
        self.rank_record: dict[str, Any] = {"indices": [], "checksums": []}
        if self.is_main:
            for path in remove_stale_temporaries(self.run_dir):
                tqdm.write(f"removed {path} (left by a checkpoint write that was killed)")
        if resume:
            self._load_checkpoint(self.run_dir / "last.pt")
        elif self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for path in [*(self.run_dir / name for name in RUN_FILES), *self.run_dir.glob("epoch_*.pt")]:
                path.unlink(missing_ok=True)
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        # last: a refused resume above must not leave worker processes behind (fit() closes the pool)
        workers = cfg.pesq_workers or max(1, len(os.sched_getaffinity(0)) // self.world)
        self.pool = PesqPool(n_workers=workers)

    # ------------------------------------------------------------------ one step
    def forward_losses(self, clean: torch.Tensor, noisy: torch.Tensor, generator=None) -> dict[str, torch.Tensor]:
        """Generator forward on RMS-normalized audio and the four published loss terms.

        `generator` defaults to the (possibly DDP-wrapped) training module; validation, which runs on rank 0
        alone, passes the bare module so that no collective (DDP's buffer broadcast) is started on one rank.
        """
        generator = self.generator if generator is None else generator
        cfg, w = self.cfg, self.cfg.loss_weights
        noisy_spec = power_compress(stft(noisy, cfg.n_fft, cfg.hop), cfg.compress).permute(0, 1, 3, 2)
        clean_spec = power_compress(stft(clean, cfg.n_fft, cfg.hop), cfg.compress)
        clean_real, clean_imag = clean_spec[:, 0:1], clean_spec[:, 1:2]
        est_real, est_imag = autocast_call(generator, cfg.precision, self.device)(noisy_spec)
        est_real, est_imag = est_real.permute(0, 1, 3, 2), est_imag.permute(0, 1, 3, 2)
        est_mag = torch.sqrt(est_real**2 + est_imag**2)
        clean_mag = torch.sqrt(clean_real**2 + clean_imag**2)
        est_spec = power_uncompress(est_real, est_imag, cfg.compress).squeeze(1)
        est_audio = istft(est_spec, cfg.n_fft, cfg.hop, length=clean.shape[-1])

        predict_fake = self.disc_fwd(clean_mag, est_mag).flatten()
        loss_gan = F.mse_loss(predict_fake, torch.ones_like(predict_fake))
        loss_mag = F.mse_loss(est_mag, clean_mag)
        loss_ri = F.mse_loss(est_real, clean_real) + F.mse_loss(est_imag, clean_imag)
        loss_time = torch.mean(torch.abs(est_audio - clean))
        loss = w[0] * loss_ri + w[1] * loss_mag + w[2] * loss_time + w[3] * loss_gan
        return dict(loss=loss, loss_ri=loss_ri, loss_mag=loss_mag, loss_time=loss_time, loss_gan=loss_gan,
                    est_mag=est_mag, clean_mag=clean_mag, est_audio=est_audio)  # fmt: skip

    def train_step(self, clean: torch.Tensor, noisy: torch.Tensor, names: list[str] | None = None) -> dict[str, Any]:
        cfg = self.cfg
        clean, noisy = clean.to(self.device), noisy.to(self.device)
        c = rms_normalizer(noisy)[:, None]
        bad = self._bad_inputs(clean, noisy, c)
        if not self._all_ranks(not bad.any()):  # an all-zero noisy file makes c infinite: never run forward
            return self._skipped_step(names, bad)
        clean, noisy = clean * c, noisy * c

        self.opt_g.zero_grad(set_to_none=True)
        buffers = self._buffers()  # BatchNorm statistics and spectral-norm vectors change in the forward pass
        out = self.forward_losses(clean, noisy)
        # PESQ labels of the detached estimate: start now, collect after the generator's update.
        est_pesq, clean_pesq = out["est_audio"].detach(), clean
        if cfg.eval_denormalize:
            est_pesq, clean_pesq = est_pesq / c, clean_pesq / c
        est_np, clean_np = est_pesq.cpu().numpy(), clean_pesq.cpu().numpy()
        handle = self.pool.submit(clean_np, est_np) if cfg.overlap_pesq else None

        finite = self._all_ranks(bool(torch.isfinite(out["loss"]).item()))
        grad_norm_g, share = math.nan, NOT_MEASURED
        if finite:
            measure = cfg.grad_share_every > 0 and self.global_step % cfg.grad_share_every == 0
            g_adv = adversarial_grads(cfg.loss_weights[3] * out["loss_gan"], self.gen_params) if measure else None
            out["loss"].backward()
            if g_adv is not None:
                share = share_stats(self._mean_over_ranks(g_adv), [_grad(p) for p in self.gen_params])
            grad_norm_g = self._clip(self.gen.parameters())
            self.opt_g.step()
            self.nonfinite_in_a_row = 0
        else:
            self._restore_buffers(buffers)
            self.nonfinite_in_a_row += 1

        raw, reasons = self.injector(*(handle or self.pool.submit(clean_np, est_np)).result(), step=self.global_step)
        labels = make_labels(raw, reasons, cfg.pesq_strategy, self.device)
        self.opt_d.zero_grad(set_to_none=True)
        disc_loss = None
        if finite and cfg.train_disc:
            disc_loss = discriminator_loss(self.disc_fwd, out["clean_mag"], out["est_mag"].detach(), labels)
            if disc_loss is not None:
                disc_loss.backward()
        updated = self._sync_disc_grads(disc_loss is not None)
        grad_norm_d = math.nan
        if updated:
            grad_norm_d = self._clip(self.disc.parameters())
            self.opt_d.step()
        valid = np.asarray(labels.valid)
        return dict(
            loss=out["loss"].item(), loss_ri=out["loss_ri"].item(), loss_mag=out["loss_mag"].item(),
            loss_time=out["loss_time"].item(), loss_gan=out["loss_gan"].item(),
            disc_loss=disc_loss.item() if disc_loss is not None else math.nan,  # never a made-up 0.0
            disc_skipped=int(disc_loss is None), pesq_valid_frac=float(valid.mean()),
            pesq_mean=float(np.nanmean(raw)) if valid.any() else math.nan,
            grad_norm_g=grad_norm_g, grad_norm_d=grad_norm_d, nonfinite=int(not finite), **cause_counts(reasons),
            **share,
        )  # fmt: skip

    # ------------------------------------------------------------------ non-finite bookkeeping
    @staticmethod
    def _bad_inputs(clean: torch.Tensor, noisy: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Per sample: True when the normalizer or the audio is not finite (the model must never see it)."""
        return ~(torch.isfinite(c[:, 0]) & torch.isfinite(clean).all(-1) & torch.isfinite(noisy).all(-1))

    def _skipped_step(self, names: list[str] | None, bad: torch.Tensor) -> dict[str, Any]:
        """The step row of a batch refused before the forward pass: nothing ran, nothing changed."""
        self.nonfinite_in_a_row += 1
        names = names or [f"<sample {i} of the batch>" for i in range(len(bad))]
        bad_names = [n for n, b in zip(names, bad.tolist(), strict=True) if b]
        nan = math.nan
        return dict(loss=nan, loss_ri=nan, loss_mag=nan, loss_time=nan, loss_gan=nan, disc_loss=nan,
                    disc_skipped=1, pesq_valid_frac=nan, pesq_mean=nan, grad_norm_g=nan, grad_norm_d=nan,
                    nonfinite=1, **{col: 0 for col in FAIL_COLUMNS}, **NOT_MEASURED,
                    bad_files=bad_names or ["<a batch on another rank>"])  # fmt: skip

    def _buffers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(b, b.detach().clone()) for m in (self.gen, self.disc) for b in m.buffers()]

    @staticmethod
    def _restore_buffers(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Put back the buffers a non-finite forward pass wrote (NaN running statistics would stay forever)."""
        with torch.no_grad():
            for buf, copy in saved:
                buf.copy_(copy)

    def _clip(self, params) -> float:
        """Pre-clip global L2 gradient norm; clips to cfg.grad_clip_norm when it is > 0."""
        params = [p for p in params if p.grad is not None]
        if not params or (self.cfg.grad_clip_norm <= 0 and not self.cfg.log_steps):
            return math.nan  # nothing to clip and nothing to log
        max_norm = self.cfg.grad_clip_norm if self.cfg.grad_clip_norm > 0 else float("inf")
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    # ------------------------------------------------------------------ distributed helpers
    def _barrier(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.barrier()

    def _all_ranks(self, flag: bool) -> bool:
        """True only if `flag` holds on every rank (so that all ranks take the same branch)."""
        if self.world == 1:
            return flag
        t = torch.tensor([0.0 if flag else 1.0], device=self.device)
        dist.all_reduce(t)
        return t.item() == 0

    def _mean_over_ranks(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """Average per-rank gradients as DDP averages the step's own (so both sides of a share compare)."""
        if self.world > 1:
            for g in grads:
                dist.all_reduce(g)
                g /= self.world
        return grads

    def _sync_disc_grads(self, participated: bool) -> int:
        """Average discriminator gradients over the ranks that computed a loss; returns how many did."""
        if self.world == 1:
            return int(participated)
        n = torch.tensor([float(participated)], device=self.device)
        dist.all_reduce(n)
        count = int(n.item())
        if count == 0:
            return 0
        for p in self.disc.parameters():
            if p.grad is None or not participated:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= count
        return count

    def _broadcast(self, obj: Any) -> Any:
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    # ------------------------------------------------------------------ validation
    def _load_val_audio(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        from cmgan_lib.audio import read_wav

        if self._val_audio is None:
            self._val_audio, self._val_dropped = [], []
            for name, clean_path, noisy_path in self.val_pairs:
                clean = read_wav(clean_path, resample=self.cfg.resample)
                noisy = read_wav(noisy_path, resample=self.cfg.resample)
                if len(clean) < 4000:
                    self._val_dropped.append((name, f"too short for PESQ ({len(clean)} samples < 0.25 s)"))
                elif not np.any(noisy) or not np.any(clean):
                    self._val_dropped.append((name, f"{'noisy' if not np.any(noisy) else 'clean'} is all zeros"))
                else:
                    self._val_audio.append((name, clean, noisy))
        return self._val_audio

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Loss, PESQ and STOI on full validation files (one file at a time, denormalized for the metrics).

        All three average over the same files: those every metric could score. `val_files` counts them and
        `val_dropped` lists (name, reason) for every validation file left out.
        """
        self.gen.eval()
        self.disc.eval()
        losses, cleans, ests, names = [], [], [], []
        for name, clean_np, noisy_np in self._load_val_audio():
            names.append(name)
            clean = torch.from_numpy(clean_np).to(self.device)[None]
            noisy = torch.from_numpy(noisy_np).to(self.device)[None]
            c = rms_normalizer(noisy)[:, None]
            out = self.forward_losses(clean * c, noisy * c, generator=self.gen)
            losses.append(out["loss"].item())
            cleans.append(clean_np)
            ests.append((out["est_audio"] / c)[0].cpu().numpy())
        self.gen.train()
        self.disc.train()
        dropped = list(self._val_dropped)
        if not cleans:
            return dict(val_loss=math.nan, val_pesq=math.nan, val_stoi=math.nan, val_files=0, val_dropped=dropped)
        # PESQ and STOI of every file in the worker pool at once (STOI ran here, one file after another)
        pesq_handle, stoi_futures = self.pool.submit(cleans, ests), self.pool.submit_stoi(cleans, ests)
        raw, reasons = pesq_handle.result()
        stois = np.array([f.result() for f in stoi_futures])
        losses = np.array(losses)
        scored = np.isfinite(raw) & np.isfinite(stois) & np.isfinite(losses)
        for i in np.flatnonzero(~scored):
            why = [f"PESQ: {reasons[i]}"] if not np.isfinite(raw[i]) else []
            why += ["STOI not finite"] if not np.isfinite(stois[i]) else []
            why += ["loss not finite"] if not np.isfinite(losses[i]) else []
            dropped.append((names[i], "; ".join(why)))
        if not scored.any():
            return dict(val_loss=math.nan, val_pesq=math.nan, val_stoi=math.nan, val_files=0, val_dropped=dropped)
        return dict(val_loss=float(losses[scored].mean()), val_pesq=float(raw[scored].mean()),
                    val_stoi=float(stois[scored].mean()), val_files=int(scored.sum()), val_dropped=dropped)  # fmt: skip

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, epoch: int) -> dict[str, Any]:
        return {
            "generator": self.gen.state_dict(),
            "discriminator": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
            "early_stopping": self.stopper.state_dict(),
            "epoch": epoch,
            "step": self.global_step,
            "config": self.cfg.to_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
        }

    def _load_checkpoint(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no checkpoint to resume from (the run never finished an epoch; "
                                    "start it again with --config FILE --overwrite)")  # fmt: skip
        try:
            ck = torch.load(path, map_location=self.device, weights_only=True)
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
        self.gen.load_state_dict(ck["generator"])
        self.disc.load_state_dict(ck["discriminator"])
        self.opt_g.load_state_dict(ck["opt_g"])
        self.opt_d.load_state_dict(ck["opt_d"])
        self.sched_g.load_state_dict(ck["sched_g"])
        self.sched_d.load_state_dict(ck["sched_d"])
        self.stopper.load_state_dict(ck["early_stopping"])
        self.start_epoch, self.global_step = ck["epoch"] + 1, ck["step"]
        self.nonfinite_in_a_row = int(ck.get("nonfinite_in_a_row", 0))
        torch.set_rng_state(ck["rng_cpu"].cpu())
        if ck["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in ck["rng_cuda"]])
        if self.is_main:
            for name, columns in self._logs().items():  # every header checked before any file is rewritten
                check_log_columns(self.run_dir / name, columns)
            for name, columns in self._logs().items():
                repair_csv(self.run_dir / name, columns, ck["epoch"])

    # ------------------------------------------------------------------ the loop
    def fit(self) -> Path:
        cfg = self.cfg
        self.logs: dict[str, CsvLog] = {}
        if self.is_main:
            self.logs = {name: CsvLog(self.run_dir / name, columns) for name, columns in self._logs().items()
                         if cfg.log_steps or name != "training_step_log.csv"}  # fmt: skip
        try:
            for epoch in range(self.start_epoch, cfg.epochs):
                stop = self._run_epoch(epoch)
                if stop:
                    break
        finally:
            for log in self.logs.values():
                log.close()
            self.pool.close()
        return self.run_dir

    @staticmethod
    def _logs() -> dict[str, list[str]]:
        """Every CSV log of a run and its columns (repaired together on resume)."""
        return {"training_step_log.csv": STEP_COLUMNS, "training_epoch_log.csv": EPOCH_COLUMNS,
                "validation_dropped.csv": VAL_DROPPED_COLUMNS, "nonfinite_batches.csv": NONFINITE_COLUMNS}  # fmt: skip

    def _log(self, name: str, row: dict[str, Any]) -> None:
        if name in self.logs:
            self.logs[name].write(row)

    def _run_epoch(self, epoch: int) -> bool:
        cfg = self.cfg
        t0 = time.perf_counter()
        self.sampler.set_epoch(epoch if cfg.reshuffle_each_epoch else 0)  # published: never set_epoch
        self.train_set.set_epoch(epoch)
        if cfg.deterministic:
            self.loader.generator = loader_generator(cfg.seed, epoch)
        self.gen.train()
        self.disc.train()
        lr_g, lr_d = self.opt_g.param_groups[0]["lr"], self.opt_d.param_groups[0]["lr"]
        n_steps = min(len(self.loader), cfg.max_steps_per_epoch or len(self.loader))
        rows: list[dict[str, float]] = []
        # disable=None: no bar when stderr is not a terminal (`cmgan ablate` writes RUN/train.log), so the log
        # holds whole lines (the per-epoch summary below), not carriage-return progress output
        bar = tqdm(total=n_steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=None if self.is_main else True,
                   leave=False)  # fmt: skip
        order = list(iter(self.sampler))  # batch k holds order[k * batch_size:(k + 1) * batch_size]
        if epoch == self.start_epoch:
            self.rank_record["indices"] = order
        bs = cfg.batch_size
        for step, (clean, noisy, _) in enumerate(self.loader):
            if step >= n_steps:
                break
            runguard.check_stop(f"before step {self.global_step + 1} (epoch {epoch + 1}/{cfg.epochs})", self._all_ranks)
            ts = time.perf_counter()
            names = [self.train_set.name(i) for i in order[step * bs : (step + 1) * bs]]
            row = self.train_step(clean, noisy, names)
            self.global_step += 1
            row.update(epoch=epoch, step=self.global_step, lr_g=lr_g, lr_d=lr_d, seconds=time.perf_counter() - ts)
            self._log_bad_batch(epoch, row.pop("bad_files", None))
            rows.append(row)
            self._log("training_step_log.csv", row)
            skip_rate = np.mean([r["disc_skipped"] for r in rows])
            bar.set_postfix(loss=f"{row['loss']:.3f}", d_skip=f"{skip_rate:.0%}")
            bar.update()
            if self.nonfinite_in_a_row >= cfg.max_nonfinite_in_a_row:
                bar.close()
                raise TrainingDiverged(
                    f"{self.nonfinite_in_a_row} non-finite losses in a row (epoch {epoch}, step {self.global_step}); "
                    f"stopping. The last good checkpoint is {self.run_dir / 'last.pt'} (untouched)."
                )
        bar.close()

        val = self.validate() if self.is_main else {}
        for name, reason in val.pop("val_dropped", []):
            self._log("validation_dropped.csv", dict(epoch=epoch, name=name, reason=reason))
        self.sched_g.step()
        self.sched_d.step()
        summary = {"stop": False}
        if self.is_main:
            improved = self.stopper.update(val[cfg.es_monitor], epoch)
            epoch_row = self._epoch_row(epoch, rows, val, lr_g, lr_d, time.perf_counter() - t0)
            epoch_row.update(best=int(improved), patience_counter=self.stopper.counter,
                             early_stop=int(self.stopper.should_stop))  # fmt: skip
            ckpt = self._checkpoint(epoch)
            atomic_save(ckpt, self.run_dir / "last.pt")
            if improved:
                atomic_save(ckpt, self.run_dir / "best.pt")
            if cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0:
                atomic_save(ckpt, self.run_dir / f"epoch_{epoch + 1:03d}.pt")  # named as the console counts
            self._log("training_epoch_log.csv", epoch_row)
            summary["stop"] = bool(cfg.early_stopping and self.stopper.should_stop)
            tqdm.write(
                f"epoch {epoch + 1}/{cfg.epochs}: loss {epoch_row['loss']:.4f} val_pesq {val['val_pesq']:.3f} "
                f"val_stoi {val['val_stoi']:.3f} disc_skip {epoch_row['disc_skip_rate']:.1%}"
                + (" (best)" if improved else "")
                + (" -> early stop" if summary["stop"] else "")
            )
        self._record_ranks(epoch)
        return self._broadcast(summary)["stop"]

    def _log_bad_batch(self, epoch: int, bad_files: list[str] | None) -> None:
        """Name the files of a batch refused for non-finite input (RUN/nonfinite_batches.csv and one line)."""
        if not bad_files or not self.is_main:
            return
        reason = "non-finite RMS normalizer or samples (an all-zero noisy file?); batch skipped, model unchanged"
        for name in bad_files:
            self._log("nonfinite_batches.csv", dict(epoch=epoch, step=self.global_step, name=name, reason=reason))
        tqdm.write(f"warning: step {self.global_step} skipped: {reason}: {', '.join(bad_files)}")

    def _epoch_row(self, epoch, rows, val, lr_g, lr_d, seconds) -> dict[str, float]:
        def mean(key: str) -> float:
            vals = np.array([r[key] for r in rows], dtype=float)
            return float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan

        keys = ["loss", "loss_ri", "loss_mag", "loss_time", "loss_gan", "disc_loss", "grad_norm_g", "grad_norm_d"]
        row = {k: mean(k) for k in keys}
        row.update(val)
        row.update(
            epoch=epoch,
            disc_skip_rate=mean("disc_skipped"),
            pesq_valid_frac=mean("pesq_valid_frac"),
            nonfinite_steps=int(sum(r["nonfinite"] for r in rows)),
            **{col: int(sum(r[col] for r in rows)) for col in FAIL_COLUMNS},
            lr_g=lr_g,
            lr_d=lr_d,
            seconds=seconds,
        )
        return row

    def _record_ranks(self, epoch: int) -> None:
        """Under DDP, write which samples each rank saw and a weight checksum per rank (a sync check)."""
        if self.world == 1:
            return
        checksum = float(sum(p.detach().double().sum().item() for p in self.gen.parameters()))
        checksum_d = float(sum(p.detach().double().sum().item() for p in self.disc.parameters()))
        mine = {"rank": self.rank, "epoch": epoch, "gen": checksum, "disc": checksum_d,
                "indices": self.rank_record["indices"]}  # fmt: skip
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, mine)
        if self.is_main:
            import json

            path = self.run_dir / "ddp_ranks.json"
            history = json.loads(path.read_text()) if path.exists() else []
            history.append(gathered)
            path.write_text(json.dumps(history))


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


def main(argv: list[str] | None = None) -> int:
    """`cmgan train --config FILE [key=value ...]` or `cmgan train --resume RUN_DIR [key=value ...]`."""
    from cmgan_lib.data.validate import DataValidationError

    p = argparse.ArgumentParser(prog="cmgan train", description=main.__doc__)
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("--resume", help="run folder to continue (reads its config.yaml and last.pt)")
    p.add_argument("--overwrite", action="store_true", help="with --config: start afresh in a run folder that "
                   "holds a run (deletes its checkpoints and logs)")  # fmt: skip
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=2 pesq_strategy=masked; with "
                   f"--resume only these may change: {', '.join(sorted(RESUMABLE_KEYS))}")  # fmt: skip
    a = p.parse_args(argv)
    if bool(a.config) == bool(a.resume):
        p.error("give exactly one of --config FILE or --resume RUN_DIR")
    if a.resume and a.overwrite:
        p.error("--overwrite starts afresh; it cannot go with --resume")
    runguard.die_with_parent()  # started by `cmgan ablate`/`study`: never outlive it
    try:
        changes: list[tuple[str, Any, Any]] = []
        if a.resume:
            cfg, changes = resume_config(a.resume, a.overrides)
        else:
            cfg = load_config(a.config, a.overrides)
        main_rank = int(os.environ.get("RANK", 0)) == 0
        with runguard.run_lock(cfg.run_dir) if main_rank else contextlib.nullcontext(), runguard.stop_handlers():
            trainer = Trainer(cfg, resume=bool(a.resume), overwrite=a.overwrite)
            if trainer.is_main:
                record_resume_changes(trainer.run_dir, changes, cfg, trainer.start_epoch - 1)
            trainer.fit()
    except (DataValidationError, FileNotFoundError, RunExistsError, ValueError, runguard.RunLockedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (runguard.DiskFullError, PesqWorkerDied) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except runguard.TrainingInterrupted as exc:
        print(f"{exc}: {interrupted_note(Path(cfg.run_dir))}", file=sys.stderr)
        return exc.exit_code
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
