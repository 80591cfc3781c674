"""The `cmgan evaluate` command: enhance a test set, score it in parallel, write CSVs, compare with the paper.

Every file gets a row in `metrics_per_file.csv`; a file that cannot be scored (missing counterpart, wrong
sample rate, silent reference, PESQ failure...) keeps its row with a `reason` and is left out of the
summary, which says how many were excluded. Noisy and enhanced means are taken over the same files.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cmgan_lib import SAMPLE_RATE
from cmgan_lib.core.audio import AudioError, read_wav, write_wav
from cmgan_lib.data.layout import manifest_rows, match_wavs
from cmgan_lib.scoring.metrics import METRIC_NAMES, MetricsError, compute_metrics
from cmgan_lib.scoring.reference_check import PUBLISHED_NOISY
from cmgan_lib.training.runs import resolve_checkpoint, run_identity

# Table 1 of Cao, Abdulatif & Yang (Interspeech 2022): PESQ, CSIG, CBAK, COVL, SSNR, STOI.
PUBLISHED: dict[str, tuple[float, ...]] = {
    "CMGAN": (3.41, 4.63, 3.94, 4.12, 11.10, 0.96),
    "Noisy": tuple(PUBLISHED_NOISY.values()),  # one source: the reference check prints it too
}
NOISY_PREFIX = "noisy_"
PER_FILE_CSV = "metrics_per_file.csv"
SUMMARY_CSV = "metrics_summary.csv"

# (clean, noisy) folder names accepted under --test-dir, in order of preference.
_LAYOUTS: tuple[tuple[str, str], ...] = (
    ("clean", "noisy"),
    ("test/clean", "test/noisy"),
    ("clean_testset_wav", "noisy_testset_wav"),
    ("test/clean_testset_wav", "test/noisy_testset_wav"),
)


@dataclass(frozen=True)
class Pair:
    """One test utterance: its files (None when missing) and, when enhancement already failed, why."""

    name: str
    clean: Path | None
    noisy: Path | None
    enhanced: Path | None = None
    reason: str | None = None
    detail: str | None = None


def published_table() -> pd.DataFrame:
    """The paper's CMGAN and Noisy rows, indexed by system, columns METRIC_NAMES."""
    df = pd.DataFrame.from_dict(PUBLISHED, orient="index", columns=list(METRIC_NAMES))
    df.index.name = "system"
    return df


def resolve_test_dir(test_dir: str | os.PathLike) -> tuple[Path, Path]:
    """The (clean, noisy) folders of a test set: DIR/clean + DIR/noisy, or DIR/test/..., or the VB names."""
    root = Path(test_dir)
    for clean, noisy in _LAYOUTS:
        if (root / clean).is_dir() and (root / noisy).is_dir():
            return root / clean, root / noisy
    tried = ", ".join(f"{c}/ + {n}/" for c, n in _LAYOUTS)
    raise FileNotFoundError(f"{root}: no clean/noisy test folders found (tried {tried})")


def pair_files(clean_dir: Path, noisy_dir: Path, enhanced_dir: Path | None = None) -> list[Pair]:
    """Match files by name across folders; a name present in only some folders still gets a Pair."""
    return [Pair(name, clean, noisy, enhanced) for name, (clean, noisy, enhanced) in
            match_wavs(clean_dir, noisy_dir, enhanced_dir, by_stem=True)]  # fmt: skip


def _audio_reason(exc: AudioError) -> str:
    problem = exc.problem.lower()
    if "sample rate" in problem:
        return "sample_rate"
    if "does not exist" in problem:
        return "missing_file"
    return "bad_audio"


def score_pair(pair: Pair, legacy_float_scale: bool = False, with_enhanced: bool = True) -> dict:
    """One per-file row: enhanced and noisy-input metrics, or NaNs and a reason; bad input never raises."""
    row: dict = {"name": pair.name}
    for key in METRIC_NAMES:
        row[key] = np.nan
        row[NOISY_PREFIX + key] = np.nan
    row.update(reason=pair.reason, detail=pair.detail)
    row.update(clean=str(pair.clean or ""), noisy=str(pair.noisy or ""), enhanced=str(pair.enhanced or ""))
    if pair.reason:
        return row
    missing = [
        role
        for role, path in (("clean", pair.clean), ("noisy", pair.noisy), ("enhanced", pair.enhanced))
        if path is None and (role != "enhanced" or with_enhanced)
    ]
    if missing:
        row.update(reason=f"missing_{missing[0]}", detail=f"no {' or '.join(missing)} file named {pair.name}.wav")
        return row
    try:
        clean = read_wav(pair.clean, sr=SAMPLE_RATE)
        noisy = read_wav(pair.noisy, sr=SAMPLE_RATE)
        enhanced = read_wav(pair.enhanced, sr=SAMPLE_RATE) if with_enhanced else None
    except AudioError as exc:
        row.update(reason=_audio_reason(exc), detail=str(exc))
        return row
    try:
        noisy_scores = compute_metrics(clean, noisy, SAMPLE_RATE, legacy_float_scale=legacy_float_scale)
    except MetricsError as exc:
        row.update(reason=exc.reason, detail=f"noisy input: {exc}")
        return row
    row.update({NOISY_PREFIX + k: v for k, v in noisy_scores.items()})
    if enhanced is not None:
        try:
            scores = compute_metrics(clean, enhanced, SAMPLE_RATE, legacy_float_scale=legacy_float_scale)
        except MetricsError as exc:
            row.update(reason=exc.reason, detail=f"enhanced: {exc}")
            for key in METRIC_NAMES:  # keep both systems on the same files
                row[NOISY_PREFIX + key] = np.nan
            return row
        row.update(scores)
    return row


def score_pairs(
    pairs: Sequence[Pair],
    legacy_float_scale: bool = False,
    n_jobs: int | None = None,
    progress: bool = True,
    with_enhanced: bool = True,
) -> pd.DataFrame:
    """Score every pair in `n_jobs` processes (default: all CPUs) with a progress bar; one row per pair."""
    n_jobs = _n_jobs(n_jobs, len(pairs))
    args = dict(legacy_float_scale=legacy_float_scale, with_enhanced=with_enhanced)
    if n_jobs == 1:
        rows: Iterable[dict] = (score_pair(p, **args) for p in pairs)
    else:
        from joblib import Parallel, delayed

        rows = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(score_pair)(p, **args) for p in pairs)
    rows = list(tqdm(rows, total=len(pairs), desc="metrics", unit="file", disable=not progress))
    columns = ["name", *METRIC_NAMES, *(NOISY_PREFIX + k for k in METRIC_NAMES)]
    columns += ["reason", "detail", "clean", "noisy", "enhanced"]
    return pd.DataFrame(rows, columns=columns)


def _n_jobs(n_jobs: int | None, n_items: int) -> int:
    if n_jobs is None or n_jobs <= 0:
        n_jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n_jobs, n_items))


def summarize(per_file: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Mean, std, t-based confidence interval per metric for the enhanced and the noisy input, on kept files.

    One row per (system, metric); `n` files scored, `n_excluded` files left out with a reason.
    """
    from scipy import stats

    kept = per_file[per_file["reason"].isna()] if "reason" in per_file else per_file
    n_excluded = len(per_file) - len(kept)
    systems = [("enhanced", "")] if kept[list(METRIC_NAMES)].notna().any().any() else []
    if all(NOISY_PREFIX + k in kept for k in METRIC_NAMES):
        systems.append(("noisy", NOISY_PREFIX))
    records = []
    for system, prefix in systems:
        for key in METRIC_NAMES:
            values = kept[prefix + key].dropna().to_numpy(dtype=float)
            n = values.size
            mean = float(values.mean()) if n else np.nan
            std = float(values.std(ddof=1)) if n > 1 else np.nan
            half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / np.sqrt(n)) if n > 1 else np.nan
            records.append(
                dict(system=system, metric=key, mean=mean, std=std, ci95_low=mean - half,
                     ci95_high=mean + half, n=n, n_excluded=n_excluded)
            )  # fmt: skip
    return pd.DataFrame(
        records, columns=["system", "metric", "mean", "std", "ci95_low", "ci95_high", "n", "n_excluded"]
    )


def comparison_table(summary: pd.DataFrame, label: str = "This run") -> pd.DataFrame:
    """Published rows beside this run's means (systems as rows, METRIC_NAMES as columns)."""
    pub = published_table()
    means = summary.pivot(index="system", columns="metric", values="mean").reindex(columns=list(METRIC_NAMES))
    rows = {"CMGAN (published)": pub.loc["CMGAN"]}
    if "enhanced" in means.index:
        rows[f"{label}: enhanced"] = means.loc["enhanced"]
    rows["Noisy (published)"] = pub.loc["Noisy"]
    if "noisy" in means.index:
        rows[f"{label}: noisy"] = means.loc["noisy"]
    table = pd.DataFrame(rows).T
    table.columns = [c.upper() for c in table.columns]
    return table


def format_report(summary: pd.DataFrame, per_file: pd.DataFrame, legacy_float_scale: bool = False) -> str:
    """The text `cmgan evaluate` prints: the comparison table and the exclusions by reason."""
    lines = [comparison_table(summary).to_string(float_format=lambda v: f"{v:.2f}")]
    n_total = len(per_file)
    excluded = per_file[per_file["reason"].notna()]
    lines.append(f"scored {n_total - len(excluded)} of {n_total} files; excluded {len(excluded)}")
    for reason, count in excluded["reason"].value_counts().items():
        lines.append(f"  {reason}: {count}")
    if legacy_float_scale:
        lines.append("composites computed with the published script's float-scale bug (inflated on purpose)")
    return "\n".join(lines)


def enhance_all(
    pairs: list[Pair],
    checkpoint: str | os.PathLike,
    out_dir: Path,
    device: str | None,
    cut_len: int,
    progress: bool,
    trust_checkpoint: bool = False,
    max_chunk_seconds: float | None = None,
) -> list[Pair]:
    """Enhance every noisy file into out_dir (float WAV: re-scoring the folder gives the same numbers).

    A file that cannot be enhanced (silent, too short, non-finite or constant output) keeps its Pair with a
    reason and detail; one bad file never stops the others.
    """
    from cmgan_lib.scoring.enhance import enhance_track, load_generator, memory_note, output_problem, resolve_device

    model = load_generator(checkpoint, device=resolve_device(device), trust=trust_checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for pair in tqdm(pairs, desc="enhance", unit="file", disable=not progress):
        if pair.noisy is None:
            done.append(pair)  # scored later as missing_noisy
            continue
        try:
            noisy = read_wav(pair.noisy, sr=SAMPLE_RATE)
        except AudioError as exc:
            done.append(Pair(pair.name, pair.clean, pair.noisy, None, _audio_reason(exc), str(exc)))
            continue
        try:
            est = enhance_track(model, noisy, cut_len=cut_len, max_chunk_seconds=max_chunk_seconds)
        except (ValueError, RuntimeError, MemoryError) as exc:  # all-zero or too short input; out of memory
            detail = f"{pair.noisy}: {memory_note(exc)}"
            done.append(Pair(pair.name, pair.clean, pair.noisy, None, "enhance_failed", detail))
            continue
        problem = output_problem(est)
        if problem:
            done.append(Pair(pair.name, pair.clean, pair.noisy, None, "bad_output", f"{pair.noisy}: {problem}"))
            continue
        path = out_dir / f"{pair.name}.wav"
        write_wav(path, est, SAMPLE_RATE, subtype="FLOAT")
        done.append(Pair(pair.name, pair.clean, pair.noisy, path))
    return done


def relative_paths(per_file: pd.DataFrame, base: str | os.PathLike) -> pd.DataFrame:
    """The clean/noisy/enhanced path columns relative to `base` (the folder of the CSV that holds them), so a
    results folder can be moved or shared without its CSVs pointing into one machine's file system."""
    out = per_file.copy()
    for col in ("clean", "noisy", "enhanced"):
        if col in out:
            out[col] = [os.path.relpath(p, base) if isinstance(p, str) and p else p for p in out[col]]
    return out


def evaluate(
    checkpoint: str | os.PathLike | None = None,
    *,
    test_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    device: str | None = None,
    enhanced_dir: str | os.PathLike | None = None,
    legacy_float_scale: bool = False,
    n_jobs: int | None = None,
    cut_len: int = SAMPLE_RATE * 16,
    progress: bool = True,
    trust_checkpoint: bool = False,
    max_chunk_seconds: float | None = None,
) -> pd.DataFrame | None:
    """Enhance `test_dir`'s noisy files with `checkpoint` (or read `enhanced_dir`) and score them.

    Writes OUT/metrics_per_file.csv and OUT/metrics_summary.csv, prints the table beside the published rows
    and returns the summary (its `n_excluded` counts the files that could not be scored), or None when no
    file could be scored.
    """
    if (checkpoint is None) == (enhanced_dir is None):
        raise ValueError("give exactly one of checkpoint (to enhance) or enhanced_dir (already enhanced)")
    clean_dir, noisy_dir = resolve_test_dir(test_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if enhanced_dir is not None:
        enhanced_dir = Path(enhanced_dir)
        if not enhanced_dir.is_dir():
            raise FileNotFoundError(f"{enhanced_dir}: enhanced folder does not exist")
        pairs = pair_files(clean_dir, noisy_dir, enhanced_dir)
    else:
        pairs = enhance_all(pair_files(clean_dir, noisy_dir), checkpoint, out / "enhanced", device, cut_len, progress,
                             trust_checkpoint, max_chunk_seconds)  # fmt: skip
    if not pairs:
        raise FileNotFoundError(f"{clean_dir} and {noisy_dir} hold no .wav files")

    per_file = score_pairs(pairs, legacy_float_scale=legacy_float_scale, n_jobs=n_jobs, progress=progress)
    relative_paths(per_file, out).to_csv(out / PER_FILE_CSV, index=False, float_format="%.6f")
    summary = summarize(per_file)
    summary.to_csv(out / SUMMARY_CSV, index=False, float_format="%.6f")
    print(format_report(summary, per_file, legacy_float_scale))
    print(f"wrote {out / PER_FILE_CSV} and {out / SUMMARY_CSV}")
    if per_file["reason"].notna().all():
        print("no file could be scored", file=sys.stderr)
        return None
    return summary


COMPOSITES = ("csig", "cbak", "covl")


LEGACY_SUFFIX = "_legacy"


def input_snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    """SNR of the noisy input against the clean reference, dB (the measured fallback for snr_db)."""
    n = min(len(clean), len(noisy))
    c, d = np.asarray(clean[:n], dtype=np.float64), np.asarray(noisy[:n], dtype=np.float64) - clean[:n]
    pn = float(np.sum(d**2))
    return math.inf if pn == 0 else 10.0 * math.log10(max(float(np.sum(c**2)), 1e-20) / pn)


def select_test_pairs(test_dir: str | os.PathLike, max_files: int | None = None):
    """The first `max_files` (by name) clean/noisy pairs of a test set, as evaluate.Pair."""
    clean_dir, noisy_dir = resolve_test_dir(test_dir)
    pairs = pair_files(clean_dir, noisy_dir)
    return pairs if max_files is None else pairs[: int(max_files)]


def snr_table(test_dir: str | os.PathLike, pairs) -> pd.DataFrame:
    """Per file: input_snr_db from the manifest (snr_db) when the test set has one, else measured."""
    from cmgan_lib.core.audio import read_wav

    names = [p.name for p in pairs]
    root = Path(test_dir)
    man = None
    for candidate in (root, root.parent):
        man = manifest_rows(candidate, names, "test")
        if man is not None:
            break
    if man is not None and "snr_db" in man:
        return pd.DataFrame({"name": names, "input_snr_db": man["snr_db"].to_numpy(), "snr_source": "manifest"})
    snrs = []
    for p in pairs:
        try:
            snrs.append(input_snr(read_wav(p.clean), read_wav(p.noisy)))
        except Exception:  # noqa: BLE001 - an unreadable file is scored (and excluded) by evaluate
            snrs.append(math.nan)
    return pd.DataFrame({"name": names, "input_snr_db": snrs, "snr_source": "measured"})


def _score_both(pairs, n_jobs, progress, with_enhanced=True) -> pd.DataFrame:
    """Correct scores plus `<composite>_legacy` (and noisy_<composite>_legacy) columns."""
    correct = score_pairs(pairs, n_jobs=n_jobs, progress=progress, with_enhanced=with_enhanced)
    legacy = score_pairs(pairs, legacy_float_scale=True, n_jobs=n_jobs, progress=progress,
                         with_enhanced=with_enhanced)  # fmt: skip
    for key in COMPOSITES:
        correct[key + LEGACY_SUFFIX] = legacy[key].to_numpy()
        correct[NOISY_PREFIX + key + LEGACY_SUFFIX] = legacy[NOISY_PREFIX + key].to_numpy()
    return correct


def score_noisy(
    test_dir: str | os.PathLike, max_files: int | None = None, n_jobs: int | None = None, progress: bool = True
) -> pd.DataFrame:
    """Per-file metrics of the noisy input only (variant "noisy", no enhanced columns), with input SNR."""
    pairs = select_test_pairs(test_dir, max_files)
    df = _score_both(pairs, n_jobs, progress, with_enhanced=False)
    return df.assign(run="", variant="", seed=np.nan).merge(snr_table(test_dir, pairs), on="name", how="left")


def evaluate_runs(
    run_dirs: Sequence[str | os.PathLike],
    test_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    max_files: int | None = None,
    device: str | None = "cpu",
    n_jobs: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Enhance the first `max_files` test files with each run's checkpoint and score them.

    One row per (run, file): run, variant, seed, name, the six metrics and noisy_<metric>, the
    `<composite>_legacy` columns (the published float-scale bug), input_snr_db and snr_source, reason.
    Each run's files go to OUT/<run>/enhanced and OUT/<run>/metrics_per_file.csv; all rows to
    OUT/metrics_per_file.csv. Paths in each CSV are relative to the CSV's folder; the returned frame keeps them
    as scored (for the audio players).
    """
    out = Path(out_dir)
    pairs = select_test_pairs(test_dir, max_files)
    if not pairs:
        raise FileNotFoundError(f"{test_dir}: no test files")
    snrs = snr_table(test_dir, pairs)
    parts = []
    for run_dir in run_dirs:
        ckpt = resolve_checkpoint(run_dir)
        run, variant, seed = run_identity(run_dir)
        run_out = out / run
        enhanced = enhance_all(pairs, ckpt, run_out / "enhanced", device, 16000 * 16, progress)
        df = _score_both(enhanced, n_jobs, progress)
        df.insert(0, "seed", seed)
        df.insert(0, "variant", variant)
        df.insert(0, "run", run)
        df = df.merge(snrs, on="name", how="left")
        relative_paths(df, run_out).to_csv(run_out / PER_FILE_CSV, index=False, float_format="%.6f")
        parts.append(df)
    if not parts:
        return pd.DataFrame()
    per_file = pd.concat(parts, ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    relative_paths(per_file, out).to_csv(out / PER_FILE_CSV, index=False, float_format="%.6f")
    return per_file
