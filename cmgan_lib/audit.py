"""PESQ-failure audit of training crops (notebook 01): how often labels fail, why, and the effect on batches.

Measured under the conditions a claim talks about: the crop length a run trained on (from its config, never a
silent 2 s default), (clean, noisy) pairs and (clean, estimate) pairs from the run's own generator checkpoints,
and the failures the runs actually logged. Crops are drawn with `crop_pair`, the training loader's own crop,
from one seeded generator, so an audit reproduces. Every rate comes with a 95% interval (`cmgan_lib.stats`).
Everything returns pandas DataFrames.
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

from cmgan_lib.audio import read_wav
from cmgan_lib.data.crops import crop_pair
from cmgan_lib.data.layout import manifest_rows, split_dir
from cmgan_lib.paths import run_config
from cmgan_lib.pesq_worker import KNOWN_REASONS, PesqPool, score_many
from cmgan_lib.runs import config_crop_seconds, find_runs, parse_run_name, run_checkpoints, runs_at, step_logs
from cmgan_lib.stats import batch_rate_interval, wilson

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
    clean_names = {p.name for p in clean_dir.glob("*.wav")}
    noisy_names = {p.name for p in noisy_dir.glob("*.wav")}
    if clean_names != noisy_names:
        only_c, only_n = sorted(clean_names - noisy_names), sorted(noisy_names - clean_names)
        raise ValueError(f"unmatched files: clean only {only_c[:5]}, noisy only {only_n[:5]}")
    if not clean_names:
        raise FileNotFoundError(f"no .wav files in {clean_dir}")
    pairs = []
    for name in sorted(clean_names):
        pair = ClipPair(Path(name).stem, clean_dir / name, noisy_dir / name)
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
                collect(done_rows, _pairs(*handle.result()))
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
            collect(done_rows, _pairs(*handle.result()))
    finally:
        bar.close()
    df = pd.DataFrame(rows)
    df["valid"] = df["reason"].isna()
    if scale_check:
        df["valid_scaled"] = df["reason_scaled"].isna()
        df["abs_diff"] = (df["pesq_scaled"] - df["pesq"]).abs()
    return df


def _pairs(raw: np.ndarray, reasons: list) -> list:
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

    `checkpoint=None`: the untrained generator, built from `config` (num_channel, n_fft, seed) exactly as the
    trainer builds it before step 1.
    """
    import torch

    from cmgan_lib.dsp import rms_normalizer
    from cmgan_lib.enhance import enhance_batch, generator_state_dict
    from cmgan_lib.models import TSCNet

    n_fft, hop, compress = (
        int(config.get("n_fft", 400)),
        int(config.get("hop", 100)),
        float(config.get("compress", 0.3)),
    )
    torch.manual_seed(int(config.get("seed", 0)))
    model = TSCNet(num_channel=int(config.get("num_channel", 64)), num_features=n_fft // 2 + 1)
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
    from cmgan_lib.stats import format_interval, format_rate

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


def observed_rates(run_root_or_dirs: str | os.PathLike | Sequence[str | os.PathLike], per: str = "run") -> pd.DataFrame:
    """Skip and failure rates the runs actually logged (training_step_log.csv), per run or per epoch.

    Columns: run, variant, seed, strategy, inject_p, crop_s, batch_size, [epoch,] steps (finite steps: the skip
    rate's denominator), nonfinite_steps (refused steps, left out), skipped, skip_rate with a Wilson interval
    (skip_low, skip_high), samples (B x steps whose labels were scored), failed (labels lost to any cause) with an
    interval, and failed labels per cause (`pesq_fail_*` sums). Reads every run given (all variants), not one.
    """
    if per not in ("run", "epoch"):
        raise ValueError(f"per must be 'run' or 'epoch', got {per!r}")
    rows = []
    for d in runs_at(run_root_or_dirs):
        log = d / "training_step_log.csv"
        if not log.is_file():
            continue
        steps = pd.read_csv(log)
        if steps.empty:
            continue
        cfg = run_config(d)
        variant, seed = parse_run_name(d.name)
        batch = int(cfg.get("batch_size", 4))
        causes = [c for c in steps.columns if c.startswith("pesq_fail_")]
        base = dict(run=d.name, variant=variant, seed=seed, strategy=cfg.get("pesq_strategy", "skip"),
                    inject_p=float(cfg.get("pesq_fail_inject", 0.0)),
                    crop_s=config_crop_seconds(cfg, CUT_LEN / SR), batch_size=batch)  # fmt: skip
        groups = [(None, steps)] if per == "run" else list(steps.groupby("epoch", sort=True))
        for epoch, g in groups:
            # A step refused as non-finite also logs disc_skipped = 1, but PESQ did not cause it: skips count on
            # finite steps only. Labels count where they were scored (pesq_valid_frac is NaN on a batch refused
            # before the forward pass; a non-finite loss still scored its labels).
            finite = g["nonfinite"].fillna(0) == 0 if "nonfinite" in g else pd.Series(True, index=g.index)
            scored = g["pesq_valid_frac"].notna()
            skipped = wilson(int(g.loc[finite, "disc_skipped"].sum()), int(finite.sum()))
            lost = int(round(float(((1 - g.loc[scored, "pesq_valid_frac"]) * batch).sum())))
            failed = wilson(lost, int(scored.sum()) * batch)
            row = dict(base)
            if per == "epoch":
                row["epoch"] = int(epoch)
            row.update(steps=skipped.n, nonfinite_steps=int((~finite).sum()), skipped=skipped.k, skip_rate=skipped.p,
                       skip_low=skipped.low, skip_high=skipped.high, samples=failed.n, failed=failed.k,
                       fail_rate=failed.p, fail_low=failed.low, fail_high=failed.high)  # fmt: skip
            row.update({c: int(g[c].sum()) for c in causes})
            rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- failure matrix
# Issue 20: the fix document names four causes of PESQ failures ("silent audio segments, very low SNR samples,
# numerical precision issues in the PESQ library, edge cases in audio preprocessing"). The matrix puts each on an
# axis, on the same training crops, and classifies every failure by cause and by pesq's own error code.

SNRS_DB = (-10.0, -5.0, 0.0, 5.0, 10.0, 20.0)
GAINS = (1.0, 1e-2, 1e-4, 1e-6, 0.0)
FORMS = ("float32", "float64", "int16", "clipped")
FORM_GAINS = (1.0, 1e-3, 1e-6)
EDGE_CASES = (
    "too_short_crop", "nan_in_estimate", "inf_in_estimate", "nan_in_reference", "dc_offset_estimate",
    "dc_offset_reference", "pure_noise_estimate", "silent_reference",
)  # fmt: skip
SPEECH_FRACTION_EDGES = (0.0, 0.05, 0.25, 0.5, 0.75, 1.0)
SHORT_CROP = 3200  # 0.2 s: under the 1/4 s PESQ accepts
AXES = ("as is", "input SNR (dB)", "estimate level (gain)", "numeric form", "edge case", "speech fraction")
# The fix document's four causes and the axis that tests each.
DOCUMENT_CAUSES = {
    "silent audio segments": "speech fraction",
    "very low SNR samples": "input SNR (dB)",
    "numerical precision issues in the PESQ library": "numeric form",
    "edge cases in audio preprocessing": "edge case",
}
# pesq's `on_error=PesqError.RETURN_VALUES` codes (pesq 0.0.4, cypesq); NaN is what it returns for an all-zero or
# NaN estimate, where no code is set (the C code's level alignment divides by zero).
PESQ_CODES = {
    -1: "UNKNOWN", -2: "INVALID_SAMPLE_RATE", -3: "OUT_OF_MEMORY_REF", -4: "OUT_OF_MEMORY_DEG",
    -5: "OUT_OF_MEMORY_TMP", -6: "BUFFER_TOO_SHORT", -7: "NO_UTTERANCES_DETECTED",
}  # fmt: skip
Case = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def cause_of(reason: str | None) -> str | None:
    """The matrix's cause of a failure: the classifier's reason, with pesq_worker's 'other:' prefix dropped, so a
    failure PESQ's own errors reveal (e.g. 'nonfinite_reference') is a cause of its own, not 'other'."""
    if reason is None or (isinstance(reason, float) and math.isnan(reason)):
        return None
    return reason.removeprefix("other:")


def loudest_frame_energy(clip: np.ndarray, frame: int = 320) -> float:
    """Mean-square energy of the loudest 20 ms frame of a whole clip (the speech-fraction reference level)."""
    x = np.asarray(clip, dtype=np.float64)
    pad = np.pad(x, (0, (-len(x)) % frame))
    return float(np.max(np.mean(pad.reshape(-1, frame) ** 2, axis=1))) if len(x) else 0.0


def speech_fraction(crop: np.ndarray, clip_peak: float, floor_db: float = -40.0, frame: int = 320) -> float:
    """Share of the crop's 20 ms frames within `floor_db` of the clip's loudest frame: 0 for a crop that landed in
    a pause (relative to the clip, so a quiet clip is not all 'silence'), 1 for a crop of continuous speech."""
    x = np.asarray(crop, dtype=np.float64)
    n = len(x) // frame
    if n == 0 or clip_peak <= 0 or not np.all(np.isfinite(x)):
        return float("nan") if n == 0 or not np.all(np.isfinite(x)) else 0.0
    energy = np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)
    return float(np.mean(energy > clip_peak * 10 ** (floor_db / 10)))


def mix_at_crop_snr(clean: np.ndarray, noisy: np.ndarray, snr_db: float) -> np.ndarray:
    """clean + g * (noisy - clean) with g chosen so the crop measures `snr_db` (the clip's own noise, rescaled).

    A silent clean crop has no SNR: the noise stays at its own level (the reference is then silent anyway)."""
    c = np.asarray(clean, dtype=np.float64)
    noise = np.asarray(noisy, dtype=np.float64) - c
    pc, pn = float(np.sum(c**2)), float(np.sum(noise**2))
    g = math.sqrt(pc / (pn * 10 ** (snr_db / 10))) if pc > 0 and pn > 0 else 1.0
    return (c + g * noise).astype(np.float32)


def numeric_form(x: np.ndarray, form: str) -> np.ndarray:
    """The estimate in one numeric form: float32, float64, int16-rounded (what a 16-bit file holds, back as
    float), or hard-clipped at a quarter of its peak (12 dB of clipping)."""
    x = np.asarray(x, dtype=np.float64)
    if form == "float32":
        return x.astype(np.float32)
    if form == "float64":
        return x
    if form == "int16":
        return (np.clip(np.round(x * 32767.0), -32768, 32767) / 32767.0).astype(np.float32)
    if form == "clipped":
        a = 0.25 * float(np.max(np.abs(x))) if len(x) else 0.0
        return np.clip(x, -a, a).astype(np.float32)
    raise ValueError(f"unknown numeric form {form!r}; expected one of {FORMS}")


def _edge_case(name: str) -> Case:
    def nonfinite(x: np.ndarray, value: float) -> np.ndarray:
        y = np.array(x, dtype=np.float32, copy=True)
        y[len(y) // 2] = value
        return y

    def dc(x: np.ndarray) -> np.ndarray:
        return (x + np.float32(0.5 * float(np.max(np.abs(x))))).astype(np.float32)

    cases: dict[str, Case] = {
        "too_short_crop": lambda c, n, r: (c[:SHORT_CROP], n[:SHORT_CROP]),
        "nan_in_estimate": lambda c, n, r: (c, nonfinite(n, np.nan)),
        "inf_in_estimate": lambda c, n, r: (c, nonfinite(n, np.inf)),
        "nan_in_reference": lambda c, n, r: (nonfinite(c, np.nan), n),
        "dc_offset_estimate": lambda c, n, r: (c, dc(n)),
        "dc_offset_reference": lambda c, n, r: (dc(c), n),
        "pure_noise_estimate": lambda c, n, r: (c, (r.standard_normal(len(n)) * np.sqrt(np.mean(
            np.asarray(n, dtype=np.float64) ** 2))).astype(np.float32)),
        "silent_reference": lambda c, n, r: (np.zeros_like(c), n),
    }  # fmt: skip
    if name not in cases:
        raise ValueError(f"unknown edge case {name!r}; expected one of {EDGE_CASES}")
    return cases[name]


def matrix_cases(
    snrs_db: Sequence[float] = SNRS_DB,
    gains: Sequence[float] = GAINS,
    forms: Sequence[str] = FORMS,
    form_gains: Sequence[float] = FORM_GAINS,
    edge_cases: Sequence[str] = EDGE_CASES,
) -> list[tuple[str, str, float, Case]]:
    """(axis, level, order, make_pair) of every condition; make_pair(clean crop, noisy crop, rng) -> (reference,
    estimate). The estimate is the noisy crop transformed: what the discriminator's first labels score."""
    cases: list[tuple[str, str, float, Case]] = [("as is", "clean/noisy", 0.0, lambda c, n, r: (c, n))]
    for s in snrs_db:
        cases.append(("input SNR (dB)", f"{s:g}", float(s), lambda c, n, r, s=s: (c, mix_at_crop_snr(c, n, s))))
    for g in gains:
        cases.append(("estimate level (gain)", f"{g:g}", -float(g),
                      lambda c, n, r, g=g: (c, (np.asarray(n, dtype=np.float64) * g).astype(np.float32))))  # fmt: skip
    for k, form in enumerate(forms):
        numeric_form(np.zeros(1), form)  # refuse an unknown form before any crop is cut
        for j, g in enumerate(form_gains):

            def make(c, n, r, g=g, f=form):
                return c, numeric_form(np.asarray(n, dtype=np.float64) * g, f)

            cases.append(("numeric form", f"{form}, gain {g:g}", k * 10.0 + j, make))
    for k, name in enumerate(edge_cases):
        cases.append(("edge case", name, float(k), _edge_case(name)))
    return cases


def pesq_error_code(reference: np.ndarray, estimate: np.ndarray, sr: int = 16000) -> float:
    """What pesq returns with `on_error=PesqError.RETURN_VALUES`: the score, a negative error code (PESQ_CODES), or
    NaN where pesq computes no code (an all-zero or NaN estimate); an exception it still raises reads as NaN."""
    import pesq

    try:
        with np.errstate(all="ignore"):
            return float(pesq.pesq(sr, reference, estimate, "wb", on_error=pesq.PesqError.RETURN_VALUES))
    except Exception:  # noqa: BLE001 - the point is what a caller gets back, not why
        return float("nan")


def published_pesq_loss(reference: np.ndarray, estimate: np.ndarray, sr: int = 16000, return_values: bool = False):
    """`pesq_loss` as CMGAN, MP-SENet and SEMamba write it: PESQ-WB in a bare try/except that returns -1, so their
    `if -1 in pesq_score` check sees every exception. With `return_values` (pesq's `on_error=RETURN_VALUES`, which
    none of them uses) failures come back as negative codes or NaN instead, and the -1 check misses them."""
    import pesq

    mode = pesq.PesqError.RETURN_VALUES if return_values else pesq.PesqError.RAISE_EXCEPTION
    try:
        with np.errstate(all="ignore"):
            return pesq.pesq(sr, reference, estimate, "wb", on_error=mode)
    except Exception:  # noqa: BLE001 - the published bare `except:`
        return -1


def _matrix_pairs(pairs, cut_len, crops_per_clip, seed, cases, max_clips):
    """Per clip: its rows and (reference, estimate) arrays for every crop x case."""
    rng = np.random.default_rng(seed)
    for i, pair in enumerate(pairs[:max_clips] if max_clips else pairs):
        clean, noisy = pair.load()
        peak = loudest_frame_energy(clean)
        rows, refs, ests = [], [], []
        for k in range(crops_per_clip):
            c, n = crop_pair(clean, noisy, cut_len, rng)
            c, n = np.asarray(c, dtype=np.float32), np.asarray(n, dtype=np.float32)
            frac = speech_fraction(c, peak)
            case_rng = np.random.default_rng([seed, i, k])
            for axis, level, order, make in cases:
                ref, est = make(c, n, case_rng)
                rows.append({"clip": pair.name, "clip_index": i, "crop": k, "axis": axis, "level": level,
                             "order": order, "speech_fraction": frac, "samples": len(ref)})  # fmt: skip
                refs.append(ref)
                ests.append(est)
        yield rows, refs, ests


def failure_matrix(
    pairs: Sequence,
    cut_len: int,
    crops_per_clip: int = 1,
    max_clips: int | None = None,
    seed: int = 0,
    pool: PesqPool | None = None,
    dataset: str = "audit",
    progress: bool = False,
    **axes,
) -> pd.DataFrame:
    """One row per crop x condition of the matrix: PESQ of (reference, estimate), the classified `reason`, its
    `cause` (`cause_of`), pesq's own `pesq_code` for failures (RETURN_VALUES), and the reference crop's
    `speech_fraction`. `axes`: the levels of `matrix_cases` (snrs_db, gains, forms, form_gains, edge_cases).

    Cost: (1 + len(snrs) + len(gains) + len(forms) * len(form_gains) + len(edges)) PESQ calls per crop, 32 at the
    defaults; a failure costs one more call (its code). Sizes are parameters so notebooks stay fast."""
    if cut_len is None or int(cut_len) < 1:
        raise ValueError("cut_len is required (samples): audit at the crop the runs trained on")
    if crops_per_clip < 1:
        raise ValueError("crops_per_clip must be >= 1")
    clips = as_clip_pairs(pairs)
    cases = matrix_cases(**axes)
    total = len(clips[:max_clips] if max_clips else clips) * crops_per_clip * len(cases)
    bar = tqdm(total=total, desc=f"failure matrix ({dataset})", unit="pair", disable=not progress)
    out: list[dict] = []

    def collect(rows, refs, ests, results) -> None:
        for row, ref, est, (score, reason) in zip(rows, refs, ests, results, strict=True):
            row.update(pesq=score, reason=reason, cause=cause_of(reason))
            row["pesq_code"] = pesq_error_code(ref, est) if reason is not None else score
            out.append(row)
        bar.update(len(rows))

    in_flight: deque = deque()
    try:
        for rows, refs, ests in _matrix_pairs(clips, int(cut_len), crops_per_clip, seed, cases, max_clips):
            if pool is None:
                collect(rows, refs, ests, score_many(refs, ests))
                continue
            in_flight.append((rows, refs, ests, pool.submit(refs, ests)))
            while len(in_flight) > 2:
                rows_, refs_, ests_, handle = in_flight.popleft()
                collect(rows_, refs_, ests_, _pairs(*handle.result()))
        while in_flight:
            rows_, refs_, ests_, handle = in_flight.popleft()
            collect(rows_, refs_, ests_, _pairs(*handle.result()))
    finally:
        bar.close()
    df = pd.DataFrame(out)
    df.insert(0, "dataset", dataset)
    df["valid"] = df["reason"].isna()
    return df


def failure_matrices(sets: Sequence, cut_len: int, crops_per_clip: int = 1, max_clips: int | None = None,
                     seed: int = 0, pool: PesqPool | None = None, **axes) -> pd.DataFrame:  # fmt: skip
    """`failure_matrix` of every audit set (objects with `name` and `pairs`, e.g. `audit_sets`)."""
    return pd.concat([failure_matrix(s.pairs, cut_len, crops_per_clip, max_clips, seed, pool, dataset=s.name, **axes)
                      for s in sets], ignore_index=True)  # fmt: skip


def _speech_fraction_rows(matrix: pd.DataFrame, edges: Sequence[float] = SPEECH_FRACTION_EDGES) -> pd.DataFrame:
    """The 'as is' crops again, on the speech-fraction axis (level: the bin of the reference crop's fraction)."""
    base = matrix[matrix["axis"] == "as is"].copy()
    bins = pd.cut(base["speech_fraction"], list(edges), right=False, include_lowest=True)
    last = base["speech_fraction"] >= edges[-1]
    labels = [f"{iv.left:g}-{iv.right:g}" if isinstance(iv, pd.Interval) else "n/a" for iv in bins]
    orders = [float(iv.left) if isinstance(iv, pd.Interval) else 9.0 for iv in bins]
    base["level"] = [f"{edges[-1]:g}" if is_last else lab for lab, is_last in zip(labels, last, strict=True)]
    base["order"] = [float(edges[-1]) if is_last else o for o, is_last in zip(orders, last, strict=True)]
    base["axis"] = "speech fraction"
    return base


def matrix_table(matrix: pd.DataFrame, batch_size: int = 4) -> pd.DataFrame:
    """Per dataset x axis x level: failures overall and by cause with 95% Wilson intervals, and the published-rule
    skip rate at `batch_size` they imply (`rate_table` on `cause`); the speech-fraction axis bins the 'as is'
    crops by their reference's speech fraction."""
    full = pd.concat([matrix, _speech_fraction_rows(matrix)], ignore_index=True)
    table = rate_table(full, by=["dataset", "axis", "order", "level"], batch_size=batch_size, reason_col="cause")
    axis_rank = {a: k for k, a in enumerate(AXES)}
    table = table.assign(_a=table["axis"].map(axis_rank)).sort_values(["dataset", "_a", "order"], kind="stable")
    return table.drop(columns=["_a"]).rename(columns={"order": "level_order"}).reset_index(drop=True)


def matrix_causes(matrix: pd.DataFrame) -> list[str]:
    """Every cause the matrix can name: the classifier's known causes, then any new one it observed."""
    observed = sorted({c for c in matrix["cause"].dropna().unique() if c not in KNOWN_REASONS})
    return list(KNOWN_REASONS) + observed


def cause_verdicts(matrix: pd.DataFrame, max_conditions: int = 4) -> pd.DataFrame:
    """One generated verdict per cause: 'causes failures when <axis> is <level> (k of n ...)' for the conditions
    where it occurs (most frequent first), or 'no failure in n (95% upper bound x%)' over every scored pair."""
    from cmgan_lib.stats import format_rate

    full = pd.concat([matrix, _speech_fraction_rows(matrix)], ignore_index=True)
    full = full[full["axis"] != "as is"]  # the same crops as the speech-fraction axis
    rows = []
    for cause in matrix_causes(matrix):
        hit = full["cause"] == cause
        n_total = int((matrix["axis"] != "as is").sum())
        if not hit.any():
            verdict = f"no failure in {format_rate(wilson(0, n_total)).removeprefix('0 of ')}"
            rows.append(dict(cause=cause, failures=0, pairs=n_total, verdict=verdict))
            continue
        parts = []
        groups = full.groupby(["axis", "level"], sort=False)
        counts = [(a, lev, int((g["cause"] == cause).sum()), len(g)) for (a, lev), g in groups]
        counts = sorted([c for c in counts if c[2]], key=lambda c: (-c[2] / c[3], c[0], c[1]))
        for axis, level, k, n in counts[:max_conditions]:
            parts.append(f"{axis} is {level} ({format_rate(wilson(k, n))})")
        more = f"; and {len(counts) - max_conditions} more condition(s)" if len(counts) > max_conditions else ""
        verdict = "causes failures when " + "; ".join(parts) + more
        rows.append(dict(cause=cause, failures=int(hit.sum()), pairs=len(full), verdict=verdict))
    return pd.DataFrame(rows)


def axis_verdicts(matrix: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and axis: the levels where PESQ fails with their causes, or 'no failure in n (95% upper bound)'."""
    from cmgan_lib.stats import format_rate

    full = pd.concat([matrix, _speech_fraction_rows(matrix)], ignore_index=True)
    rows = []
    for (dataset, axis), g in full.groupby(["dataset", "axis"], sort=False):
        failed = g[g["cause"].notna()]
        if failed.empty:
            bound = format_rate(wilson(0, len(g))).removeprefix("0 of ")
            rows.append(dict(dataset=dataset, axis=axis, verdict=f"no failure in {bound}"))
            continue
        parts = []
        for level, lg in g.sort_values("order").groupby("level", sort=False):
            k = int(lg["cause"].notna().sum())
            if k:
                causes = ", ".join(f"{c} {n}" for c, n in lg["cause"].value_counts().items())
                parts.append(f"{level}: {format_rate(wilson(k, len(lg)))} [{causes}]")
        rows.append(dict(dataset=dataset, axis=axis, verdict="failures at " + "; ".join(parts)))
    return pd.DataFrame(rows)


def minus_one_table(matrix: pd.DataFrame) -> pd.DataFrame:
    """Per cause: how the descendants' `-1 in pesq_score` check sees its failures. Their `pesq_loss` turns every
    exception into -1 (caught); with pesq's RETURN_VALUES a failure comes back as its code (PESQ_CODES) or NaN,
    and only -1 is caught: the rest pass into the labels as (code - 1) / 3.5 or NaN."""
    failed = matrix[matrix["cause"].notna()]
    rows = []
    for cause, g in failed.groupby("cause", sort=True):
        codes = g["pesq_code"]
        named = codes.map(lambda v: "NaN (no code)" if not np.isfinite(v) else PESQ_CODES.get(int(v), f"{v:g}"))
        caught = int((codes == -1).sum())
        rows.append(dict(cause=cause, failures=len(g), pesq_codes=", ".join(f"{c} {n}" for c, n in
                                                                            named.value_counts().items()),
                         caught_by_minus_one_default=len(g), caught_by_minus_one_return_values=caught,
                         missed_with_return_values=len(g) - caught))  # fmt: skip
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- `cmgan audit`


@dataclass
class FolderAudit:
    """What `cmgan audit` measured on a folder of clean/noisy pairs (every table also goes to CSV)."""

    data_dir: Path
    cut_len: int
    batch_size: int
    crops: pd.DataFrame  # one row per crop: clip, crop, pesq, reason, cause
    causes: pd.DataFrame  # per cause: failures with a Wilson interval
    rules: pd.DataFrame  # per label rule: share of batches of B it changes, with an interval
    files: pd.DataFrame  # per file: failed crops, worst first


def audit_folder(
    data_dir: str | os.PathLike,
    cut_len: int = CUT_LEN,
    batch_size: int = 4,
    crops_per_clip: int = 4,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> FolderAudit:
    """PESQ failures of (clean, noisy) training crops of any CMGAN-family user's folder (DIR/clean + DIR/noisy, or
    DIR/train/clean + DIR/train/noisy), cut by the published loader's crop, and what they do to batches of B under
    each label rule: `skip` (CMGAN: the update is skipped) and `mpsenet` (MP-SENet, SEMamba: the fake term is
    zeroed) whenever any crop fails, `masked` only when all do; `batch_mean` never."""
    from cmgan_lib.stats import batch_rate_interval

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if cut_len < 1:
        raise ValueError(f"--cut-len must be positive, got {cut_len} samples")
    if crops_per_clip < 1:
        raise ValueError(f"--crops-per-clip must be >= 1, got {crops_per_clip}")
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    folder = root / "train" if (root / "train" / "clean").is_dir() else root
    pairs = load_folder_pairs(folder, lazy=True)
    crops = crop_pesq(pairs, crops_per_clip, cut_len, seed, scale_check=False, progress=progress, workers=workers)
    crops["cause"] = crops["reason"].map(cause_of)
    n = len(crops)
    causes = []
    for cause in list(KNOWN_REASONS) + sorted({c for c in crops["cause"].dropna() if c not in KNOWN_REASONS}):
        r = wilson(int((crops["cause"] == cause).sum()), n)
        causes.append(dict(cause=cause, failed=r.k, crops=n, rate=r.p, low=r.low, high=r.high, text=str(r)))
    overall = wilson(int(crops["cause"].notna().sum()), n)
    causes.append(dict(cause="any", failed=overall.k, crops=n, rate=overall.p, low=overall.low, high=overall.high,
                       text=str(overall)))  # fmt: skip
    est, lo, hi = batch_rate_interval(overall, batch_size)
    all_fail = [overall.p**batch_size if n else math.nan, overall.low**batch_size, overall.high**batch_size]
    rules = pd.DataFrame([
        dict(rule="skip", effect="discriminator update skipped", share=est, low=lo, high=hi),
        dict(rule="mpsenet", effect="fake term zeroed (real term still trained)", share=est, low=lo, high=hi),
        dict(rule="masked", effect="update skipped (every label failed)", share=all_fail[0], low=all_fail[1],
             high=all_fail[2]),
        dict(rule="batch_mean", effect="never skipped (failed labels take the batch mean)", share=0.0, low=0.0,
             high=0.0),
    ]).assign(batch_size=batch_size)  # fmt: skip
    files = (crops.assign(failed=crops["cause"].notna())
             .groupby("clip", sort=False)
             .agg(failed=("failed", "sum"), crops=("failed", "size"),
                  causes=("cause", lambda s: ", ".join(f"{c} {k}" for c, k in s.value_counts().items())))
             .reset_index().sort_values(["failed", "clip"], ascending=[False, True], kind="stable")
             .reset_index(drop=True))  # fmt: skip
    return FolderAudit(folder, int(cut_len), int(batch_size), crops, pd.DataFrame(causes), rules, files)


def write_folder_audit(result: FolderAudit, out_dir: str | os.PathLike) -> list[Path]:
    """crops.csv (every crop), causes.csv, label_rules.csv and files.csv under `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, df in (("crops.csv", result.crops), ("causes.csv", result.causes), ("label_rules.csv", result.rules),
                     ("files.csv", result.files)):  # fmt: skip
        df.to_csv(out / name, index=False)
        paths.append(out / name)
    return paths


def folder_audit_summary(result: FolderAudit, top: int = 5) -> str:
    """The one-screen summary `cmgan audit` prints."""
    from cmgan_lib.stats import format_interval

    n_files = result.crops["clip"].nunique()
    lines = [f"PESQ-WB of (clean, noisy) training crops: {result.data_dir}",
             f"{n_files} files x {len(result.crops) // max(1, n_files)} crops of {result.cut_len / SR:g} s "
             "(the published loader's random crop; short files tiled)", "",
             "failed crops by cause (95% Wilson interval):"]  # fmt: skip
    for r in result.causes.itertuples():
        lines.append(f"  {r.cause:<30} {r.text}")
    lines += ["", f"batches of {result.batch_size} affected, per label rule (independent crops assumed):"]
    for r in result.rules.itertuples():
        lines.append(f"  {r.rule:<11} {format_interval(r.share, r.low, r.high):<28} {r.effect}")
    worst = result.files[result.files["failed"] > 0].head(top)
    lines += ["", f"files whose crops fail most (top {top}):" if len(worst) else "no file has a failed crop"]
    for r in worst.itertuples():
        lines.append(f"  {r.clip:<30} {int(r.failed)} of {int(r.crops)} crops  ({r.causes})")
    lines += ["", "Estimates fail for other reasons too (silent or non-finite generator output): notebook 01 audits "
              "those on a run's checkpoints."]  # fmt: skip
    return "\n".join(lines)


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
                crops_per_clip: int, seed: int, pool, estimate_clips: int | None) -> pd.DataFrame:  # fmt: skip
    """Notebook 01's crops: (clean, noisy) of every set at every length, then (clean, estimate) on the first set
    from every checkpoint of the audited run (`audit_run`), when there is one."""
    frames = [crop_length_sweep(s.pairs, lengths_s, crops_per_clip, seed, s.metadata, pool=pool)
              .assign(dataset=s.name, pair="clean/noisy", model="-") for s in sets]  # fmt: skip
    est_run = audit_run(run_root)
    if est_run is not None:
        frames.append(estimate_sweep(sets[0].pairs, est_run, lengths_s, 1, seed, pool, estimate_clips)
                      .assign(dataset=sets[0].name, pair=f"clean/estimate ({est_run.name})"))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


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


def skipped_batch_logged_value() -> float:
    """What our trainer logs as disc_loss for a batch whose every PESQ failed: runs the real label path.

    `make_labels` under the published `skip` strategy, then `discriminator_loss` (None = no update), then
    the trainer's logging rule (`disc_loss.item() if disc_loss is not None else NaN`).
    """
    import torch

    from cmgan_lib.pesq_labels import discriminator_loss, make_labels

    labels = make_labels(np.array([np.nan, np.nan]), ["silent_reference", "pesq_failed"], strategy="skip")
    mag = torch.zeros(2, 1, 4, 4)
    loss = discriminator_loss(torch.nn.Identity(), mag, mag, labels)
    return loss.item() if loss is not None else math.nan


def disc_loss_stats(train_log: str | os.PathLike | Sequence[str | os.PathLike] | None) -> dict:
    """From training logs (run folders, a folder of them, or training_step_log.csv files): the smallest positive
    per-step disc_loss, the number of skipped steps and what they logged, and the last epoch's mean disc_loss.

    Empty dict when `train_log` is None or holds no step log.
    """
    if train_log is None:
        return {}
    steps = [df for _, df in step_logs(train_log)]
    if not steps:
        return {}
    last_means = []
    for df in steps:
        last = df[df["epoch"] == df["epoch"].max()]["disc_loss"]
        last_means.append(float(np.nanmean(last)) if last.notna().any() else math.nan)
    df = pd.concat(steps, ignore_index=True)
    loss = df["disc_loss"].astype(float)
    skipped = df["disc_skipped"].astype(bool) if "disc_skipped" in df else loss.isna()
    positive = loss[(loss > 0) & ~skipped]
    logged = loss[skipped]
    return {
        "n_steps": len(df),
        "n_skipped": int(skipped.sum()),
        "skipped_logged_nan": bool(logged.isna().all()) if len(logged) else None,
        "min_positive": float(positive.min()) if len(positive) else math.nan,
        "last_epoch_mean": float(np.nanmean(last_means)) if np.isfinite(last_means).any() else math.nan,
    }


def last_epoch_disc_loss(run_root: str | os.PathLike, strategy: str = "batch_mean") -> pd.DataFrame:
    """Per run trained with `strategy` (read from config.yaml): mean disc_loss of the last epoch's updates with a
    95% t interval over its steps (claim 4 is about disc_loss 'after the fix'), with the run's crop length and
    injected failure rate (`inject_p`: a loss under imposed failures is no evidence about the fix)."""
    from cmgan_lib.stats import mean_interval

    rows = []
    for run in find_runs(run_root):
        cfg = run_config(run)
        log = run / "training_step_log.csv"
        if cfg.get("pesq_strategy") != strategy or not log.is_file():
            continue
        steps = pd.read_csv(log)
        last = steps[steps["epoch"] == steps["epoch"].max()]
        m = mean_interval(last["disc_loss"].dropna())
        crop = config_crop_seconds(cfg)
        rows.append(dict(run=run.name, epochs=int(steps["epoch"].max()) + 1, crop_s=crop,
                         inject_p=float(cfg.get("pesq_fail_inject", 0.0) or 0.0), n_steps=m.n, mean=m.mean,
                         low=m.low, high=m.high))  # fmt: skip
    return pd.DataFrame(rows, columns=["run", "epochs", "crop_s", "inject_p", "n_steps", "mean", "low", "high"])
