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


def run_config(run: str | os.PathLike) -> dict:
    """A run's config.yaml as a dict: `run` is the run folder or a file in it (a checkpoint); {} when absent.

    The one reader of run configs for the reports, so they all agree on what a run trained with.
    """
    import yaml

    folder = Path(run)
    if folder.is_file():
        folder = folder.parent
    path = folder / "config.yaml"
    if not path.is_file():
        return {}
    cfg = yaml.safe_load(path.read_text())
    if cfg is not None and not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(cfg).__name__}")
    return cfg or {}


def _beside(rel: Path, parent: Path) -> bool:
    """Whether a path `rel` under the checkout's parent reads as `../rel`: always, unless the checkout sits in the
    temporary folder (a clone in /tmp), where only `../shared` is the project's and the rest is anyone's."""
    import tempfile

    return parent != Path(tempfile.gettempdir()).resolve() or rel.parts[:1] == ("shared",)


def shown_path(path: str | os.PathLike | None, *bases: str | os.PathLike) -> str:
    """`path` as a shared report may print it: relative to the project root (or beside it: `../shared/...`) or
    inside one of `bases` (a run root), never one machine's absolute path (issue 23). Outside all of them:
    `…/<parent>/<name>`."""
    if path is None:
        return ""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        root = repo_root()
    except FileNotFoundError:
        root = None
    for q in dict.fromkeys((Path(os.path.abspath(p)), p.resolve())):  # as written, then without symlinks
        if root is not None and (q == root or root in q.parents):
            return q.relative_to(root).as_posix() or "."
        for base in (form for b in bases for form in (Path(os.path.abspath(b)), Path(b).resolve())):
            if base in q.parents:  # a given run root before the checkout's parent (a clone in /tmp holds all /tmp)
                return q.relative_to(base).as_posix()
        if root is not None and root.parent in q.parents and _beside(q.relative_to(root.parent), root.parent):
            return Path("..", q.relative_to(root.parent)).as_posix()  # beside the checkout, e.g. ../shared
    return "…/" + "/".join(p.parts[-2:]) if len(p.parts) > 2 else p.name


def umask_mode() -> int:
    """The mode a new file gets from open(): 0o666 less the process umask.

    Why: files written through tempfile.mkstemp and a rename (checkpoints, enhanced WAVs) would keep mkstemp's
    0600, so a shared report's audio or a run's checkpoints would be unreadable to the group the umask allows.
    """
    try:  # Linux: read it without changing it (os.umask sets it, for a moment, for every thread)
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def replace_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`: a reader (or a kill) never
    sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
