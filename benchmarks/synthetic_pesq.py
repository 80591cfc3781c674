"""Measure the synthetic corpus against its targets: generation time and noisy-vs-clean PESQ-WB.

Usage: python benchmarks/synthetic_pesq.py OUT [--n-train 160] [--n-test 40] [--seed 0]
Prints the generation time, then the mean, spread and per-SNR / per-noise means of PESQ-WB of the
noisy test files against the clean ones (hard clips reported apart: PESQ is undefined for some).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import pandas as pd
from joblib import Parallel, delayed
from pesq import pesq

from cmgan_lib.core.audio import read_wav
from cmgan_lib.data.synthetic import make_dataset


def pesq_wb(clean_path: Path, noisy_path: Path) -> float:
    try:
        return float(pesq(16000, read_wav(clean_path), read_wav(noisy_path), "wb"))
    except Exception:  # PESQ refuses clips without detectable speech or shorter than 0.25 s
        return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--n-train", type=int, default=160)
    ap.add_argument("--n-test", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    out = Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    manifest = make_dataset(out, n_train=a.n_train, n_test=a.n_test, seed=a.seed, progress=False)
    print(f"generated {len(manifest)} clips in {time.perf_counter() - t0:.1f} s")
    test = manifest[manifest.split == "test"].copy()
    test["pesq"] = Parallel(n_jobs=-1)(
        delayed(pesq_wb)(out / "test" / "clean" / f, out / "test" / "noisy" / f) for f in test.file
    )
    ordinary = test[test.hard_kind == "ordinary"]
    p = ordinary.pesq
    print(
        f"PESQ-WB noisy vs clean, ordinary test clips (n={p.notna().sum()}): "
        f"mean {p.mean():.3f}, sd {p.std():.3f}, min {p.min():.3f}, max {p.max():.3f}"
    )
    print("per SNR:", ordinary.groupby("snr_db").pesq.mean().round(3).to_dict())
    print("per noise:", ordinary.groupby("noise_type").pesq.mean().round(3).to_dict())
    allp = test.pesq
    print(f"all test clips incl. hard (n={allp.notna().sum()} scored of {len(test)}): mean {allp.mean():.3f}")
    with pd.option_context("display.width", 160):
        print(test[test.hard_kind != "ordinary"][["file", "hard_kind", "snr_db", "pesq"]].to_string())


if __name__ == "__main__":
    main()
