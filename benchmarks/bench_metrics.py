"""Time the full metric suite against PESQ + STOI alone on the 25 shared tracks, files in parallel.

The composite measures (WSS, LLR, segmental SNR) should cost at most half of what PESQ and STOI cost:
target ratio full / (PESQ + STOI) <= 1.5.

    PYTHONPATH=. python benchmarks/bench_metrics.py [--data ../shared/data/voicebank_demand_samples]
        [--jobs N] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from joblib import Parallel, delayed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cmgan_lib.scoring import metrics as M  # noqa: E402


def _load(clean_path: str, noisy_path: str) -> tuple[np.ndarray, np.ndarray]:
    return sf.read(clean_path, dtype="float32")[0], sf.read(noisy_path, dtype="float32")[0]


def full_suite(clean_path: str, noisy_path: str) -> dict[str, float]:
    return M.compute_metrics(*_load(clean_path, noisy_path))


def pesq_stoi_only(clean_path: str, noisy_path: str) -> tuple[float, float]:
    x, y = (M.to_float(a) for a in _load(clean_path, noisy_path))
    return M.pesq_wb(x, y), M.stoi(x, y)


def composites_only(clean_path: str, noisy_path: str) -> tuple[float, float, float]:
    x, y = (M.to_float(a) + float(np.spacing(1)) for a in _load(clean_path, noisy_path))
    return (
        M._trimmed_mean(M.wss_frames(x, y)),
        M._trimmed_mean(M.llr_frames(x, y)),
        float(np.mean(M.segsnr_frames(x, y))),
    )


def _time(parallel: Parallel, func, pairs) -> float:
    start = time.perf_counter()
    parallel(delayed(func)(c, n) for c, n in pairs)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    default_data = ROOT.parent / "shared" / "data" / "voicebank_demand_samples"
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=default_data, help="folder with clean/ and noisy/")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: all CPUs)")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)

    names = sorted(q.stem for q in (a.data / "clean").glob("*.wav"))
    pairs = [(str(a.data / "clean" / f"{n}.wav"), str(a.data / "noisy" / f"{n}.wav")) for n in names]
    if not pairs:
        print(f"no WAV pairs under {a.data}", file=sys.stderr)
        return 2
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    jobs = a.jobs or cpus
    seconds = sum(sf.info(c).duration for c, _ in pairs)
    print(f"{len(pairs)} tracks, {seconds:.1f} s of audio; {jobs} worker processes on {cpus} CPUs")
    print(f"{platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}")

    with Parallel(n_jobs=jobs) as parallel:
        parallel(delayed(full_suite)(c, n) for c, n in pairs[:jobs])  # warm the workers (imports, caches)
        suites = {
            "full suite (PESQ CSIG CBAK COVL SSNR STOI)": full_suite,
            "PESQ + STOI alone": pesq_stoi_only,
            "WSS + LLR + segSNR alone": composites_only,
        }
        runs: dict[str, list[float]] = {label: [] for label in suites}
        for _ in range(a.repeats):  # interleaved, so a load change on a shared machine hits all alike
            for label, func in suites.items():
                runs[label].append(_time(parallel, func, pairs))
    for label, times in runs.items():
        print(f"{label:<44} median {statistics.median(times):.3f} s  runs {[round(t, 3) for t in times]}")
    f, b = (statistics.median(t) for t in list(runs.values())[:2])
    ratio = f / b
    print(f"ratio full / (PESQ + STOI) = {ratio:.2f}  (target <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
