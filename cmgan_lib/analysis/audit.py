"""PESQ-failure audit of training crops (notebook 01): how often labels fail, why, and the effect on batches.

Measured under the conditions a claim talks about: the crop length a run trained on (from its config, never a
silent 2 s default), (clean, noisy) pairs and (clean, estimate) pairs from the run's own generator checkpoints,
and the failures the runs actually logged. Crops are drawn with `crop_pair`, the training loader's own crop,
from one seeded generator, so an audit reproduces. Every rate comes with a 95% interval (`cmgan_lib.analysis.stats`).
Everything returns pandas DataFrames. The failure matrix is `cmgan_lib.analysis.failure_matrix`, what the runs logged
`cmgan_lib.analysis.audit_logs`, `cmgan audit` on a folder `cmgan_lib.analysis.folder_audit`.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cmgan_lib.analysis.cache import cached_frame
from cmgan_lib.analysis.stats import batch_rate_interval, wilson
from cmgan_lib.core.audio import read_wav
from cmgan_lib.core.paths import run_config
from cmgan_lib.data.crops import crop_pair
from cmgan_lib.data.layout import manifest_rows, match_wavs, split_dir, unpaired
from cmgan_lib.scoring.pesq_worker import KNOWN_REASONS, PesqPool, score_many
from cmgan_lib.training.runs import find_runs, parse_run_name, run_checkpoints

CUT_LEN = 32000  # the published 2 s training crop at 16 kHz
SR = 16000
BATCH_SIZES = (1, 2, 4, 8, 16)
CROP_LENGTHS_S = (0.5, 1.0, 2.0, 4.0)
Estimator = Callable[[list[np.ndarray]], list[np.ndarray]]
PathOrArray = str | os.PathLike | np.ndarray


@dataclass
class ClipPair:
    """A clean/degraded clip as arrays or WAV paths (read on demand, so big sets need not fit in memory)."""

    name: str
    clean: PathOrArray
    degraded: PathOrArray
    meta: dict = field(default_factory=dict)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        clean = self.clean if isinstance(self.clean, np.ndarray) else read_wav(self.clean)
        degraded = self.degraded if isinstance(self.degraded, np.ndarray) else read_wav(self.degraded)
        return clean, degraded


def load_folder_pairs(directory: str | os.PathLike, lazy: bool = False) -> list[ClipPair]:
    """The pairs of `DIR/clean/*.wav` and `DIR/noisy/*.wav`, matched by file name, read with `read_wav`.

    `lazy=True` keeps paths and reads each clip when it is audited (the full training set is ~12k clips).
    """
    directory = Path(directory)
    clean_dir, noisy_dir = directory / "clean", directory / "noisy"
    for d in (clean_dir, noisy_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{d} is not a folder (expected DIR/clean and DIR/noisy)")
    matched = match_wavs(clean_dir, noisy_dir)
    only_c, only_n = unpaired(matched)
    if only_c or only_n:
        raise ValueError(f"unmatched files: clean only {only_c[:5]}, noisy only {only_n[:5]}")
    if not matched:
        raise FileNotFoundError(f"no .wav files in {clean_dir}")
    pairs = []
    for name, (clean, noisy) in matched:
        pair = ClipPair(Path(name).stem, clean, noisy)
        if not lazy:
            pair.clean, pair.degraded = pair.load()
        pairs.append(pair)
    return pairs


def as_clip_pairs(pairs: Sequence, metadata: pd.DataFrame | Sequence[dict] | None = None) -> list[ClipPair]:
    """Accept ClipPairs or (clean, degraded) tuples of arrays/paths; attach per-clip metadata by position."""
    out = []
    for i, p in enumerate(pairs):
        if isinstance(p, ClipPair):
            out.append(ClipPair(p.name, p.clean, p.degraded, dict(p.meta)))
        else:
            clean, degraded = p
            name = Path(clean).stem if not isinstance(clean, np.ndarray) else f"clip{i:05d}"
            out.append(ClipPair(name, clean, degraded))
    if metadata is not None:
        rows = metadata.to_dict("records") if isinstance(metadata, pd.DataFrame) else list(metadata)
        if len(rows) != len(out):
            raise ValueError(f"{len(rows)} metadata rows for {len(out)} clips")
        for pair, row in zip(out, rows, strict=True):
            pair.meta.update(row)
    return out


def training_scale(degraded: np.ndarray) -> float:
    """The published training normalization c = sqrt(N / sum(noisy^2)), applied to both signals."""
    energy = float(np.sum(np.asarray(degraded, dtype=np.float64) ** 2))
    return math.sqrt(len(degraded) / energy) if energy > 0 else float("inf")


def _iter_crops(
    pairs: list[ClipPair], crops_per_clip: int, cut_len: int, seed: int, scale_check: bool
) -> Iterator[tuple[dict, list[np.ndarray], list[np.ndarray]]]:
    """Yield (row, clean signals, degraded signals) per crop; the scaled copy rides along when asked."""
    rng = np.random.default_rng(seed)
    for i, pair in enumerate(pairs):
        clean, degraded = pair.load()
        for k in range(crops_per_clip):
            c, d = crop_pair(clean, degraded, cut_len, rng)
            row = {"clip": pair.name, "clip_index": i, "crop": k, "clip_samples": len(clean)}
            row["tiled"] = len(clean) < cut_len
            row.update(pair.meta)
            cs, ds = [c], [d]
            if scale_check:
                scale = training_scale(d)
                row["scale_c"] = scale
                with np.errstate(invalid="ignore", over="ignore"):
                    cs.append((c * np.float32(scale)).astype(c.dtype))
                    ds.append((d * np.float32(scale)).astype(d.dtype))
            yield row, cs, ds


def crop_pesq(
    pairs: Sequence,
    crops_per_clip: int = 4,
    cut_len: int | None = None,
    seed: int = 0,
    sr: int = 16000,
    metadata: pd.DataFrame | Sequence[dict] | None = None,
    pool: PesqPool | None = None,
    scale_check: bool = True,
    progress: bool = True,
    workers: int | None = None,
    estimator: Estimator | None = None,
) -> pd.DataFrame:
    """One row per training crop: PESQ-WB of (clean, degraded), valid flag and failure reason.

    `cut_len` (samples) has no default on purpose: a failure rate only means something at the crop length of the
    training it describes (0.5 s crops fail far more often than 2 s crops on speech with pauses).

    `estimator`: maps a list of noisy crops to the generator's estimates (see `make_estimator`), so the pair
    scored is (clean, estimate), as the discriminator's labels are; `scale_check` is then off.

    With `scale_check`, also PESQ of both signals times the training scale c (`pesq_scaled`,
    `reason_scaled`, `abs_diff`). Metadata columns (e.g. snr_db) pass through.

    Parallelism only changes the speed (the crops and numbers equal the serial loop's): pass a running
    `pool`, or leave it None to get a temporary `PesqPool(workers)` for this call (closed at return);
    `workers=1` scores serially in this process.
    """
    if pool is None and workers != 1:
        with PesqPool(n_workers=workers, sr=sr) as temporary:
            return crop_pesq(pairs, crops_per_clip, cut_len, seed, sr, metadata, temporary, scale_check, progress,
                             estimator=estimator)  # fmt: skip
    scale_check = scale_check and estimator is None
    if cut_len is None:
        raise ValueError("cut_len is required: audit at the crop the run trained on (runs.run_crop_seconds(run))")
    clips = as_clip_pairs(pairs, metadata)
    if crops_per_clip < 1:
        raise ValueError("crops_per_clip must be >= 1")
    if pool is not None and pool.sr != sr:
        raise ValueError(f"pool scores at {pool.sr} Hz but sr={sr}")
    total = len(clips) * crops_per_clip
    rows: list[dict] = []
    bar = tqdm(total=total, desc="PESQ of training crops", unit="crop", disable=not progress)
    per_crop = 2 if scale_check else 1

    def collect(batch_rows: list[dict], results: list) -> None:
        for j, row in enumerate(batch_rows):
            first = results[j * per_crop]
            row["pesq"], row["reason"] = first
            if scale_check:
                row["pesq_scaled"], row["reason_scaled"] = results[j * per_crop + 1]
            rows.append(row)
        bar.update(len(batch_rows))

    chunk = 4 * (pool.n_workers if pool is not None else 1)
    in_flight: deque = deque()
    batch_rows, batch_c, batch_d = [], [], []

    def flush() -> None:
        if not batch_rows:
            return
        if estimator is not None:
            batch_d[:] = estimator(list(batch_d))
        if pool is None:
            collect(list(batch_rows), score_many(batch_c, batch_d, sr))
        else:
            in_flight.append((list(batch_rows), pool.submit(list(batch_c), list(batch_d))))
            while len(in_flight) > 2:  # bounded: the audio of a few chunks in memory at most
                done_rows, handle = in_flight.popleft()
                collect(done_rows, score_reason_pairs(*handle.result()))
        batch_rows.clear()
        batch_c.clear()
        batch_d.clear()

    try:
        for row, cs, ds in _iter_crops(clips, crops_per_clip, cut_len, seed, scale_check):
            batch_rows.append(row)
            batch_c.extend(cs)
            batch_d.extend(ds)
            if len(batch_rows) >= chunk:
                flush()
        flush()
        while in_flight:
            done_rows, handle = in_flight.popleft()
            collect(done_rows, score_reason_pairs(*handle.result()))
    finally:
        bar.close()
    df = pd.DataFrame(rows)
    df["valid"] = df["reason"].isna()
    if scale_check:
        df["valid_scaled"] = df["reason_scaled"].isna()
        df["abs_diff"] = (df["pesq_scaled"] - df["pesq"]).abs()
    return df


def score_reason_pairs(raw: np.ndarray, reasons: list) -> list:
    """(score, reason) per item of a PESQ pool's result, the form the crop collectors take."""
    return list(zip(raw.tolist(), reasons, strict=True))


def _cause_columns(reasons: pd.Series) -> list[str]:
    observed = sorted({r for r in reasons.dropna().unique() if r not in KNOWN_REASONS})
    return list(KNOWN_REASONS) + observed


def failure_rates(crops: pd.DataFrame, by: str | list[str] | None = None, reason_col: str = "reason") -> pd.DataFrame:
    """Per-crop failure rate overall and by cause (`p_<cause>` columns), optionally grouped by metadata.

    Bin continuous columns first (e.g. `crops.assign(snr=pd.cut(crops.snr_db, [-10, 0, 5, 10, 20]))`).
    """
    causes = _cause_columns(crops[reason_col])

    def summarize(g: pd.DataFrame) -> dict:
        n = len(g)
        failed = g[reason_col].notna()
        out = {"n_crops": n, "n_clips": g["clip_index"].nunique(), "n_failed": int(failed.sum())}
        out["p_fail"] = failed.mean() if n else float("nan")
        for cause in causes:
            out[f"p_{cause}"] = (g[reason_col] == cause).mean() if n else float("nan")
        return out

    if by is None:
        return pd.DataFrame([summarize(crops)], index=pd.Index(["all"], name="group"))
    keys = [by] if isinstance(by, str) else list(by)
    parts = {key: summarize(g) for key, g in crops.groupby(keys, observed=True, dropna=False)}
    table = pd.DataFrame(list(parts.values()))
    table.index = (
        pd.MultiIndex.from_tuples(list(parts), names=keys)
        if len(keys) > 1
        else pd.Index([k[0] if isinstance(k, tuple) else k for k in parts], name=keys[0])
    )
    return table


def skip_rates(
    crops: pd.DataFrame,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    n_batches: int = 20000,
    seed: int = 0,
    reason_col: str = "reason",
    sampling: str = "loader",
) -> pd.DataFrame:
    """Batch-skip rate of the published `skip` strategy: implied 1 - (1 - p)^B next to a simulation.

    `sampling="loader"`: shuffled epochs of clips cut into consecutive batches of B distinct clips (last
    partial batch dropped, as the training loader does), each clip contributing one of its audited crops
    at random. On a small set this differs from the implied rate because clips do not repeat within a
    batch. `"iid"`: B crops drawn independently with replacement, which the implied formula assumes.
    """
    if sampling not in ("loader", "iid"):
        raise ValueError(f"sampling must be 'loader' or 'iid', got {sampling!r}")
    rng = np.random.default_rng(seed)
    failed = crops[reason_col].notna().to_numpy()
    p = float(failed.mean())
    order = np.argsort(crops["clip_index"].to_numpy(), kind="stable")
    clip_ids, starts, counts = np.unique(crops["clip_index"].to_numpy()[order], return_index=True, return_counts=True)
    failed_by_clip = failed[order]
    n_clips = len(clip_ids)
    rows = []
    for b in batch_sizes:
        if sampling == "iid":
            draws = rng.integers(0, len(failed), size=(n_batches, b))
            skipped = failed[draws].any(axis=1)
        elif b > n_clips:
            skipped = np.array([], dtype=bool)  # the loader cannot form one full batch
        else:
            per_epoch = n_clips // b
            n_epochs = -(-n_batches // per_epoch)
            perms = np.argsort(rng.random((n_epochs, n_clips)), axis=1)[:, : per_epoch * b]
            batches = perms.reshape(-1, b)[:n_batches]
            pick = starts[batches] + (rng.random(batches.shape) * counts[batches]).astype(int)
            skipped = failed_by_clip[pick].any(axis=1)
        n = len(skipped)
        sim = float(skipped.mean()) if n else float("nan")
        rows.append(
            {
                "batch_size": b,
                "p_fail": p,
                "implied": 1.0 - (1.0 - p) ** b,
                "simulated": sim,
                "simulated_se": math.sqrt(sim * (1 - sim) / n) if n else float("nan"),
                "n_batches": n,
                "sampling": sampling,
            }
        )
    return pd.DataFrame(rows)


def scale_invariance(crops: pd.DataFrame) -> pd.DataFrame:
    """Per crop: PESQ(x, y), PESQ(c x, c y) with the training scale c, and their absolute difference."""
    if "pesq_scaled" not in crops:
        raise ValueError("run crop_pesq(..., scale_check=True) first")
    cols = ["clip", "crop", "scale_c", "pesq", "pesq_scaled", "abs_diff", "reason", "reason_scaled"]
    return crops[cols].copy()


def scale_invariance_summary(crops: pd.DataFrame) -> pd.DataFrame:
    """One row: how many crops, the largest and mean |PESQ(c x, c y) - PESQ(x, y)|, validity changes."""
    table = scale_invariance(crops)
    both = table["reason"].isna() & table["reason_scaled"].isna()
    changed = table["reason"].isna() != table["reason_scaled"].isna()
    diffs = table.loc[both, "abs_diff"]
    return pd.DataFrame(
        [
            {
                "n_crops": len(table),
                "n_both_valid": int(both.sum()),
                "max_abs_diff": float(diffs.max()) if len(diffs) else float("nan"),
                "mean_abs_diff": float(diffs.mean()) if len(diffs) else float("nan"),
                "n_validity_changed": int(changed.sum()),
                "c_min": float(table["scale_c"].min()),
                "c_max": float(table["scale_c"].max()),
            }
        ]
    )


# --------------------------------------------------------------------------------------------- conditions


def crop_length_sweep(
    pairs: Sequence,
    lengths_s: Sequence[float] = CROP_LENGTHS_S,
    crops_per_clip: int = 2,
    seed: int = 0,
    metadata: pd.DataFrame | Sequence[dict] | None = None,
    pool: PesqPool | None = None,
    estimator: Estimator | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """`crop_pesq` at each crop length (seconds; column `crop_s`): failures depend on the crop, so a rate is only
    quoted beside the crop it was measured on."""
    frames = []
    for length in lengths_s:
        cut = int(round(float(length) * SR))
        df = crop_pesq(pairs, crops_per_clip, cut, seed, metadata=metadata, pool=pool, scale_check=False,
                       progress=progress, estimator=estimator, workers=1 if pool is None else None)  # fmt: skip
        frames.append(df.assign(crop_s=float(length)))
    return pd.concat(frames, ignore_index=True)


def make_estimator(checkpoint: str | os.PathLike | None, config: dict, batch_size: int = 4) -> Estimator:
    """Estimates as the training step makes them: RMS-normalized crops through the generator, batches of
    `batch_size`, train mode (batch statistics, as the labels in training see them), no gradient.

    `checkpoint=None`: the untrained generator, built from `config` (num_channel, num_tscb, n_fft, seed) exactly as the
    trainer builds it before step 1.
    """
    import torch

    from cmgan_lib.core.dsp import rms_normalizer
    from cmgan_lib.models import TSCNet
    from cmgan_lib.scoring.enhance import enhance_batch, generator_state_dict

    n_fft, hop, compress = (
        int(config.get("n_fft", 400)),
        int(config.get("hop", 100)),
        float(config.get("compress", 0.3)),
    )
    torch.manual_seed(int(config.get("seed", 0)))
    model = TSCNet(int(config.get("num_channel", 64)), n_fft // 2 + 1, int(config.get("num_tscb", 4)))
    if checkpoint is not None:
        model.load_state_dict(generator_state_dict(checkpoint), strict=True)
    model.train()

    @torch.no_grad()
    def estimate(noisy: list[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for lo in range(0, len(noisy), batch_size):
            x = torch.from_numpy(np.stack(noisy[lo : lo + batch_size]).astype(np.float32))
            with np.errstate(all="ignore"):
                c = rms_normalizer(x)[:, None]
            audio = enhance_batch(model, x * c, n_fft, hop, compress) / c
            out.extend(a for a in audio.numpy().astype(np.float32))
        return out

    return estimate


# --------------------------------------------------------------------------------------------- rates


def rate_table(crops: pd.DataFrame, by: Sequence[str], batch_size: int = 4, reason_col: str = "reason") -> pd.DataFrame:
    """Per group: n crops, failures overall and by cause, each a share with its 95% Wilson interval, and the
    batch-skip rate of the published rule at `batch_size` implied by the per-crop rate (interval propagated).

    Zero failures read "0 of n (95% upper bound x%)" in the `failures` column.
    """
    from cmgan_lib.analysis.stats import format_interval, format_rate

    causes = _cause_columns(crops[reason_col])
    rows = []
    for key, g in crops.groupby(list(by), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        failed = g[reason_col].notna()
        r = wilson(int(failed.sum()), len(g))
        skip, skip_lo, skip_hi = batch_rate_interval(r, batch_size)
        row = dict(zip(by, key, strict=True))
        row.update(n_crops=len(g), n_failed=r.k, p_fail=r.p, p_fail_low=r.low, p_fail_high=r.high,
                   failures=format_rate(r))  # fmt: skip
        for cause in causes:
            row[f"n_{cause}"] = int((g[reason_col] == cause).sum())
        row.update(batch_size=batch_size, skip_implied=skip, skip_low=skip_lo, skip_high=skip_hi,
                   skip=format_interval(skip, skip_lo, skip_hi))  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


# -------------------------------------------------------------------------------------- notebook 01's sets and sweeps


def dataset_label(data_dir: str | os.PathLike) -> str:
    """'synthetic corpus' when the folder was written by `make-synthetic` (manifest.csv), else 'speech corpus'."""
    return "synthetic corpus" if (Path(data_dir) / "manifest.csv").is_file() else "speech corpus"


@dataclass
class AuditSet:
    """One corpus notebook 01 crops: the name its rows carry, its (clean, noisy) pairs, manifest rows or None."""

    name: str
    pairs: list
    metadata: pd.DataFrame | None = None


def audit_pairs(data_dir: str | os.PathLike, split: str = "train"):
    """(pairs, metadata) for `crop_pesq`: the split's clean/noisy pairs and their manifest rows (or None)."""
    pairs = load_folder_pairs(split_dir(data_dir, split))
    return pairs, manifest_rows(data_dir, [p.name for p in pairs], split)


def audit_sets(data_dir: str | os.PathLike, vb_dir: str | os.PathLike | None) -> list[AuditSet]:
    """The training data's train split first (the estimates are made on it), then the real speech when given,
    named with its number of utterances."""
    pairs, meta = audit_pairs(data_dir, "train")
    sets = [AuditSet(f"{dataset_label(data_dir)} (train)", pairs, meta)]
    if vb_dir is not None:
        vb_pairs, _ = audit_pairs(vb_dir, "train")
        sets.append(AuditSet(f"real speech ({len(vb_pairs)} VB utterances)", vb_pairs))
    return sets


def crop_sweeps(sets: Sequence[AuditSet], run_root: str | os.PathLike | None, lengths_s: Sequence[float],
                crops_per_clip: int, seed: int, pool, estimate_clips: int | None,
                cache_dir: str | os.PathLike | None = None,
                estimate_lengths_s: Sequence[float] | None = None) -> pd.DataFrame:  # fmt: skip
    """Notebook 01's crops: (clean, noisy) of every set at every length, then (clean, estimate) on the first set
    from every checkpoint of the audited run (`audit_run`), when there is one, at `estimate_lengths_s` (None: every
    length). Why a separate list: the generator's cost grows with the square of the crop's frames, so 4 s crops
    cost it 4x the published 2 s ones, while PESQ on (clean, noisy) costs little at any length.

    With `cache_dir`, a sweep of the same audio, checkpoints, parameters and code is read back from
    CACHE_DIR/.cache instead of computed again (cache.py; nbval re-executing the notebook after `make study`)."""
    est_run = audit_run(run_root)
    est_lengths = list(lengths_s if estimate_lengths_s is None else estimate_lengths_s)

    def compute() -> pd.DataFrame:
        frames = [crop_length_sweep(s.pairs, lengths_s, crops_per_clip, seed, s.metadata, pool=pool)
                  .assign(dataset=s.name, pair="clean/noisy", model="-") for s in sets]  # fmt: skip
        if est_run is not None:
            frames.append(estimate_sweep(sets[0].pairs, est_run, est_lengths, 1, seed, pool, estimate_clips)
                          .assign(dataset=sets[0].name, pair=f"clean/estimate ({est_run.name})"))  # fmt: skip
        return pd.concat(frames, ignore_index=True)

    if cache_dir is None:
        return compute()
    estimates = None if est_run is None else [est_run.name, run_config(est_run), run_checkpoints(est_run)]
    inputs = [list(sets), list(lengths_s), crops_per_clip, seed, estimate_clips, estimates, est_lengths]
    frame, path, reused = cached_frame(cache_dir, "crop_sweep", inputs, compute)
    if reused:
        print(f"crop sweep read back from {path.name} (same audio, checkpoints, parameters and code)")
    return frame


def scale_audit(sets: Sequence[AuditSet], crop_s: float, crops_per_clip: int, seed: int, pool=None,
                ) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """PESQ of each crop as is and scaled by the training normalizer, at the training crop length: every crop
    (with `dataset`) and one `scale_invariance_summary` row per set."""
    cut = int(round(crop_s * 16000))
    scaled = pd.concat([crop_pesq(s.pairs, crops_per_clip, cut, seed, pool=pool, progress=False).assign(dataset=s.name)
                        for s in sets], ignore_index=True)  # fmt: skip
    table = pd.concat([scale_invariance_summary(g).assign(dataset=name) for name, g in scaled.groupby("dataset")],
                      ignore_index=True)  # fmt: skip
    return scaled, table


def audit_run(run_root: str | os.PathLike | None, prefer: str = "official") -> Path | None:
    """The run whose checkpoints the estimate audit uses: the first `prefer` run (published recipe), else any."""
    runs = find_runs(run_root) if run_root is not None else []
    preferred = [r for r in runs if parse_run_name(r.name)[0] == prefer]
    return (preferred or runs or [None])[0]


def estimate_sweep(
    pairs,
    run_dir: str | os.PathLike,
    lengths_s: Sequence[float],
    crops_per_clip: int = 1,
    seed: int = 0,
    pool=None,
    max_clips: int | None = 16,
) -> pd.DataFrame:
    """(clean, estimate) crop-length sweep for every generator a run kept (untrained, epoch_NNN.pt, ...);
    column `model` names the checkpoint. `max_clips` bounds the cost (the generator runs on every crop)."""
    cfg = run_config(run_dir)
    pairs = list(pairs)[:max_clips] if max_clips else list(pairs)
    frames = []
    for label, ckpt in run_checkpoints(run_dir):
        est = make_estimator(ckpt, cfg, batch_size=int(cfg.get("batch_size", 4)))
        df = crop_length_sweep(pairs, lengths_s, crops_per_clip, seed, pool=pool, estimator=est)
        frames.append(df.assign(model=label))
    return pd.concat(frames, ignore_index=True)
