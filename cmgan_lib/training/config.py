"""The training config: `TrainConfig` (defaults are the published recipe), the range of every number, YAML
loading with `base:` files and key=value overrides, what `--resume` may change, and the data folder a config
names (or the embedded synthetic corpus it builds)."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cmgan_lib.core.paths import run_config
from cmgan_lib.core.strict_yaml import load_unique
from cmgan_lib.training.numerics import PRECISIONS
from cmgan_lib.training.pesq_labels import STRATEGIES

DEFAULT_CORPUS = "runs/synthetic"
VAL_SPLITS = ("valid", "test")


_POSITIVE = (lambda v: v > 0, "> 0")
_AT_LEAST_ONE = (lambda v: v >= 1, ">= 1")
_NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
# The range of every numeric TrainConfig field (tests/test_bad_inputs.py checks that none is missing).
RANGES: dict[str, tuple[Any, str]] = {
    "seed": _NON_NEGATIVE, "epochs": _AT_LEAST_ONE, "batch_size": _AT_LEAST_ONE, "cut_len": _AT_LEAST_ONE,
    "num_channel": _AT_LEAST_ONE, "num_tscb": _AT_LEAST_ONE, "ndf": _AT_LEAST_ONE,
    "n_fft": (lambda v: v >= 2, ">= 2"), "hop": _AT_LEAST_ONE,
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
    num_tscb: int = 4  # TS-Conformer blocks: the paper's 4; 1 makes the tests' seconds-long runs ~3x cheaper
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
                elif f.type in ("int", "int | None"):
                    value = _integer(value)
                else:
                    value = casts[f.type](value)
            except (TypeError, ValueError):
                kind = {"int": "an integer", "int | None": "an integer or null"}.get(f.type, f"a {f.type}")
                raise ValueError(f"invalid training config: {f.name}={value!r} is not {kind}") from None
            setattr(self, f.name, value)


def _integer(value: Any) -> int:
    """An int field's value: an int, or a float or string that is a whole number (2.0, "2"); epochs=1.5 or
    epochs=true is a ValueError (int() would truncate 1.5 to 1 and read true as 1, without a word)."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    number = float(value)
    if not number.is_integer():
        raise ValueError
    return int(number)


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


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The keys of a config file, its `base:` files' first (`chain`: the files that led here, to name a cycle)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file does not exist")
    if path.resolve() in {p.resolve() for p in chain}:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ValueError(f"{chain[-1]}: its base: files form a cycle ({cycle}); a config cannot extend itself")
    try:
        data = load_unique(path.read_text(), path) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{path}:{where} YAML syntax error: {problem}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping")
    base = data.pop("base", None)
    if base is not None:
        data = {**_read_yaml(path.parent / base, (*chain, path)), **data}
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


def synthetic_corpus_path(n_train: int, n_test: int, seed: int, n_valid: int = 0) -> Path:
    """One folder per corpus size and seed, so differently sized runs never share a half-matching corpus."""
    sizes = f"{n_train}_{n_valid}_{n_test}" if n_valid else f"{n_train}_{n_test}"
    return Path(DEFAULT_CORPUS) / f"n{sizes}_s{seed}"


def config_corpus_path(cfg: TrainConfig) -> Path:
    return synthetic_corpus_path(cfg.synthetic_n_train, cfg.synthetic_n_test, cfg.synthetic_seed,
                                 cfg.synthetic_n_valid)  # fmt: skip


def resolve_data_dir(cfg: TrainConfig, is_main: bool = True, progress: bool = False) -> Path:
    """The configured data folder, or the embedded synthetic corpus, generated on first use (by the main process
    only: `is_main` False returns its path unbuilt)."""
    if cfg.data_dir is not None:
        return Path(cfg.data_dir)
    path = config_corpus_path(cfg)
    if is_main and not (path / "manifest.csv").exists():
        from cmgan_lib.data.synthetic import ensure_corpus

        ensure_corpus(path, n_train=cfg.synthetic_n_train, n_test=cfg.synthetic_n_test, seed=cfg.synthetic_seed,
                      n_valid=cfg.synthetic_n_valid, progress=progress)  # fmt: skip
    return path
