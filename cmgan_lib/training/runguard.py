"""What keeps a run folder whole: one writer at a time, a trainer that dies with the runner that started it,
SIGINT/SIGTERM that stop at a step boundary, SIGUSR1/SIGUSR2 (a cluster's "your time is up") that stop there too
and ask for a requeue, and a full disk named as such.

Kept apart from train.py so that the trainer only holds thin hooks (`main` takes the lock and installs the
handlers; `Trainer._train_epoch` asks `check_stop()` before each step; `atomic_save` asks `write_failure()` why a write
failed).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

LOCK_NAME = ".writer.lock"  # in the run folder; flock'ed while a process writes the run
PARENT_ENV = "CMGAN_DIE_WITH_PARENT"  # set by `cmgan ablate` / `study`: the pid the trainer must not outlive


# ----------------------------------------------------------------------------------------------- one writer
class RunLockedError(RuntimeError):
    """Another live process writes this run folder."""


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive flock on RUN/.writer.lock while the block runs; refuse a second writer in one line.

    Why flock: the kernel drops the lock when its holder dies (even by SIGKILL), so a stale lock file never
    blocks anyone, while a live holder always does. The file keeps the holder's pid only to name it. A folder
    this call had to create is removed again when the block leaves nothing but the lock in it (a run refused
    before it started leaves no folder behind).
    """
    run = Path(run_dir)
    created = not run.exists()
    run.mkdir(parents=True, exist_ok=True)
    path = run / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunLockedError(
            f"{run}: another process (PID {holder}) is writing this run folder; wait for it to finish or stop "
            "it (kill PID), then run again"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        if created and [p.name for p in run.iterdir()] == [LOCK_NAME]:
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                run.rmdir()
        os.close(fd)  # releases the lock


def lock_holder(run_dir: str | os.PathLike) -> int | None:
    """The pid of the live process that writes this run folder, or None (nobody; `cmgan ablate --status` asks).
    Takes the lock for an instant when it is free; never creates a folder or a lock file."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1  # held, by a pid it has not written yet
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------ dying with the parent
def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a trainer started by a runner: it asks the trainer to exit when the runner dies."""
    return {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}


def die_with_parent(interval: float = 0.5) -> None:
    """When started by `cmgan ablate`/`study` (PARENT_ENV set), end this process with SIGTERM once the runner is
    gone, so a killed runner never leaves a trainer writing into a run folder.

    Linux: the kernel sends SIGTERM on the parent's death (PR_SET_PDEATHSIG); elsewhere a daemon thread polls the
    parent pid. SIGTERM then stops the trainer at a step boundary (`stop_handlers`), so the folder stays
    resumable.
    """
    wanted = os.environ.get(PARENT_ENV)
    if not wanted:
        return
    parent = int(wanted)
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            pdeathsig = ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0) == 0  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pdeathsig = False
        if pdeathsig:  # one SIGTERM from the kernel; a watchdog's second one would read as "stop at once"
            if os.getppid() != parent:  # the runner died before prctl: nothing has started yet
                os.kill(os.getpid(), signal.SIGTERM)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


# ---------------------------------------------------------------------------------------- stop at a boundary
# Slurm sends SIGUSR1 before a job's time limit (`--signal=B:USR1@120`, forwarded by the batch script) and submitit
# SIGUSR2 on preemption or time-out: the trainer stops at the next step boundary and exits REQUEUE_EXIT, which
# asks whoever started it to queue the run again (it continues with --resume from last.pt).
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
REQUEUE_EXIT = 75  # EX_TEMPFAIL (sysexits.h): a temporary failure, try again later


class TrainingInterrupted(Exception):
    """SIGINT, SIGTERM, SIGUSR1 or SIGUSR2 arrived; the trainer stopped at a step boundary."""

    def __init__(self, signum: int, where: str):
        self.signum, self.where = signum, where
        requeue = f" (exit {REQUEUE_EXIT}: requeue me)" if self.requeue else ""
        super().__init__(f"stopped by {signal.Signals(signum).name} {where}{requeue}")

    @property
    def requeue(self) -> bool:
        return self.signum in REQUEUE_SIGNALS

    @property
    def exit_code(self) -> int:
        # a requeue signal: the status that asks for a requeue; else what a shell reports for that signal
        return REQUEUE_EXIT if self.requeue else 128 + self.signum


_requested: list[int] = []


def request_stop(signum: int = signal.SIGINT) -> None:
    """What the handlers do (also callable by tests): the trainer stops before its next step."""
    _requested.append(signum)


def check_stop(where: str, everyone: Callable[[bool], bool] | None = None) -> None:
    """Raise TrainingInterrupted if a stop was requested (called before each training step). `everyone(flag)`:
    True only if flag holds on every DDP rank, so that all ranks stop before the same step (no hung collective)."""
    stop = bool(_requested)
    if everyone is not None:
        stop = not everyone(not stop)
    if stop:
        raise TrainingInterrupted(_requested[0] if _requested else signal.SIGTERM, where)


def _handler(signum: int, frame: Any) -> None:
    if _requested and signum == signal.SIGINT:  # Ctrl-C twice: the user means it, stop now (as Python does)
        signal.signal(signum, signal.default_int_handler)
        raise KeyboardInterrupt
    if _requested:  # SIGTERM again: PR_SET_PDEATHSIG sends one per exiting thread of a multithreaded parent
        return
    request_stop(signum)
    again = " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else ""
    if signum in REQUEUE_SIGNALS:
        again = f"; then exit {REQUEUE_EXIT} to be requeued"
    print(f"{signal.Signals(signum).name} received: stopping at the next step boundary{again}", file=sys.stderr,
          flush=True)  # fmt: skip


@contextlib.contextmanager
def stop_handlers() -> Iterator[None]:
    """SIGINT/SIGTERM/SIGUSR1/SIGUSR2 request a stop at the next step boundary instead of raising mid-step (main
    thread only); a requeue signal's stop exits REQUEUE_EXIT."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested.clear()
    old = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM, *REQUEUE_SIGNALS)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _requested.clear()


# ------------------------------------------------------------------------------------------------ full disk
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class DiskFullError(OSError):
    """A checkpoint or a log row could not be written for lack of space; the message says what was kept."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC


def serialized_size(obj: Any) -> int:
    """Bytes torch.save writes for `obj` (what a checkpoint write needs on disk)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.tell()


def write_failure(exc: BaseException, obj: Any, path: Path) -> BaseException:
    """The error to raise when writing `obj` to `path` failed: DiskFullError naming the path, the bytes needed
    and the bytes free when the disk is full (torch reports that as `unexpected pos`), else `exc` itself."""
    free = shutil.disk_usage(path.parent).free
    needed = serialized_size(obj)
    full = getattr(exc, "errno", None) in DISK_FULL_ERRNOS or free < needed
    if not full:
        return exc
    kept = f"the previous {path.name} is untouched" if path.is_file() else f"no {path.name} was written"
    then = (f"continue with `cmgan train --resume {path.parent}`" if (path.parent / "last.pt").is_file() else
            "start the run again with --overwrite (no epoch was saved)")  # fmt: skip
    return DiskFullError(
        f"{path}: disk full: the checkpoint needs {needed} bytes, {free} are free in {path.parent}; {kept}: free "
        f"some space, then {then}",
    )
