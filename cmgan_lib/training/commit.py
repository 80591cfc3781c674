"""The end of an epoch as one commit, and what `--resume` puts right before it continues (issue 32).

Why: an epoch's end writes several files (log rows, best.pt, epoch_NNN.pt, last.pt). Written last.pt first, a
kill or a full disk between them left a run whose last.pt had moved on while its log row and best.pt had not,
and `--resume` then lost them for good. Now everything an epoch produces is written first and last.pt, renamed
into place last, commits it: `--resume` continues from last.pt, so whatever an uncommitted epoch wrote is undone
(its log rows dropped by `runs.repair_logs`, best.pt put back, its epoch_NNN.pt removed) and the epoch is redone.
"""

from __future__ import annotations

import collections
import errno
import io
import json
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from cmgan_lib.training import runguard
from cmgan_lib.training.runs import CsvLog, atomic_save, fsync_file

PREV_BEST = ".best.pt.prev"  # the previous best.pt (a hard link), kept until last.pt commits the new one


def epoch_file(epoch: int) -> str:
    """epoch_NNN.pt of the 0-based `epoch`, named as the console counts (from 1)."""
    return f"epoch_{epoch + 1:03d}.pt"


def commit_epoch(state: dict[str, Any], run_dir: Path, epoch: int, best: bool, every: int,
                 logs: Iterable[CsvLog]) -> None:  # fmt: skip
    """Write what the epoch produced, then commit it: the log rows (already appended) to disk, best.pt on a new
    best (the previous one kept as PREV_BEST until the commit), epoch_NNN.pt every `every` epochs (0: never),
    and last, last.pt: the one rename that commits the epoch."""
    for log in logs:
        log.sync()
    best_pt, prev = run_dir / "best.pt", run_dir / PREV_BEST
    try:
        if best:
            if best_pt.is_file():
                _keep_copy(best_pt, prev)
            atomic_save(state, best_pt)
        if every and (epoch + 1) % every == 0:
            atomic_save(state, run_dir / epoch_file(epoch))
        atomic_save(state, run_dir / "last.pt")  # the commit
    except Exception:  # a full disk: not committed, so the previous best.pt goes back at once (a kill: on resume)
        if prev.exists() and not os.path.samefile(prev, best_pt):
            os.replace(prev, best_pt)
        _remove(prev)  # (rename does nothing when both names are links to one file)
        raise
    _remove(prev)


def _remove(path: Path) -> None:
    if path.exists():  # no write at all when there is nothing to remove (tests/test_crash_consistency.py counts)
        path.unlink()


class _Inert:
    """What a peeked pickle's tensor rebuilders and storages become: built from anything, holds nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:  # a rebuilt tensor's state (BUILD)
        pass


class _Peek(pickle.Unpickler):
    """A torch checkpoint's `data.pkl` with its tensors left out: dicts, lists and numbers are built, the tensor
    rebuilders and storages become `_Inert` and no storage is read; any other global is refused (the caller
    then asks torch.load with weights_only, as before). Runs none of the file's code, at C speed
    (weights_only's Python unpickler took 0.2-0.9 s a checkpoint)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        storage = module == "torch" and name.endswith("Storage")
        if storage or (module == "torch._utils" and name.startswith("_rebuild_")):
            return _Inert
        raise pickle.UnpicklingError(f"{module}.{name}: not in a checkpoint of this trainer")

    def persistent_load(self, pid: Any) -> None:
        return None


def _peek_epoch(path: Path) -> int:
    with zipfile.ZipFile(path) as archive:
        (pkl,) = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        ck = _Peek(io.BytesIO(archive.read(pkl))).load()
    epoch = ck["epoch"]
    if type(epoch) is not int:
        raise TypeError(f"epoch is a {type(epoch).__name__}")
    return epoch


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch a checkpoint records, or None when it is not a readable one. Read from its pickle alone (no
    tensor built; a resume asks this of best.pt and of the files it may rebuild best.pt from); anything the
    peek cannot read goes to torch.load (tensors mapped) as before."""
    try:
        return _peek_epoch(path)
    except Exception:  # noqa: BLE001 (not a zip, a cut file, another layout: torch decides)
        pass
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 (any unreadable file holds no epoch)
        return None
    return int(ck["epoch"]) if isinstance(ck, dict) and "epoch" in ck else None


def reconcile(run_dir: Path, ck: dict[str, Any]) -> list[str]:
    """Make the checkpoint files what last.pt (`ck`) commits: epoch_NNN.pt of uncommitted epochs removed,
    best.pt holding the best epoch last.pt records (put back or rebuilt from a file holding that epoch), DDP
    records of uncommitted epochs dropped. Returns one line per change; refuses (ValueError, one line) when no
    file holds the recorded best epoch, rather than keep a best.pt of another epoch."""
    done, best_epoch = int(ck["epoch"]), int(ck["early_stopping"]["best_epoch"])
    notes = []
    for path in sorted(run_dir.glob("epoch_*.pt")):
        number = path.stem.split("_")[-1]
        if number.isdigit() and int(number) > done + 1:
            path.unlink()
            notes.append(f"removed {path} (written by epoch {number}, which last.pt does not commit; it is redone)")
    best, prev = run_dir / "best.pt", run_dir / PREV_BEST
    held = checkpoint_epoch(best) if best.is_file() else None
    if best_epoch < 0 and best.is_file():  # no committed epoch improved: best.pt is an uncommitted epoch's
        best.unlink()
        notes.append(f"removed {best} (epoch {_count(held)}, which last.pt does not commit; it is redone)")
    elif best_epoch >= 0 and held != best_epoch:
        notes.append(_restore_best(run_dir, best_epoch, held, done))
    _remove(prev)
    if _trim_ddp_records(run_dir / "ddp_ranks.json", done):
        notes.append(f"dropped the DDP records of epochs after {done + 1} from {run_dir / 'ddp_ranks.json'}")
    return notes


def missing_rows_note(run_dir: Path, done: int) -> str | None:
    """A warning line naming the committed epochs (0..done) without a row in the epoch log, or None. Only a run
    folder written before issue 32 (last.pt first) can have them: the row of an epoch is written before its commit."""
    import pandas as pd

    from cmgan_lib.training.runs import EPOCH_LOG, read_log

    log = run_dir / EPOCH_LOG
    present = set(read_log(log).get("epoch", pd.Series(dtype=int)).astype(int)) if log.is_file() else set()
    missing = [str(e + 1) for e in range(done + 1) if e not in present]
    if not missing:
        return None
    return (f"warning: {log} has no row for epoch(s) {', '.join(missing)}, which last.pt commits (a version that "
            "checkpointed before logging was stopped in between); those rows are lost")  # fmt: skip


def _count(epoch: int | None) -> str:
    return "unreadable" if epoch is None else str(epoch + 1)


def _restore_best(run_dir: Path, best_epoch: int, held: int | None, done: int) -> str:
    best = run_dir / "best.pt"
    sources = [run_dir / PREV_BEST, run_dir / epoch_file(best_epoch)] + ([run_dir / "last.pt"] * (best_epoch == done))
    what = f"epoch {_count(held)}" if best.is_file() else "missing"
    for source in sources:
        if source.is_file() and checkpoint_epoch(source) == best_epoch:
            if source.name == PREV_BEST:
                os.replace(source, best)
            else:
                _keep_copy(source, best)
            return f"{best}: rebuilt from {source.name} ({what}; last.pt records the best at epoch {best_epoch + 1})"
    raise ValueError(
        f"{best}: {what}, but {run_dir / 'last.pt'} records the best at epoch {best_epoch + 1} and no file in the "
        "folder holds that epoch (the run was written by a version that committed last.pt first); the best model is "
        "lost: start the run again (--config FILE --overwrite)"
    )


def _keep_copy(source: Path, target: Path) -> None:
    """`target` the same file as `source`: a hard link where the file system has them, else a copy (atomic)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.link.tmp")  # removed at start if a kill leaves it
    _remove(tmp)
    try:
        os.link(source, tmp)
    except OSError:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".pt.tmp")
        os.close(fd)
        tmp = Path(name)
        try:
            shutil.copyfile(source, tmp)
            fsync_file(tmp)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                free = shutil.disk_usage(target.parent).free
                raise runguard.DiskFullError(f"{target}: disk full while copying {source.name} to it ({free} bytes "
                                             f"free); free some space, then `cmgan train --resume {target.parent}`"
                                             ) from None  # fmt: skip
            raise
    os.replace(tmp, target)


def _trim_ddp_records(path: Path, done: int) -> bool:
    """Drop the records of epochs after `done` from ddp_ranks.json; True when some were dropped."""
    if not path.is_file():
        return False
    history = json.loads(path.read_text())
    kept = [ranks for ranks in history if ranks and int(ranks[0]["epoch"]) <= done]
    if len(kept) == len(history):
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(kept))
    os.replace(tmp, path)
    return True
