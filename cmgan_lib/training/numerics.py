"""Numeric precision and determinism switches of a training run (`precision`, `deterministic` in TrainConfig).

These are process-wide PyTorch settings, so `configure` sets every one of them explicitly, both ways: a
second run in the same process never inherits the first one's TF32 or deterministic mode.

- fp32: the published math. TF32 off for matmuls and cuDNN convolutions (PyTorch's own default leaves
  cuDNN convolutions on TF32, so "fp32" here is stricter than an untouched PyTorch).
- tf32: TF32 tensor cores for fp32 matmuls and convolutions (Ampere or newer NVIDIA GPUs; no effect on CPU).
- bf16: `torch.autocast` to bfloat16 around the generator and discriminator forward passes only; their
  outputs come back as fp32, so the loss terms, the iSTFT of the estimate and the PESQ labels stay fp32.
  bf16 keeps fp32's exponent range, so no GradScaler is needed.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

PRECISIONS = ("fp32", "tf32", "bf16")
CUBLAS_WORKSPACE = ":4096:8"  # cuBLAS needs a fixed workspace for bitwise-repeatable matmuls (CUDA >= 10.2)


def configure(precision: str, deterministic: bool) -> None:
    """Apply a run's precision and determinism settings; call before any CUDA work of the run."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}")
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if deterministic:
        # read when cuBLAS creates its handle: must be in the environment before the first CUDA matmul
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = False  # autotuning picks kernels by timing: a run-to-run difference
    torch.backends.cudnn.deterministic = deterministic


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device`'s type for precision "bf16"; a no-op context otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_fp32(out: Any) -> Any:
    """A model output (tensor or tuple of tensors) as fp32; fp32 tensors come back as they are (no copy)."""
    if isinstance(out, torch.Tensor):
        return out.float()
    return type(out)(to_fp32(o) for o in out)


def autocast_call(fn: Callable[..., Any], precision: str, device: torch.device) -> Callable[..., Any]:
    """`fn` run under `autocast(precision, device)` with fp32 outputs (the loss is computed outside)."""

    def call(*args: Any) -> Any:
        with autocast(precision, device):
            out = fn(*args)
        return to_fp32(out)

    return call


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: seed numpy and `random` from the worker's torch seed (itself derived from
    the loader's generator), so worker-side randomness is repeatable and differs between workers. A cluster's
    USR1/USR2 (time up, preempted) reach every process of a job: the trainer stops at a step boundary, and a
    worker must not die of them before it does."""
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def loader_generator(seed: int, epoch: int) -> torch.Generator:
    """The DataLoader's generator for one epoch: its workers' seeds are a function of (seed, epoch) alone,
    so they are the same after a resume; it leaves the global RNG (dropout) untouched."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)
