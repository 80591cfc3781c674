"""Refuse bad data before anything trains: every offending file is named, grouped by kind, in one report.

Headers are read with soundfile.info (no decoding); only floating-point files are decoded, for the
NaN/inf check, since integer PCM cannot hold non-finite values. The VB training set (PCM_16) thus
validates from headers alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from cmgan_lib import SAMPLE_RATE
from cmgan_lib.core.audio import AudioError, read_wav
from cmgan_lib.data.layout import has_split, natural_key, split_candidates, wav_names
from cmgan_lib.data.wav_header import data_shortfall

# Problem kinds in report order, with the heading each group gets.
KINDS: dict[str, str] = {
    "missing_folder": "Missing folders",
    "name_mismatch": "Clean/noisy name mismatch",
    "sample_rate": f"Sample rate other than {SAMPLE_RATE} Hz",
    "channels": "Multi-channel files (mono required)",
    "unreadable": "Empty or unreadable files",
    "truncated": "Truncated files (less audio than the WAV header declares)",
    "length_mismatch": "Clean/noisy length mismatch",
    "non_finite": "NaN or inf samples",
    "silent": "All-zero or near-silent files",
}
WARNING_KINDS: dict[str, str] = {"too_short": "Too short for PESQ (under 0.25 s)"}  # reported; not an error
PESQ_MIN_SAMPLES = SAMPLE_RATE // 4
HINTS: dict[str, str] = {
    "sample_rate": (
        "hint: resample to 16 kHz beforehand, or pass --resample (resample=True) to convert on load "
        "with scipy's polyphase resampler"
    ),
    "name_mismatch": "hint: every clean file needs a noisy file of the same name, and vice versa",
    "silent": (
        "hint: the published RMS normalization sqrt(N / sum(x^2)) divides by zero for a silent noisy file, "
        "and PESQ cannot score a silent clean one; remove these pairs"
    ),
    "truncated": (
        "hint: the file was cut off (an interrupted copy, download or write); the loader would read only the part "
        "that is there: copy it again"
    ),
    "too_short": "hint: PESQ cannot score these; validation and evaluate leave them out; training tiles them",
    "missing_folder": (
        "hint: expected DIR/train/{clean,noisy} and DIR/test/{clean,noisy}, or the archive folders "
        "clean_trainset_28spk_wav, noisy_trainset_28spk_wav, clean_testset_wav, noisy_testset_wav"
    ),
}
FLOAT_SUBTYPES = {"FLOAT", "DOUBLE"}
# A file whose peak is below this (-120 dBFS) is silence for training: the RMS normalizer sqrt(N / sum(x^2))
# overflows for it (float32) and the trainer skips its batch, and PESQ cannot score it. PCM_16 cannot hold a
# non-zero sample this small (1 / 32768 = 3e-5), so for it the check is the all-zero one.
NEAR_SILENT_PEAK = 1e-6


@dataclass(frozen=True)
class Problem:
    kind: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}"


@dataclass
class ValidationReport:
    """What was checked and what is wrong; `ok` when nothing is."""

    data_dir: str
    pairs: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def by_kind(self) -> dict[str, list[Problem]]:
        groups: dict[str, list[Problem]] = {}
        for kind in KINDS:
            found = [p for p in self.problems if p.kind == kind]
            if found:
                groups[kind] = found
        return groups

    def __str__(self) -> str:
        counts = ", ".join(f"{split}: {n} pairs" for split, n in self.pairs.items())
        if self.ok:
            lines = [
                f"{self.data_dir}: OK ({counts})" + (f"; {len(self.warnings)} warning(s)" if self.warnings else "")
            ]
        else:
            n = len(self.problems)
            lines = [f"{self.data_dir}: {n} problem(s) found ({counts}); fix them before training or evaluating."]
        groups = [(KINDS[k], k, found) for k, found in self.by_kind().items()]
        for kind, heading in WARNING_KINDS.items():
            found = [w for w in self.warnings if w.kind == kind]
            if found:
                groups.append((f"Warning: {heading}", kind, found))
        for heading, kind, found in groups:
            lines.append(f"\n{heading} ({len(found)}):")
            lines.extend(f"  {p}" for p in found)
            if kind in HINTS:
                lines.append(f"  {HINTS[kind]}")
        return "\n".join(lines)


class DataValidationError(ValueError):
    """Raised with the whole report; str() is the full multi-line message."""

    def __init__(self, report: ValidationReport):
        self.report = report
        super().__init__(str(report))


def _resampled_length(frames: int, sr: int) -> int:
    """Length scipy.signal.resample_poly gives for `frames` samples from `sr` to 16 kHz."""
    g = math.gcd(sr, SAMPLE_RATE)
    return math.ceil(frames * (SAMPLE_RATE // g) / (sr // g))


def _check_file(path: Path, resample: bool) -> tuple[list[Problem], int | None]:
    """Problems of one file and its length in 16 kHz samples (None when unusable)."""
    try:
        info = sf.info(str(path))
    except Exception:
        try:  # reuse read_wav's wording for the failure
            read_wav(path, resample=True)
            detail = "unreadable header"
        except AudioError as exc:
            detail = exc.problem
        return [Problem("unreadable", str(path), detail)], None
    problems: list[Problem] = []
    if info.frames == 0:
        return [Problem("unreadable", str(path), "is empty (0 samples)")], None
    if info.channels != 1:
        problems.append(Problem("channels", str(path), f"has {info.channels} channels; mono is required"))
    if info.samplerate != SAMPLE_RATE and not resample:
        problems.append(Problem("sample_rate", str(path), f"sample rate is {info.samplerate} Hz"))
    shortfall = data_shortfall(path) if info.format == "WAV" else None
    if shortfall is not None:
        declared, held = shortfall
        problems.append(Problem("truncated", str(path), f"the WAV header declares {declared} bytes of audio, the "
                                f"file holds {held} ({held / max(declared, 1):.0%})"))  # fmt: skip
    if info.subtype in FLOAT_SUBTYPES:
        try:
            audio, _ = sf.read(str(path), dtype="float64", always_2d=True)
        except Exception as exc:
            return [*problems, Problem("unreadable", str(path), f"unreadable audio ({exc})")], None
        bad = ~np.isfinite(audio)
        if bad.any():
            problems.append(
                Problem("non_finite", str(path), f"{int(bad.sum())} NaN/inf sample(s), first at {bad.argmax()}")
            )
        else:
            problems += _silence(path, float(np.abs(audio).max()), info.frames)
    else:
        peak = _quiet_peak(path)
        if peak is not None:
            problems += _silence(path, peak, info.frames)
    return problems, _resampled_length(info.frames, info.samplerate)


def _silence(path: Path, peak: float, frames: int) -> list[Problem]:
    """An all-zero or near-silent file (peak below NEAR_SILENT_PEAK) as a problem; none for a louder one."""
    if peak == 0:
        return [Problem("silent", str(path), f"all {frames} samples are zero")]
    if peak < NEAR_SILENT_PEAK:
        return [Problem("silent", str(path), f"near-silent: peak {peak:.3g} (< {NEAR_SILENT_PEAK:g}, -120 dBFS); "
                        "training would skip its batch")]  # fmt: skip
    return []


def _quiet_peak(path: Path, block: int = 16000) -> float | None:
    """The peak of a file whose every sample is below NEAR_SILENT_PEAK, else None; stops at the first louder
    block, so speech costs one block's read."""
    peak = 0.0
    try:
        for chunk in sf.blocks(str(path), blocksize=block, dtype="float64", always_2d=True):
            peak = max(peak, float(np.abs(chunk).max(initial=0.0)))
            if peak >= NEAR_SILENT_PEAK:
                return None
    except Exception:
        return None  # unreadable data is reported by the loader; this check is about silence only
    return peak


def _check_split(
    root: Path, split: str, resample: bool, progress: bool, warnings: list[Problem]
) -> tuple[list[Problem], int]:
    candidates = split_candidates(root, split)
    found = next(((c, n) for c, n in candidates if c.is_dir() or n.is_dir()), None)
    if found is None:
        looked = " or ".join(f"{c} + {n}" for c, n in candidates)
        return [Problem("missing_folder", str(root), f"no {split} split ({looked})")], 0
    clean_dir, noisy_dir = found
    problems = [
        Problem("missing_folder", str(d), "folder does not exist") for d in (clean_dir, noisy_dir) if not d.is_dir()
    ]
    if problems:
        return problems, 0
    clean, noisy = wav_names(clean_dir), wav_names(noisy_dir)
    for folder, names in ((clean_dir, clean), (noisy_dir, noisy)):
        if not names:
            problems.append(Problem("missing_folder", str(folder), "contains no .wav files"))
    clean_set, noisy_set = set(clean), set(noisy)
    for name in clean:
        if name not in noisy_set:
            problems.append(Problem("name_mismatch", str(clean_dir / name), f"no partner {noisy_dir / name}"))
    for name in noisy:
        if name not in clean_set:
            problems.append(Problem("name_mismatch", str(noisy_dir / name), f"no partner {clean_dir / name}"))
    lengths: dict[Path, int | None] = {}
    files = [clean_dir / n for n in clean] + [noisy_dir / n for n in noisy]
    # disable=None: no bar when stderr is not a terminal (a run's train.log gets lines, not carriage returns)
    bar_off = None if progress else True
    for path in tqdm(files, desc=f"validate {split}", unit="file", disable=bar_off, leave=False):
        found_problems, lengths[path] = _check_file(path, resample)
        problems.extend(found_problems)
    paired = sorted(clean_set & noisy_set, key=natural_key)
    for name in paired:
        n_clean, n_noisy = lengths[clean_dir / name], lengths[noisy_dir / name]
        if n_clean is not None and n_clean < PESQ_MIN_SAMPLES:
            warnings.append(Problem("too_short", str(clean_dir / name), f"{n_clean} samples (< {PESQ_MIN_SAMPLES})"))
        if n_clean is not None and n_noisy is not None and n_clean != n_noisy:
            problems.append(
                Problem(
                    "length_mismatch",
                    str(clean_dir / name),
                    f"{n_clean} samples but {noisy_dir / name} has {n_noisy}",
                )
            )
    return problems, len(paired)


def validate_dataset(
    data_dir: str | os.PathLike,
    splits: Sequence[str] | Iterable[str] | None = None,
    resample: bool = False,
    progress: bool = True,
) -> ValidationReport:
    """Check every file of `splits` under `data_dir`; raise DataValidationError listing all problems.

    `resample=True` accepts rates other than 16 kHz (the loader converts them) and compares
    lengths after conversion.
    """
    root = Path(data_dir)
    report = ValidationReport(str(root))
    if not root.is_dir():
        report.problems.append(Problem("missing_folder", str(root), "data folder does not exist"))
        raise DataValidationError(report)
    if splits is None:  # train and test, and valid when the folder has one
        splits = ("train", "test", "valid") if has_split(root, "valid") else ("train", "test")
    for split in splits:
        problems, n_pairs = _check_split(root, split, resample, progress, report.warnings)
        report.problems.extend(problems)
        report.pairs[split] = n_pairs
    if not report.ok:
        raise DataValidationError(report)
    return report
