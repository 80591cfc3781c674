"""What a WAV file's header promises against what the file holds.

Why: libsndfile reads a WAV whose data chunk was cut off (an interrupted copy or download) without a word,
returning the samples that are there, so a truncated file would train and score as a shorter recording.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # streaming writers leave the data size open (0 or -1): nothing to compare


def data_shortfall(path: str | os.PathLike) -> tuple[int, int] | None:
    """(bytes the header's data chunk declares, bytes the file holds after the chunk header) when the file holds
    fewer than declared; None for a whole file, a file that is not RIFF/WAVE (RF64, W64, FLAC...), or one whose
    data size was left open."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size = os.fstat(f.fileno()).st_size
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, length = struct.unpack("<4sI", f.read(8))
            if chunk == b"data":
                held = size - (pos + 8)
                return (length, held) if length not in UNKNOWN_SIZES and held < length else None
            pos += 8 + length + (length & 1)  # chunks are word-aligned
    return None
