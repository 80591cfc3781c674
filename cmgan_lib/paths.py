"""Where the project lives, so notebooks (run from notebooks/ by nbval, from anywhere by papermill) resolve
`runs/...` and `configs/...` the same way the command line does."""

from __future__ import annotations

import os
from pathlib import Path


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The nearest folder at or above `start` (default: cwd) holding pyproject.toml and configs/."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "configs").is_dir():
            return folder
    raise FileNotFoundError(f"no cmgan-study checkout (pyproject.toml + configs/) at or above {here}")


def use_repo_root() -> Path:
    """chdir to the repository root (first cell of every notebook) and return it."""
    root = repo_root()
    os.chdir(root)
    return root


def shared_samples() -> Path | None:
    """../shared/data/voicebank_demand_samples beside the checkout, when present (CI has it; users don't)."""
    path = repo_root().parent / "shared" / "data" / "voicebank_demand_samples"
    return path if (path / "clean").is_dir() else None
