"""The ablation runner (`cmgan ablate`) and the whole study (`cmgan study`, `make study`).

Each variant x seed trains in its own process (`python -m cmgan_lib.train`), so one failing variant is
recorded and the others go on, and so runs can be spread over the GPUs in CUDA_VISIBLE_DEVICES. Finished
runs (a `done.json`) are skipped and interrupted ones resumed. Notebook 02 then plots all runs, notebook 03
evaluates them, and `summary.csv` gathers one row per run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cmgan_lib.paths import repo_root

# Each variant is a set of config overrides on top of the base config; "official" changes nothing.
SEED_FIXES = {"pesq_strategy": "batch_mean", "early_stopping": True, "es_patience": 15, "es_min_delta": 1e-4,
              "grad_clip_norm": 5.0}  # fmt: skip
VARIANTS: dict[str, dict[str, Any]] = {
    "official": {},
    "masked": {"pesq_strategy": "masked"},
    "seed_fixes": SEED_FIXES,
    "batch_mean_only": {"pesq_strategy": "batch_mean"},
    "early_stopping_only": {"early_stopping": True, "es_patience": 15, "es_min_delta": 1e-4},
    "clipping_only": {"grad_clip_norm": 5.0},
}
NOTEBOOKS = ("01_pesq_failure_audit", "02_train_baseline_vs_fixed", "03_evaluate")


@dataclass
class Grid:
    """What `cmgan ablate` runs: a base config, variants, seeds, and overrides shared by every run."""

    base_config: str = "configs/tiny_cpu.yaml"
    variants: list[str] = field(default_factory=lambda: ["official", "masked", "seed_fixes"])
    seeds: list[int] = field(default_factory=lambda: [0])
    overrides: dict[str, Any] = field(default_factory=dict)
    evaluate_max_files: int | None = None

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")


def load_grid(path: str | os.PathLike) -> Grid:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: grid file does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    try:
        return Grid(**data)
    except TypeError as exc:
        raise ValueError(f"{path}: {exc}") from None


def run_dir_for(run_root: str | os.PathLike, variant: str, seed: int) -> Path:
    return Path(run_root) / f"{variant}_s{seed}"


def train_overrides(variant: str, seed: int, run_dir: Path, extra: dict[str, Any]) -> list[str]:
    values = {**extra, **VARIANTS[variant], "seed": seed, "run_dir": str(run_dir)}
    return [f"{k}={json.dumps(v) if isinstance(v, list | bool) or v is None else v}" for k, v in values.items()]


def train_run(base_config: str, variant: str, seed: int, run_root: str | os.PathLike,
              overrides: dict[str, Any] | None = None, gpu: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Train one variant x seed in a subprocess (resuming an interrupted run); log to RUN/train.log."""
    run_dir = run_dir_for(run_root, variant, seed)
    status = dict(run=run_dir.name, variant=variant, seed=seed, run_dir=str(run_dir))
    if (run_dir / "done.json").is_file():
        return {**status, "status": "done (skipped)", "seconds": 0.0}
    run_dir.mkdir(parents=True, exist_ok=True)
    args = train_overrides(variant, seed, run_dir, overrides or {})
    if (run_dir / "last.pt").is_file():  # interrupted: continue where it stopped
        cmd = [sys.executable, "-m", "cmgan_lib.train", "--resume", str(run_dir), *args]
    else:
        cmd = [sys.executable, "-m", "cmgan_lib.train", "--config", base_config, *args]
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    t0 = time.perf_counter()
    with open(run_dir / "train.log", "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=repo_root())
    seconds = time.perf_counter() - t0
    if rc == 0:
        (run_dir / "done.json").write_text(json.dumps({"seconds": seconds, "cmd": cmd}))
        return {**status, "status": "done", "seconds": seconds}
    tail = (run_dir / "train.log").read_text().strip().splitlines()[-1:] or [""]
    return {**status, "status": f"failed (exit {rc}): {tail[0][:200]}", "seconds": seconds}


def visible_gpus() -> list[str]:
    """GPU ids from CUDA_VISIBLE_DEVICES (or all CUDA devices); empty on a CPU machine."""
    ids = os.environ.get("CUDA_VISIBLE_DEVICES")
    if ids is not None:
        return [i.strip() for i in ids.split(",") if i.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def run_grid(grid: Grid, run_root: str | os.PathLike, progress: bool = True) -> pd.DataFrame:
    """Train every variant x seed: one at a time on CPU, one per GPU at a time on GPUs."""
    from tqdm.auto import tqdm

    jobs = [(v, s) for s in grid.seeds for v in grid.variants]
    gpus = visible_gpus()
    bar = tqdm(total=len(jobs), desc="ablation runs", unit="run", disable=not progress)

    def work(i_job):
        i, (variant, seed) = i_job
        gpu = gpus[i % len(gpus)] if gpus else None
        result = train_run(grid.base_config, variant, seed, run_root, grid.overrides, gpu=gpu)
        bar.update()
        bar.write(f"{result['run']}: {result['status']} ({result['seconds']:.0f} s)")
        return result

    with ThreadPoolExecutor(max_workers=max(1, len(gpus))) as ex:
        results = list(ex.map(work, enumerate(jobs)))
    bar.close()
    status = pd.DataFrame(results)
    Path(run_root).mkdir(parents=True, exist_ok=True)
    status.to_csv(Path(run_root) / "status.csv", index=False)
    return status


def execute_notebook(name: str, out_dir: str | os.PathLike, parameters: dict[str, Any]) -> Path:
    """Run notebooks/NAME.ipynb with papermill into OUT/NAME.ipynb and render OUT/NAME.html without the code
    cells (a reader's report; the executed notebook beside it keeps the code)."""
    import papermill as pm

    root = repo_root()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}.ipynb"
    pm.execute_notebook(str(root / "notebooks" / f"{name}.ipynb"), str(target), parameters=parameters,
                        cwd=str(root), progress_bar=False, kernel_name="python3")  # fmt: skip
    subprocess.run([sys.executable, "-m", "nbconvert", "--to", "html", "--no-input", str(target), "--output-dir",
                    str(out)], check=True, capture_output=True)  # fmt: skip
    return target


def write_summary(run_root: Path, out: Path, status: pd.DataFrame | None = None) -> pd.DataFrame:
    """summary.csv: one row per run (status, training facts, and test metrics when notebook 03 wrote them)."""
    from cmgan_lib.training_report import load_run_configs, load_runs, run_summary

    epochs, steps = load_runs(run_root)
    summary = run_summary(epochs, steps, load_run_configs(run_root)) if len(epochs) else pd.DataFrame(columns=["run"])
    if status is not None and len(status):
        summary = status[["run", "variant", "seed", "status"]].merge(summary, on=["run", "variant", "seed"],
                                                                       how="left")  # fmt: skip
    per_file = out / "evaluate" / "metrics_per_file.csv"  # written by notebook 03 (report.evaluate_runs)
    if per_file.is_file() and len(summary):
        from cmgan_lib.metrics import METRIC_NAMES

        scores = pd.read_csv(per_file)
        if "reason" in scores:
            scores = scores[scores.reason.isna()]
        test = scores.groupby("run")[list(METRIC_NAMES)].mean().add_prefix("test_").reset_index()
        summary = summary.merge(test, on="run", how="left")
    summary.to_csv(out / "summary.csv", index=False)
    return summary


def run_ablation(grid: str | os.PathLike | Grid, out: str | os.PathLike, notebooks: bool = True,
                 status: pd.DataFrame | None = None) -> pd.DataFrame:  # fmt: skip
    """`cmgan ablate`: train the grid into OUT/runs (unless `status` says it was), then notebook 02 (plots)
    and 03 (metrics), and summary.csv."""
    grid = grid if isinstance(grid, Grid) else load_grid(grid)
    out = Path(out)
    run_root = out / "runs"
    if status is None:
        status = run_grid(grid, run_root)
    if notebooks:
        execute_notebook("02_train_baseline_vs_fixed", out, dict(run_root=str(run_root.resolve()), train=False,
                                                                  out_dir=str(out.resolve())))  # fmt: skip
        execute_notebook("03_evaluate", out, dict(run_root=str(run_root.resolve()),
                                                  out_dir=str((out / "evaluate").resolve()),
                                                  max_files=grid.evaluate_max_files))  # fmt: skip
    summary = write_summary(run_root, out, status)
    failed = status[status.status.str.startswith("failed")]
    print(f"{len(status) - len(failed)} of {len(status)} runs finished; summary: {out / 'summary.csv'}")
    for _, row in failed.iterrows():
        print(f"  {row.run}: {row.status} (log: {row.run_dir}/train.log)")
    return summary


def run_study(out: str | os.PathLike = "runs/STUDY", grid: str | os.PathLike = "configs/ablation_tiny.yaml") -> None:
    """`make study`: the embedded synthetic corpus, notebook 01, a short CPU ablation, notebooks 02 and 03."""
    from cmgan_lib.train import load_config, resolve_data_dir

    os.chdir(repo_root())
    out = Path(out)
    t0 = time.perf_counter()
    g = load_grid(grid)
    print(f"[1/4] synthetic corpus: {resolve_data_dir(load_config(g.base_config))}")
    print(f"[2/4] ablation: {', '.join(g.variants)} x seeds {g.seeds} ({g.base_config})")
    run_root = out / "runs"
    status = run_grid(g, run_root)
    print("[3/4] notebook 01: PESQ failure audit (with the ablation's step logs for the claims table)")
    # claim 4 is about disc_loss after the fix: the seed_fixes runs when the grid has them
    fixed = [str(run_dir_for(run_root, "seed_fixes", s).resolve()) for s in g.seeds] \
        if "seed_fixes" in g.variants else [str(run_root.resolve())]  # fmt: skip
    execute_notebook("01_pesq_failure_audit", out, dict(out_dir=str((out / "audit").resolve()), train_log=fixed))
    print("[4/4] notebooks 02 (training curves) and 03 (metrics), summary.csv")
    run_ablation(g, out, status=status)
    print(f"study finished in {time.perf_counter() - t0:.0f} s: {out}/ (notebooks, HTML reports, summary.csv)")
