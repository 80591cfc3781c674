"""WAV input/output with one clear error per bad file (soundfile; no torchaudio CPU build exists here)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from cmgan_lib import SAMPLE_RATE
from cmgan_lib.core.paths import umask_mode


class AudioError(ValueError):
    """A bad audio file: the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def read_wav(
    path: str | os.PathLike,
    sr: int = SAMPLE_RATE,
    resample: bool = False,
    allow_silent: bool = True,
) -> np.ndarray:
    """Read a mono WAV as float32 in [-1, 1]; raise AudioError naming the file for anything unusable.

    `resample=True` converts other rates with scipy's polyphase resampler instead of refusing them.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "file does not exist")
    if not path.is_file():
        raise AudioError(path, "not a regular file")
    try:
        audio, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/TypeError by backend
        raise AudioError(path, f"unreadable audio ({type(exc).__name__}: {exc})") from exc
    if audio.shape[1] != 1:
        raise AudioError(path, f"has {audio.shape[1]} channels; mono is required")
    audio = audio[:, 0]
    if audio.size == 0:
        raise AudioError(path, "is empty (0 samples)")
    if not np.all(np.isfinite(audio)):
        raise AudioError(path, "contains NaN or inf samples")
    if file_sr != sr:
        if not resample:
            raise AudioError(
                path,
                f"sample rate is {file_sr} Hz, expected {sr} Hz (resample it, e.g. with resample=True / --resample)",
            )
        audio = resample_poly(audio, file_sr, sr)
    if not allow_silent and not np.any(audio):
        raise AudioError(path, "is all zeros (silent)")
    return audio


def resample_poly(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling (scipy), float32 out."""
    from math import gcd

    from scipy.signal import resample_poly as _rp

    g = gcd(int(sr_in), int(sr_out))
    return _rp(audio, int(sr_out) // g, int(sr_in) // g).astype(np.float32)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sr: int = SAMPLE_RATE, subtype: str = "PCM_16") -> None:
    """Write atomically (temporary file, then rename) so a crash never leaves a truncated WAV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.asarray(audio, dtype=np.float32)
    if subtype.startswith("PCM"):
        audio = np.clip(audio, -1.0, 1.0)
    fd, tmp = tempfile.mkstemp(suffix=".wav", dir=path.parent, prefix=f".{path.stem}.")
    os.close(fd)
    try:
        sf.write(tmp, audio, sr, subtype=subtype, format="WAV")
        os.chmod(tmp, umask_mode())  # mkstemp's 0600 would make shared audio unreadable to the group
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
