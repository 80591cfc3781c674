"""How much memory enhancing a chunk takes, and how much the device has: the chunk length of `enhance`.

Why: the generator's time conformer attends over every frame of a chunk, so memory grows with the square of
the chunk's length. The published 16 s chunks need about 40 GB each (with the official and the tiny model
alike: the (frames x frames) attention logits dominate), more than most machines have; a chunk length is
therefore chosen from the memory the device has free.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cmgan_lib.core.dsp import HOP, N_FFT

HEADS = 4  # TSCB's conformers
BUDGET_FRACTION = 0.5  # of the free memory: room for the rest of the process and for other processes


def enhance_bytes(model: torch.nn.Module, chunks: int, chunk_len: int) -> int:
    """Peak bytes (an upper estimate) of one forward pass over `chunks` chunks of `chunk_len` samples.

    Time attention on (chunks x F') sequences of T frames holds the relative-position logits (T x 2T-1) and
    the softmax scores (T x T) per head; frequency attention the same over F' bins; the dense blocks hold
    about forty (C x T x F) float maps. Calibrated against peak RSS (tests/test_nothing_lost.py).
    """
    channels = int(getattr(model, "num_channel", 64))
    features = int(getattr(model, "num_features", N_FFT // 2 + 1))
    half = (features - 1) // 2 + 1  # F' after the encoder's stride-2 convolution
    frames = chunk_len // HOP + 1
    time_attn = 4 * HEADS * half * frames * (2 * frames - 1) + 2 * 4 * HEADS * half * frames * frames
    freq_attn = 4 * HEADS * frames * half * (2 * half - 1) + 2 * 4 * HEADS * frames * half * half
    maps = 40 * 4 * channels * frames * features
    return chunks * (time_attn + freq_attn + maps)


def _cgroup_free() -> int | None:
    """Bytes left under this container's cgroup (v2 or v1) memory limit, or None without a limit."""
    files = (("memory.max", "memory.current"), ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"))
    for limit, usage in files:
        try:
            cap = (Path("/sys/fs/cgroup") / limit).read_text().strip()
            used = int((Path("/sys/fs/cgroup") / usage).read_text())
        except (OSError, ValueError):
            continue
        if cap.isdigit() and int(cap) < 2**60:
            return max(0, int(cap) - used)
    return None


def host_free_bytes() -> int:
    """MemAvailable (Linux; what can be allocated without swapping), capped by a cgroup limit."""
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if free is None:  # macOS and others: physical pages as an upper bound
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cgroup = _cgroup_free()
    return min(free, cgroup) if cgroup is not None else free


def free_bytes(device: torch.device) -> int:
    """Memory an enhancement on `device` may use: the device's free memory (CUDA), else the host's."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return host_free_bytes()


def memory_budget(device: torch.device) -> int:
    return int(BUDGET_FRACTION * free_bytes(device))


def longest_chunk(model: torch.nn.Module, budget: int, upper: int) -> int:
    """The longest chunk (a multiple of the hop, at least n_fft, at most `upper` samples) whose forward pass
    fits in `budget` bytes."""
    lo, hi = 1, max(1, upper // HOP)
    while lo < hi:  # largest n with enhance_bytes(n * HOP) <= budget
        mid = (lo + hi + 1) // 2
        if enhance_bytes(model, 1, mid * HOP) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return max(lo * HOP, -(-N_FFT // HOP) * HOP)
