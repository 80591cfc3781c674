"""Step time of the trainer with and without its per-step logging (target: ratio <= 1.05).

Logging = the per-step CSV row (losses, disc_loss/skip, PESQ validity, pre-clip gradient norms of G and D,
learning rates, time), flushed every step. Runs alternate (on, off, on, off, ...) so that machine load hits
both alike; a step's time runs from its start to the next step's start (so the loop's CSV writing and
the next batch's loading count), and the figure is the median over all steps of each setting.

    python benchmarks/bench_train_step.py                 # tiny CPU config (and official on a GPU)
    python benchmarks/bench_train_step.py --steps 8 --repeats 3

`--published`: the published train step (benchmarks/published_step.py: literal einsum attention, a new
joblib call per batch for PESQ, no overlap) against this project's `Trainer.train_step`, same starting
weights, same batches, interleaved (the order alternates every batch), for each precision (fp32, tf32,
bf16); prints ms/step (median), ours/published, GFLOP per step (torch.utils.flop_counter) and achieved
GFLOP/s, and peak memory (torch.cuda.max_memory_allocated per side on CUDA; on CPU per side n/a, the process's
peak RSS instead); the header names torch, the intra-op threads and the CPU. Official config on CUDA, tiny on CPU:

    python benchmarks/bench_train_step.py --published --steps 20
    python benchmarks/bench_train_step.py --published --config configs/tiny_cpu.yaml --steps 2 batch_size=2
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cmgan_lib.training.config import load_config
from cmgan_lib.training.numerics import PRECISIONS
from cmgan_lib.training.train import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from published_step import PublishedStep  # noqa: E402


def step_times(config: str, log_steps: bool, steps: int, device: str | None, run_dir: str) -> list[float]:
    overrides = [f"run_dir={run_dir}", "epochs=1", f"max_steps_per_epoch={steps}", "val_max_files=1",
                 f"log_steps={str(log_steps).lower()}"]  # fmt: skip
    if device:
        overrides.append(f"device={device}")
    trainer = Trainer(load_config(config, overrides))
    starts: list[float] = []
    orig = trainer.train_step

    def timed(*args, **kwargs):  # the trainer passes the batch's file names too
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        starts.append(time.perf_counter())
        return orig(*args, **kwargs)

    trainer.train_step = timed
    trainer.fit()
    # wall time from one step's start to the next: the step, the loop's logging and the next batch's loading
    return list(np.diff(starts)[1:])  # the first interval includes warm-up


def bench(config: str, steps: int, repeats: int, device: str | None) -> None:
    on, off = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for flag, bucket in ((True, on), (False, off)):
                bucket += step_times(config, flag, steps, device, os.path.join(tmp, f"r{r}_{flag}"))
    a, b = float(np.median(on)), float(np.median(off))
    print(f"{config} on {device or 'auto'}: {len(on)} steps each")
    print(f"  with logging     median {a * 1000:8.1f} ms/step")
    print(f"  without logging  median {b * 1000:8.1f} ms/step")
    print(f"  ratio {a / b:.3f} (target <= 1.05: {'met' if a / b <= 1.05 else 'missed'})")


def _timed(fn, clean, noisy, device: torch.device) -> tuple[float, float]:
    """(seconds, peak bytes allocated during the call on CUDA, else nan)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    fn(clean, noisy)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    peak = float(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else float("nan")
    return seconds, peak


def _step_flops(fn, clean, noisy) -> float:
    """FLOPs of one call (matmuls and convolutions, forward and backward; torch.utils.flop_counter), so a step's
    time reads as achieved GFLOP/s against what the machine's matmul reaches."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn(clean, noisy)
    return float(counter.get_total_flops())


def bench_published(config: str, overrides: list[str], steps: int, precisions: list[str], warmup: int = 1,
                    ) -> list[dict[str, float | str]]:  # fmt: skip
    """Per precision: median ms/step of the published step and of ours on the same batches, their ratio
    and each side's peak memory. The first `warmup` batches are run and not counted."""
    results = []
    for precision in precisions:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(config, [f"run_dir={tmp}", "epochs=1", "val_max_files=1", "log_steps=false",
                                       *overrides, f"precision={precision}"])  # fmt: skip
            trainer = Trainer(cfg)
            try:
                published = PublishedStep(trainer)  # a copy of the trainer's initial weights
                first = list(itertools.islice(trainer.loader, warmup + steps))  # repeated if the corpus is small
                batches = list(itertools.islice(itertools.cycle(first), warmup + steps))
                sides = {"published": published.step, "ours": trainer.train_step}
                times: dict[str, list[float]] = {k: [] for k in sides}
                peaks: dict[str, float] = dict.fromkeys(sides, float("nan"))
                flops = {k: _step_flops(fn, *batches[0][:2]) for k, fn in sides.items()}  # an extra, uncounted step
                for i, (clean, noisy, _) in enumerate(batches):
                    for name in list(sides)[:: 1 if i % 2 == 0 else -1]:  # alternate who goes first
                        seconds, peak = _timed(sides[name], clean, noisy, trainer.device)
                        if i >= warmup:
                            times[name].append(seconds)
                            peaks[name] = peak if np.isnan(peaks[name]) else max(peaks[name], peak)
            finally:
                trainer.pool.close()
        pub, ours = (float(np.median(times[k])) * 1000 for k in ("published", "ours"))
        results.append(dict(precision=precision, device=str(trainer.device), steps=steps, published_ms=pub,
                            ours_ms=ours, ratio=ours / pub, published_peak_gib=peaks["published"] / 2**30,
                            ours_peak_gib=peaks["ours"] / 2**30, published_gflop=flops["published"] / 1e9,
                            ours_gflop=flops["ours"] / 1e9, published_gflops=flops["published"] / pub / 1e6,
                            ours_gflops=flops["ours"] / ours / 1e6))  # fmt: skip
    return results


def print_published(results: list[dict[str, float | str]]) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), {platform.machine()} "
          f"{platform.processor() or ''}".rstrip())  # fmt: skip
    print(f"{'precision':<9} {'device':<7} {'published ms':>12} {'ours ms':>9} {'ours/pub':>8} "
          f"{'peak pub GiB':>12} {'peak ours GiB':>13} {'GFLOP/step pub':>14} {'ours':>6} {'GFLOP/s pub':>11} "
          f"{'ours':>6}")  # fmt: skip
    for r in results:
        peaks = "".join(f" {r[k]:>{w}.2f}" if not np.isnan(r[k]) else f" {'n/a':>{w}}"
                        for k, w in (("published_peak_gib", 12), ("ours_peak_gib", 13)))  # fmt: skip
        print(f"{r['precision']:<9} {r['device']:<7} {r['published_ms']:12.1f} {r['ours_ms']:9.1f} "
              f"{r['ratio']:8.3f}{peaks} {r['published_gflop']:14.2f} {r['ours_gflop']:6.2f} "
              f"{r['published_gflops']:11.1f} {r['ours_gflops']:6.1f}")  # fmt: skip
    if any(str(r["device"]).startswith("cpu") for r in results):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
        print(
            f"CPU: per-side peak memory n/a; this process's peak RSS {rss:.2f} GiB (both sides together). "
            "tf32 has no effect on CPU."
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--published", action="store_true", help="published step vs ours, per precision")
    p.add_argument("--config", help="--published: default official.yaml on CUDA, tiny_cpu.yaml on CPU")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="--published: comma-separated")
    p.add_argument("--warmup", type=int, default=2, help="--published: uncounted first batches")
    p.add_argument("overrides", nargs="*", help="--published: key=value config overrides (e.g. device=cpu)")
    a = p.parse_args()
    print(
        f"{time.strftime('%Y-%m-%d')} {platform.machine()} cpus={os.cpu_count()} torch={torch.__version__} "
        f"load={os.getloadavg()[0]:.2f}"
    )
    if a.published:
        cuda = torch.cuda.is_available() and "device=cpu" not in a.overrides
        config = a.config or ("configs/official.yaml" if cuda else "configs/tiny_cpu.yaml")
        if cuda:
            print(torch.cuda.get_device_name())
        print(f"{config} {' '.join(a.overrides)}: {a.steps} steps per side after {a.warmup} warm-up")
        print_published(bench_published(config, a.overrides, a.steps, a.precisions.split(","), a.warmup))
        return
    bench("configs/tiny_cpu.yaml", a.steps, a.repeats, "cpu")
    if torch.cuda.is_available():
        print(torch.cuda.get_device_name())
        bench("configs/official.yaml", a.steps, a.repeats, "cuda")
    else:
        print("no GPU here: the official-config step time needs one (run this script on a GPU machine)")


if __name__ == "__main__":
    main()
