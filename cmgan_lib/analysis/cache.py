"""Reuse a table computed before when nothing it depends on has changed.

Why: `make test` executes the notebooks again (nbval) after `make study` has run them on the same runs; notebook
01's crop sweep (PESQ of every crop, the generator on every kept checkpoint) was 4-5 of those minutes (issue 19).
The key covers the inputs by content (audio arrays, checkpoint and WAV bytes, parameters), cmgan_lib's own source
and the versions of the libraries that compute the numbers, so any change computes the table again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cmgan_lib.training.runs import atomic_save

PACKAGE = Path(__file__).resolve().parents[1]  # all of cmgan_lib: any of its code changing recomputes
LIBRARIES = ("torch", "numpy", "pesq", "pystoi", "pandas", "soundfile")


def _feed(h: Any, obj: Any) -> None:
    """Add `obj` to the hash by content, each value framed by its type so that different inputs never collide."""
    if isinstance(obj, np.ndarray):
        h.update(f"|nd{obj.dtype}{obj.shape}|".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, pd.DataFrame):
        h.update(b"|df|")
        h.update(obj.to_csv(index=False).encode())
    elif isinstance(obj, Path):
        h.update(b"|file|")
        if obj.is_file():
            with open(obj, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        else:
            h.update(b"missing")
    elif isinstance(obj, dict):
        h.update(f"|dict{len(obj)}|".encode())
        for key in sorted(obj, key=str):
            _feed(h, str(key))
            _feed(h, obj[key])
    elif isinstance(obj, list | tuple):
        h.update(f"|seq{len(obj)}|".encode())
        for item in obj:
            _feed(h, item)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _feed(h, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    else:  # str, numbers, None, bool
        h.update(f"|{type(obj).__name__}|{obj!r}".encode())


def source_files() -> list[Path]:
    """cmgan_lib's Python files: the code that computes every cached table."""
    return sorted(PACKAGE.rglob("*.py"))


def environment() -> dict[str, str]:
    """What besides the inputs decides the numbers: this package's source and the libraries' versions."""
    h = hashlib.sha256()
    for path in source_files():
        _feed(h, str(path.relative_to(PACKAGE)))
        _feed(h, path)
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return {"source": h.hexdigest(), **versions}


def digest(inputs: Any) -> str:
    h = hashlib.sha256()
    _feed(h, [environment(), inputs])
    return h.hexdigest()


def cached_frame(cache_dir: str | os.PathLike, name: str, inputs: Any, compute: Callable[[], pd.DataFrame],
                 ) -> tuple[pd.DataFrame, Path, bool]:  # fmt: skip
    """(frame, cache file, reused): the frame stored under CACHE_DIR/.cache for the same `inputs`, code and
    library versions, else `compute()` stored there (`runs.atomic_save`; older entries of `name` removed)."""
    folder = Path(cache_dir) / ".cache"
    path = folder / f"{name}-{digest(inputs)[:24]}.pkl"
    if path.is_file():
        try:  # our own file, written by atomic_save: a pickled frame
            return torch.load(path, weights_only=False), path, True
        except Exception:  # unreadable (truncated, another pandas): compute it again
            pass
    frame = compute()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save(frame, path)
    for old in folder.glob(f"{name}-*.pkl"):
        if old != path:
            old.unlink(missing_ok=True)
    return frame, path, False
