"""ms per batch of PESQ labels: serial loop, a new joblib.Parallel per call (published), this project's pool.

Run from the repository root: `PYTHONPATH=$PWD python benchmarks/bench_pesq_labels.py [--repeats N]`.
Clips: two-second crops (`crop_pair`) of the shared Voice Bank + DEMAND samples; estimate = the noisy crop.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

from cmgan_lib.core.audio import read_wav
from cmgan_lib.data.crops import crop_pair
from cmgan_lib.scoring.pesq_worker import PesqPool, available_cpus, score_many, score_one

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("CMGAN_SHARED", ROOT.parent / "shared")) / "data/voicebank_demand_samples"


def load_crops(data: Path, n: int, cut_len: int = 32000, seed: int = 0) -> tuple[list, list]:
    names = sorted(p.name for p in (data / "clean").glob("*.wav"))
    if not names:
        raise SystemExit(f"no WAVs under {data}/clean")
    rng = np.random.default_rng(seed)
    clean, noisy = [], []
    for i in range(n):
        name = names[i % len(names)]
        c, e = crop_pair(read_wav(data / "clean" / name), read_wav(data / "noisy" / name), cut_len, rng)
        clean.append(c)
        noisy.append(e)
    return clean, noisy


def serial(clean, est):
    return score_many(clean, est)


def joblib_per_call(clean, est):
    # As published: a new Parallel(n_jobs=-1) object for every batch.
    return Parallel(n_jobs=-1)(delayed(score_one)(c, e) for c, e in zip(clean, est, strict=True))


def _tree_jiffies(pid: int) -> int:
    """utime + stime (+ waited-for children) of a process and all its live descendants, from /proc."""
    total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                stack.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def foreign_cpu_seconds() -> float | None:
    """CPU time used on this machine by processes outside this benchmark's tree (Linux; else None)."""
    try:
        busy = sum(int(x) for i, x in enumerate(Path("/proc/stat").read_text().split()[1:11]) if i not in (3, 4))
    except (FileNotFoundError, ValueError):
        return None
    return (busy - _tree_jiffies(os.getpid())) / os.sysconf("SC_CLK_TCK")


def time_interleaved(fns: list, repeats: int) -> list[tuple[float, float]]:
    """(min, median) ms per call; methods alternate each round so background load hits all alike.

    The minimum is the figure to compare: other work on a shared machine only ever adds time.
    """
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeats):
        order = list(range(len(fns)))
        order = order[r % len(order) :] + order[: r % len(order)]
        for i in order:
            t0 = time.perf_counter()
            fns[i]()
            times[i].append((time.perf_counter() - t0) * 1e3)
    return [(min(t), statistics.median(t)) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--chunk-size", type=int, default=1, help="samples per pool task; 0 = one per worker")
    args = parser.parse_args()

    cores = available_cpus()
    print(f"date {datetime.date.today()}  host {platform.node()}  {platform.processor() or platform.machine()}")
    print(f"python {platform.python_version()}  cores available {cores}  os.cpu_count {os.cpu_count()}")
    print(f"load average at start {os.getloadavg()[0]:.2f}")
    print(f"repeats {args.repeats}, interleaved; ms per batch as min / median; ratios from min (median)")
    print(f"pool chunk size {args.chunk_size or 'one chunk per worker'}")
    print("clips: 2 s training crops of real speech, estimate = the noisy crop")
    head = ["(a) serial", "(b) joblib/call", "(c) pool", "(c)/(b)", "(c)/((a)/cores)"]
    print(f"{'B':>3} {head[0]:>15} {head[1]:>15} {head[2]:>15} {head[3]:>13} {head[4]:>16}")
    foreign0, wall0 = foreign_cpu_seconds(), time.perf_counter()
    with PesqPool(chunk_size=args.chunk_size or None) as pool:
        for b in args.sizes:
            clean, est = load_crops(args.data, b)
            ref = serial(clean, est)
            assert joblib_per_call(clean, est) == ref
            assert pool.submit(clean, est).result()[1] == [r for _, r in ref]
            (a, a_med), (bb, b_med), (cc, c_med) = time_interleaved(
                [
                    lambda c=clean, e=est: serial(c, e),
                    lambda c=clean, e=est: joblib_per_call(c, e),
                    lambda c=clean, e=est: pool.submit(c, e).result(),
                ],
                args.repeats,
            )
            print(
                f"{b:>3} {a:>6.1f} / {a_med:>6.1f} {bb:>6.1f} / {b_med:>6.1f} {cc:>6.1f} / {c_med:>6.1f}"
                f" {cc / bb:>6.2f} ({c_med / b_med:.2f})"
                f" {cc / (a / cores):>9.2f} ({c_med / (a_med / cores):.2f})"
            )
        # Dispatch overhead alone: silent estimates fail before PESQ runs, so only IPC and bookkeeping remain.
        clean, est = load_crops(args.data, 16)
        est = [np.zeros_like(e) for e in est]
        (a, _), (bb, _), (cc, _) = time_interleaved(
            [
                lambda: serial(clean, est),
                lambda: joblib_per_call(clean, est),
                lambda: pool.submit(clean, est).result(),
            ],
            args.repeats,
        )
        print(f"overhead only (B=16, no PESQ run), min ms: serial {a:.1f}, joblib/call {bb:.1f}, pool {cc:.1f}")
    foreign1, wall1 = foreign_cpu_seconds(), time.perf_counter()
    if foreign0 is not None and foreign1 is not None:
        share = (foreign1 - foreign0) / ((wall1 - wall0) * (os.cpu_count() or 1))
        print(f"other processes used {100 * share:.1f}% of the machine's CPU during the run")
    print("targets: (c)/(b) <= 0.80 at B=4; (c)/((a)/cores) <= 1.25 at B=16")
    print(f"load average at end {os.getloadavg()[0]:.2f} (figures are only meaningful on an idle machine)")


if __name__ == "__main__":
    main()
