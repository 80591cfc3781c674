"""PESQ of one clean/estimate pair with the failure cause classified, and the persistent pool that runs it.

Kept free of torch on purpose: pool workers import only this module (numpy + pesq), so starting them is
cheap and safe beside a CUDA/DDP parent. `cmgan_lib.training.pesq_labels` turns the results into training labels.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pesq as _pesq

SILENT_REFERENCE = "silent_reference"
TOO_SHORT = "too_short"
SILENT_OR_NONFINITE_ESTIMATE = "silent_or_nonfinite_estimate"
OTHER_PREFIX = "other:"
KNOWN_REASONS = (SILENT_REFERENCE, TOO_SHORT, SILENT_OR_NONFINITE_ESTIMATE)

Result = tuple[float, str | None]


def _message(exc: BaseException) -> str:
    """pesq 0.0.4 raises with a bytes message; make it readable."""
    arg = exc.args[0] if exc.args else ""
    text = arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def score_one(clean: np.ndarray, estimate: np.ndarray, sr: int = 16000) -> Result:
    """PESQ-WB of one pair as (score, None), or (nan, reason) when PESQ cannot be computed.

    Degenerate inputs are caught first: pesq divides both signals by their joint peak, so an all-zero or
    NaN estimate ends in an unrelated `ValueError` ("cannot convert float NaN to integer") rather than a
    PesqError. Everything else is classified from pesq's own exception types; nothing else is swallowed.
    """
    if clean.ndim != 1 or estimate.ndim != 1:
        raise ValueError(f"expected 1-D signals, got shapes {clean.shape} and {estimate.shape}")
    if len(clean) != len(estimate):
        raise ValueError(f"clean and estimate lengths differ: {len(clean)} vs {len(estimate)}")
    if not np.all(np.isfinite(clean)):
        return float("nan"), OTHER_PREFIX + "nonfinite_reference"
    if not np.any(clean):
        return float("nan"), SILENT_REFERENCE
    if not np.all(np.isfinite(estimate)) or not np.any(estimate):
        return float("nan"), SILENT_OR_NONFINITE_ESTIMATE
    try:
        value = _pesq.pesq(sr, clean, estimate, "wb", on_error=_pesq.PesqError.RAISE_EXCEPTION)
    except _pesq.NoUtterancesError:  # PESQ's voice-activity detector found no speech in the reference
        return float("nan"), SILENT_REFERENCE
    except _pesq.BufferTooShortError:  # under 1/4 s
        return float("nan"), TOO_SHORT
    except _pesq.PesqError as exc:  # InvalidSampleRateError, OutOfMemoryError, unknown codes
        return float("nan"), OTHER_PREFIX + _message(exc)
    return float(value), None


def score_many(clean: Sequence[np.ndarray], estimate: Sequence[np.ndarray], sr: int = 16000) -> list[Result]:
    """The serial loop; also the unit of work a pool worker runs on its chunk."""
    return [score_one(c, e, sr) for c, e in zip(clean, estimate, strict=True)]


def stoi_one(clean: np.ndarray, estimate: np.ndarray, sr: int = 16000) -> float:
    """Classic STOI (pystoi, as validation always used); NaN for a non-finite estimate."""
    from pystoi import stoi

    return float(stoi(clean, estimate, sr, extended=False)) if np.isfinite(estimate).all() else math.nan


def available_cpus() -> int:
    """CPUs this process may run on (affinity-aware), shared among torchrun's ranks on this node."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cpus // max(1, local_ranks))


def default_start_method() -> str:
    """forkserver where it exists (fork is unsafe after CUDA init or in a threaded parent), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


# What every worker needs, imported once in the forkserver (which forks the workers) rather than in each worker of
# each pool: pystoi pulls in scipy.signal (2-3 s of CPU), paid at every trainer start's first validation before.
# "__main__" is multiprocessing's own default, kept.
FORKSERVER_PRELOAD = ("__main__", "cmgan_lib.scoring.pesq_worker", "pystoi")


def preload_in_forkserver(context: multiprocessing.context.BaseContext) -> None:
    """Ask the forkserver to import FORKSERVER_PRELOAD when it starts (no effect once it runs; an import that
    fails there is skipped by multiprocessing, and the worker then imports it itself)."""
    context.set_forkserver_preload(list(FORKSERVER_PRELOAD))


def _pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:  # Linux: state is the field after "(comm)"
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): os.kill said it exists


def _watch_parent(owner: int, interval: float) -> None:
    """Exit this worker once the process that owns the pool is gone (or the forkserver that forked us).

    Workers of a ProcessPoolExecutor otherwise outlive a parent killed with SIGKILL: they block forever on
    a queue whose write end they hold themselves.
    """
    import time

    ppid = os.getppid()
    while _pid_alive(owner) and os.getppid() == ppid:
        time.sleep(interval)
    os._exit(0)


def _worker_init(owner: int | None = None, interval: float = 0.5) -> None:
    """Each worker runs one single-threaded PESQ at a time: keep any BLAS/torch from oversubscribing.
    With `owner` (the pool owner's pid), a daemon thread ends the worker when the owner dies."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    # Ctrl-C reaches the whole process group, and a cluster's USR1/USR2 (time up, preempted) every process of the
    # job: the owner decides when to stop (at a step boundary); a worker dying of them would break the pool under it
    for sig in (signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    torch = sys.modules.get("torch")  # only present if the parent's __main__ imported it
    if torch is not None:
        torch.set_num_threads(1)
    if owner is not None:
        import threading

        threading.Thread(target=_watch_parent, args=(owner, interval), name="pesq-parent-watch", daemon=True).start()


def _ping() -> int:
    return os.getpid()


def _as_1d(x) -> np.ndarray:
    """1-D contiguous floating array from a numpy array or a torch tensor (no torch import needed)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.ascontiguousarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D signal, got shape {arr.shape}")
    return arr


def as_signal_list(batch) -> list[np.ndarray]:
    """Rows of a (B, T) array/tensor, or the items of a sequence of 1-D signals, as numpy arrays."""
    if hasattr(batch, "detach"):
        batch = batch.detach().cpu().numpy()
    if isinstance(batch, np.ndarray):
        if batch.ndim != 2:
            raise ValueError(f"expected a (B, T) batch, got shape {batch.shape}")
        return [_as_1d(row) for row in batch]
    return [_as_1d(x) for x in batch]


class PesqWorkerDied(RuntimeError):
    """A PESQ worker process died again right after its pool was replaced."""


class PesqHandle:
    """A batch in flight: `result()` blocks until every chunk is back and returns (raw, reasons).

    When a worker dies (killed, out of memory) the pool is replaced and this batch scored again, once; a second
    death in a row raises PesqWorkerDied (one line, no BrokenProcessPool traceback)."""

    def __init__(self, futures: list[Future], size: int, pool: PesqPool | None = None, inputs: tuple = ()):
        self._futures = futures
        self.size = size
        self._pool, self._inputs = pool, inputs

    def done(self) -> bool:
        return all(f.done() for f in self._futures)

    def result(self, timeout: float | None = None) -> tuple[np.ndarray, list[str | None]]:
        while True:
            try:
                pairs: list[Result] = []
                for fut in self._futures:
                    pairs.extend(fut.result(timeout=timeout))
            except BrokenProcessPool:
                if self._pool is None:
                    raise
                self._pool.replace_broken()  # raises PesqWorkerDied on the second death in a row
                self._futures = self._pool.submit_chunks(*self._inputs)
                continue
            if self._pool is not None:
                self._pool.deaths_in_a_row = 0
            return _unzip(pairs)


def _unzip(pairs: list[Result]) -> tuple[np.ndarray, list[str | None]]:
    raw = np.array([p[0] for p in pairs], dtype=np.float64)
    return raw, [p[1] for p in pairs]


def serial_scores(clean, estimate, sr: int = 16000) -> tuple[np.ndarray, list[str | None]]:
    """(raw, reasons) computed in this process: the reference the pool must match exactly."""
    c, e = as_signal_list(clean), as_signal_list(estimate)
    if len(c) != len(e):
        raise ValueError(f"batch sizes differ: {len(c)} clean vs {len(e)} estimates")
    return _unzip(score_many(c, e, sr))


class PesqPool:
    """Persistent PESQ worker processes: create once, reuse for every batch, close at the end.

    Why not a new `joblib.Parallel` per call (the published code): each call pays dispatch setup and
    cannot overlap with the generator's backward pass. Here `submit` returns at once and the trainer
    collects `handle.result()` later. A batch goes out as even tasks of at most `chunk_size` samples (1: free
    workers take the next sample, which balances uneven clips and CPUs shared with data loading; None:
    one even chunk per worker, the fewest messages). Workers import
    only numpy + pesq; the start method defaults to forkserver/spawn, which are safe beside CUDA and DDP
    (the parent's `__main__` must be import-safe, as usual for multiprocessing). Under torchrun the
    default size is this node's CPUs divided by LOCAL_WORLD_SIZE, so ranks do not oversubscribe.
    """

    def __init__(
        self,
        n_workers: int | None = None,
        start_method: str | None = None,
        chunk_size: int | None = 1,
        sr: int = 16000,
        warm: bool = True,
    ):
        self.n_workers = int(n_workers) if n_workers else available_cpus()
        if self.n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        self.start_method = start_method or default_start_method()
        self.chunk_size = chunk_size
        self.sr = sr
        self.deaths_in_a_row = 0
        self._executor: ProcessPoolExecutor | None = self._new_executor()
        if warm:
            self.warm_up()

    def _new_executor(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            preload_in_forkserver(context)
        return ProcessPoolExecutor(
            max_workers=self.n_workers,
            mp_context=context,
            initializer=_worker_init,
            initargs=(os.getpid(),),
        )

    def replace_broken(self) -> None:
        """A worker died: start fresh workers, or raise PesqWorkerDied when the last replacement died as well."""
        self.deaths_in_a_row += 1
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self.deaths_in_a_row >= 2:
            self._executor = None
            raise PesqWorkerDied(
                f"a PESQ worker process died twice in a row ({self.n_workers} worker(s); killed, or out of memory?); "
                "stopping: the last checkpoint is untouched, resume the run once the cause is fixed"
            )
        print(f"warning: a PESQ worker process died; started {self.n_workers} new worker(s) and scoring the batch "
              "again", file=sys.stderr, flush=True)  # fmt: skip
        self._executor = self._new_executor()

    def warm_up(self) -> None:
        """Start every worker now, so the first training batch does not pay process start-up."""
        futures = [self._require().submit(_ping) for _ in range(self.n_workers)]
        for f in futures:
            f.result()

    def _require(self) -> ProcessPoolExecutor:
        if self._executor is None:
            raise RuntimeError("PesqPool is closed")
        return self._executor

    def submit(self, clean, estimate) -> PesqHandle:
        """Start scoring a batch; returns immediately. Inputs as for `as_signal_list`."""
        c, e = as_signal_list(clean), as_signal_list(estimate)
        if len(c) != len(e):
            raise ValueError(f"batch sizes differ: {len(c)} clean vs {len(e)} estimates")
        try:
            futures = self.submit_chunks(c, e)
        except BrokenProcessPool:  # a worker died since the last batch: replace the pool, then submit
            self.replace_broken()
            futures = self.submit_chunks(c, e)
        return PesqHandle(futures, len(c), pool=self, inputs=(c, e))

    def submit_chunks(self, c: list[np.ndarray], e: list[np.ndarray]) -> list[Future]:
        """The batch as futures of at most `chunk_size` pairs each."""
        executor = self._require()
        if self.chunk_size is None:
            n_chunks = max(1, min(len(c), self.n_workers))
        else:
            n_chunks = max(1, -(-len(c) // self.chunk_size))
        bounds = np.linspace(0, len(c), n_chunks + 1).round().astype(int)
        return [
            executor.submit(score_many, c[lo:hi], e[lo:hi], self.sr)
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
            if hi > lo
        ]

    def submit_stoi(self, clean: Sequence[np.ndarray], estimate: Sequence[np.ndarray]) -> list[Future]:
        """Validation's STOI of each pair in the workers, beside its PESQ (one future per pair)."""
        executor = self._require()
        return [executor.submit(stoi_one, c, e, self.sr) for c, e in zip(clean, estimate, strict=True)]

    def scores(self, clean, estimate) -> tuple[np.ndarray, list[str | None]]:
        """Blocking convenience: submit and wait."""
        return self.submit(clean, estimate).result()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    @property
    def closed(self) -> bool:
        return self._executor is None

    def __enter__(self) -> PesqPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"PesqPool(n_workers={self.n_workers}, start_method={self.start_method!r}, {state})"
