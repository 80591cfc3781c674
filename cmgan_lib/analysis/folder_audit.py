"""`cmgan audit`: the PESQ-failure audit of any folder of clean/noisy pairs (crop rates per crop length, the
failure matrix's causes), written as CSV tables with a short summary for the console.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cmgan_lib.analysis.audit import CUT_LEN, SR, crop_pesq, load_folder_pairs
from cmgan_lib.analysis.failure_matrix import cause_of
from cmgan_lib.analysis.stats import wilson
from cmgan_lib.scoring.pesq_worker import KNOWN_REASONS


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
    from cmgan_lib.analysis.stats import batch_rate_interval

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
    from cmgan_lib.analysis.stats import format_interval

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
    lines += tiled_lines(result, top)
    lines += ["", "Estimates fail for other reasons too (silent or non-finite generator output): notebook 01 audits "
              "those on a run's checkpoints."]  # fmt: skip
    return "\n".join(lines)


def tiled_lines(result: FolderAudit, top: int = 5) -> list[str]:
    """The summary's lines on files shorter than the crop, which the loader tiles (repeats) to fill it: their
    crops are scored, but on repeated audio that no recording holds, so they are counted and named, not hidden
    in crops.csv's `tiled` column."""
    crops = result.crops
    if not len(crops) or "tiled" not in crops:
        return []
    per_file = crops.groupby("clip", sort=False).agg(samples=("clip_samples", "first"), tiled=("tiled", "any"),
                                                     failed=("cause", lambda c: int(c.notna().sum())))  # fmt: skip
    tiled = per_file[per_file.tiled].sort_values("samples", kind="stable")
    if not len(tiled):
        return []
    crop_s = result.cut_len / SR
    lines = ["", f"{len(tiled)} of {len(per_file)} files shorter than the {crop_s:g} s crop, tiled (the file repeated "
             "to fill the crop; PESQ then scores the repeats):"]  # fmt: skip
    for clip, r in tiled.head(top).iterrows():
        cause = "shorter than the crop" + ("; too short for PESQ alone (< 0.25 s)" if r.samples < SR // 4 else "")
        lines.append(f"  {clip:<30} {r.samples / SR:.2f} s: {cause}; {r.failed} failed crop(s)")
    if len(tiled) > top:
        lines.append(f"  ... and {len(tiled) - top} more (tiled=True in crops.csv)")
    return lines
