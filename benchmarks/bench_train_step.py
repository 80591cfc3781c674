"""Step time of the trainer with and without its per-step logging (target: ratio <= 1.05).

Logging = the per-step CSV row (losses, disc_loss/skip, PESQ validity, pre-clip gradient norms of G and D,
learning rates, time), flushed every step. Runs alternate (on, off, on, off, ...) so that machine load hits
both alike; a step's time runs from its start to the next step's start (so the loop's CSV writing and
the next batch's loading count), and the figure is the median over all steps of each setting.

    python benchmarks/bench_train_step.py                 # tiny CPU config (and official on a GPU)
    python benchmarks/bench_train_step.py --steps 8 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import torch

from cmgan_lib.train import Trainer, load_config


def step_times(config: str, log_steps: bool, steps: int, device: str | None, run_dir: str) -> list[float]:
    overrides = [f"run_dir={run_dir}", "epochs=1", f"max_steps_per_epoch={steps}", "val_max_files=0",
                 f"log_steps={str(log_steps).lower()}"]  # fmt: skip
    if device:
        overrides.append(f"device={device}")
    trainer = Trainer(load_config(config, overrides))
    starts: list[float] = []
    orig = trainer.train_step

    def timed(clean, noisy):
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        starts.append(time.perf_counter())
        return orig(clean, noisy)

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    print(
        f"{time.strftime('%Y-%m-%d')} {platform.machine()} cpus={os.cpu_count()} torch={torch.__version__} "
        f"load={os.getloadavg()[0]:.2f}"
    )
    bench("configs/tiny_cpu.yaml", a.steps, a.repeats, "cpu")
    if torch.cuda.is_available():
        print(torch.cuda.get_device_name())
        bench("configs/official.yaml", a.steps, a.repeats, "cuda")
    else:
        print("no GPU here: the official-config step time needs one (run this script on a GPU machine)")


if __name__ == "__main__":
    main()
