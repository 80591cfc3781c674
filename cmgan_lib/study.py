"""The ablation runner (`cmgan ablate`) and the whole study (`cmgan study`, `make study`).

Each variant x seed trains in its own process (`python -m cmgan_lib.training.train`), so one failing variant is
recorded and the others go on, and so runs can be spread over the GPUs in CUDA_VISIBLE_DEVICES. Finished
runs (a `done.json`) are skipped and interrupted ones resumed. Notebook 02 then plots all runs, notebook 03
evaluates them, and `summary.csv` gathers one row per run.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cmgan_lib.core.paths import replace_text, repo_root, run_config, shown_path
from cmgan_lib.core.strict_yaml import load_unique
from cmgan_lib.training import runguard
from cmgan_lib.training.runs import TEST_SCORES, resolve_checkpoint
from cmgan_lib.training.variants import VARIANTS

NOTEBOOKS = ("01_pesq_failure_audit", "02_train_baseline_vs_fixed", "03_evaluate")
# what a shared report also carries when rendered into the ablation folder (scripts/confirmatory_report.sh)
REPORT_NOTEBOOKS = (*NOTEBOOKS, "04_confirmatory")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # a process's torch (OpenMP, MKL) intra-op threads


def thread_share(parts: int) -> int:
    """Each of `parts` processes' even share of this machine's cores as torch threads (at least 1)."""
    return max(1, (os.cpu_count() or 1) // max(1, parts))


@contextmanager
def thread_env(threads: int) -> Iterator[None]:
    """THREAD_VARIABLES set to `threads` in this process's environment (what a child started inside inherits),
    restored on the way out, unset ones unset again."""
    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class Grid:
    """What `cmgan ablate` runs: a base config, variants, seeds, and overrides shared by every run.

    `variants` is a list of known names (VARIANTS) or a mapping name -> overrides (a known name's own
    switches apply first), so a grid file can define e.g. `official_p186: {pesq_fail_inject: 0.186}`.
    `comparisons` lists [variant, reference] pairs for notebook 02's verdict (empty: each against official).
    `slurm`: the cluster options of `cmgan ablate --executor slurm` (cluster.SlurmOptions' fields; the command
    line overrides them). `test_after_training`: score each run's best checkpoint on the grid's test split as soon
    as it finishes (RUN/test/; local grids), so that its test scores outlive the checkpoint (a fresh checkout
    keeps no run folder; a shared report keeps no checkpoint).
    """

    base_config: str = "configs/tiny_cpu.yaml"
    variants: list[str] | dict[str, dict[str, Any]] = field(
        default_factory=lambda: ["official", "masked", "seed_fixes"]
    )
    seeds: list[int] = field(default_factory=lambda: [0])
    overrides: dict[str, Any] = field(default_factory=dict)
    evaluate_max_files: int | None = None
    comparisons: list[list[str]] = field(default_factory=list)
    slurm: dict[str, Any] = field(default_factory=dict)
    test_after_training: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.variants, dict):
            self.variants = {str(k): {**VARIANTS.get(str(k), {}), **(v or {})} for k, v in self.variants.items()}
        else:
            unknown = [v for v in self.variants if v not in VARIANTS]
            if unknown:
                raise ValueError(f"unknown variants {unknown}; known: {sorted(VARIANTS)} (or give a mapping "
                                 "name -> overrides)")  # fmt: skip
            self.variants = {v: dict(VARIANTS[v]) for v in self.variants}
        bad = [c for c in self.comparisons if len(c) != 2 or not set(c) <= set(self.variants)]
        if bad:
            raise ValueError(f"comparisons {bad} must be [variant, reference] pairs of variants in the grid")

    def variant_overrides(self, variant: str) -> dict[str, Any]:
        return dict(self.variants[variant])

    def jobs(self) -> list[tuple[str, int]]:
        """(variant, seed) in training order: seed by seed, so a time limit leaves out whole seeds."""
        return [(v, s) for s in self.seeds for v in self.variants]

    def resolved_comparisons(self) -> list[list[str]]:
        from cmgan_lib.analysis.training_analysis import default_comparisons

        return [list(c) for c in self.comparisons] if self.comparisons else default_comparisons(list(self.variants))

    def data_dir(self, build: bool = False) -> Path:
        """The data every run of the grid trains on (the base config's synthetic corpus when data_dir is null;
        `build`: generate that corpus when it is missing)."""
        from cmgan_lib.training.config import load_config, resolve_data_dir

        cfg = load_config(self.base_config, as_overrides(self.overrides))
        return resolve_data_dir(cfg, is_main=build)

    def to_dict(self) -> dict[str, Any]:
        return dict(base_config=self.base_config, variants=self.variants, seeds=list(self.seeds),
                    overrides=self.overrides, evaluate_max_files=self.evaluate_max_files,
                    comparisons=self.resolved_comparisons(),
                    **({"slurm": self.slurm} if self.slurm else {}),
                    **({"test_after_training": True} if self.test_after_training else {}))  # fmt: skip


def load_grid(path: str | os.PathLike) -> Grid:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: grid file does not exist")
    try:
        data = load_unique(path.read_text(), path) or {}  # a key given twice is refused, naming it
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    try:
        return Grid(**data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def run_dir_for(run_root: str | os.PathLike, variant: str, seed: int) -> Path:
    from cmgan_lib.training.runs import run_name

    return Path(run_root) / run_name(variant, seed)


def as_overrides(values: dict[str, Any]) -> list[str]:
    """key=value strings that `config.load_config` parses back to the same values."""
    return [f"{k}={json.dumps(v) if isinstance(v, list | bool) or v is None else v}" for k, v in values.items()]


def grid_values(variant: str | dict[str, Any], seed: int, extra: dict[str, Any]) -> dict[str, Any]:
    """The config keys the grid sets for one run: its overrides, the variant's switches (they win), the seed."""
    switches = VARIANTS[variant] if isinstance(variant, str) else variant
    return {**extra, **switches, "seed": seed}


def train_overrides(variant: str | dict[str, Any], seed: int, run_dir: Path, extra: dict[str, Any]) -> list[str]:
    return as_overrides({**grid_values(variant, seed, extra), "run_dir": str(run_dir)})


def grid_differences(run_dir: Path, wanted: dict[str, Any]) -> list[str]:
    """'key: old -> new' for each key the grid sets that the run's config.yaml holds otherwise (or lacks), both
    read as the trainer reads them. Why: a finished run trained with another recipe must not pass for this one."""
    from cmgan_lib.training.config import config_changes

    if not (run_dir / "config.yaml").is_file():
        return []
    raw = run_config(run_dir)
    try:
        new, changes = config_changes(run_dir, as_overrides(wanted))
    except ValueError as exc:
        return [f"config.yaml unreadable by this trainer ({str(exc)[:200]})"]
    old = {k: o for k, o, _ in changes}
    new_d = new.to_dict()
    return [f"{k}: {old.get(k, new_d[k]) if k in raw else '(no key)'} -> {new_d[k]}" for k in wanted
            if k not in raw or k in old]  # fmt: skip


class AblationInterrupted(Exception):
    """Ctrl-C during `cmgan ablate`: the trainers stopped at a step boundary and status.csv says what ran."""

    exit_code = 130  # what a shell reports for a process ended by SIGINT


class Trainers:
    """The trainer processes a grid started, so that Ctrl-C stops each at its next step boundary (SIGTERM; a
    trainer that already got the terminal's SIGINT ignores it) and starts no more."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen] = set()
        self.stopping = False

    def start(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen | None:
        """Popen(cmd), or None once a stop was asked for (checked under the lock: none starts after `stop`)."""
        with self.lock:
            if self.stopping:
                return None
            proc = subprocess.Popen(cmd, **kwargs)
            self.running.add(proc)
            return proc

    def wait(self, proc: subprocess.Popen) -> int:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # waiting in the main thread (no grid): stop it cleanly, not by SIGKILL
            proc.terminate()
            proc.wait()
            raise
        finally:
            with self.lock:
                self.running.discard(proc)

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            for proc in self.running:
                proc.terminate()


def trainer_command(nproc: int = 1) -> list[str]:
    """The command that starts the trainer: itself, or torchrun over `nproc` local processes (one per GPU; the
    DDP path of train.py). torchrun forwards a cluster's USR1/USR2 to its workers (TORCHELASTIC_SIGNALS_TO_HANDLE,
    trainer_env) so that they stop together at a step boundary. The package's `__main__`, not
    `cmgan_lib.training.train`: PESQ workers then never import the trainer and torch (training/__main__.py)."""
    if nproc <= 1:
        return [sys.executable, "-m", "cmgan_lib.training"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
            "cmgan_lib.training"]  # fmt: skip


TORCHRUN_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1,SIGUSR2"  # torchrun's defaults and the requeue signals


def train_run(base_config: str, variant: str, seed: int, run_root: str | os.PathLike,
              overrides: dict[str, Any] | None = None, gpu: str | None = None,
              switches: dict[str, Any] | None = None, threads: int | None = None,
              trainers: Trainers | None = None, started: Callable[[subprocess.Popen], None] | None = None,
              nproc: int = 1) -> dict[str, Any]:  # fmt: skip
    """Train one variant x seed in a subprocess (resuming an interrupted run); log to RUN/train.log.

    `switches`: the variant's overrides (default: VARIANTS[variant]). A finished run is skipped only when its
    config.yaml holds what the grid asks for; otherwise its status is 'failed: config differs from the grid'.
    `threads`: the trainer's intra-op threads (OMP_NUM_THREADS), when several runs share the CPU. `trainers`: the
    grid's running trainers (a stopped grid starts none and names its stopped runs 'interrupted').
    `started(process)`: called once the trainer has started (cluster.py forwards a requeue signal to it).
    `nproc` > 1: torchrun over that many processes (one per GPU)."""
    trainers = trainers if trainers is not None else Trainers()
    run_dir = run_dir_for(run_root, variant, seed)
    status = dict(run=run_dir.name, variant=variant, seed=seed, run_dir=str(run_dir))
    variant_switches = switches if switches is not None else variant
    if (run_dir / "done.json").is_file():
        differs = grid_differences(run_dir, grid_values(variant_switches, seed, overrides or {}))
        if differs:
            return {**status, "status": f"failed: config differs from the grid ({', '.join(differs)}); use another "
                    "--out or delete the run", "seconds": 0.0}  # fmt: skip
        return {**status, "status": "done (skipped)", "seconds": 0.0}
    run_dir.mkdir(parents=True, exist_ok=True)
    args = train_overrides(variant_switches, seed, run_dir, overrides or {})
    if (run_dir / "last.pt").is_file():  # interrupted: continue where it stopped
        cmd = [*trainer_command(nproc), "--resume", str(run_dir), *args]
    else:
        cmd = [*trainer_command(nproc), "--config", base_config, *args]
    # the trainer exits when this process dies (no orphan writing into run_dir); under torchrun its parent is
    # torchrun, which a cluster's job cleanup ends
    env = runguard.child_env() if nproc <= 1 else {**os.environ, "TORCHELASTIC_SIGNALS_TO_HANDLE": TORCHRUN_SIGNALS}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    env = with_threads(env, threads)
    t0 = time.perf_counter()
    with open(run_dir / "train.log", "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = trainers.start(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=repo_root())
        if proc is None:
            log.write("not started: the grid was interrupted\n")
            return {**status, "status": "not started: interrupted", "seconds": 0.0}
        if started is not None:
            started(proc)
        rc = trainers.wait(proc)
    seconds = time.perf_counter() - t0
    if rc == 0:
        (run_dir / "done.json").write_text(json.dumps({"seconds": seconds, "cmd": cmd}))
        return {**status, "status": "done", "seconds": seconds}
    how = "interrupted" if trainers.stopping else "failed"
    return {**status, "status": f"{how} (exit {rc}): {last_log_line(run_dir)}", "seconds": seconds}


def with_threads(env: dict[str, str], threads: int | None) -> dict[str, str]:
    """A child's environment with its torch intra-op threads set (THREAD_VARIABLES), or as it is for None."""
    return {**env, **dict.fromkeys(THREAD_VARIABLES, str(threads))} if threads is not None else env


def last_log_line(run_dir: str | os.PathLike) -> str:
    """RUN/train.log's last line, cut to 200 characters: what a failed run's status says went wrong."""
    log = Path(run_dir) / "train.log"
    lines = log.read_text().strip().splitlines() if log.is_file() else []
    return lines[-1][:200] if lines else ""


def longest_finished(run_root: str | os.PathLike) -> float:
    """Seconds of the longest run finished in RUN_ROOT on this machine (its done.json: training plus the test
    scoring; a run restored from logs records none): what a time limit judges the next run by before a run of
    this start has finished."""
    longest = 0.0
    for path in Path(run_root).glob("*/done.json"):
        try:
            done = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        longest = max(longest, float(done.get("seconds") or 0.0) + float(done.get("test_seconds") or 0.0))
    return longest


def evaluate_command(run_dir: str | os.PathLike, test_dir: str | os.PathLike, max_files: int | None) -> list[str]:
    """The process that scores one finished run on the test split (`evaluate.evaluate_runs`, as notebook 03 does)
    into RUN/test/. A process of its own, as a trainer: in the grid's process, two runs scored at once by two
    threads each with the machine's OpenMP threads took 7.7 min for 17 files beside two trainers (2026-12-07)."""
    code = ("import sys; from cmgan_lib.analysis.evaluate import evaluate_runs; "
            "evaluate_runs([sys.argv[1]], sys.argv[2], sys.argv[3], max_files=int(sys.argv[4]) or None, n_jobs=1, "
            "progress=False)")  # fmt: skip
    out = Path(run_dir) / Path(TEST_SCORES).parent
    return [sys.executable, "-c", code, str(run_dir), str(test_dir), str(out), str(max_files or 0)]


def score_run_on_test(result: dict[str, Any], test_dir: str | os.PathLike, max_files: int | None = None,
                      threads: int | None = None) -> dict[str, Any]:  # fmt: skip
    """A finished run's best checkpoint scored on the test split into RUN/test/ (`TEST_SCORES`: the rows notebook
    03 writes for it), once: a run that has them, or no checkpoint left (kept logs only), is left as it is. Its
    output goes to RUN/train.log; a failure makes the run's status 'failed: test scores ...' (it trained; the
    next start scores it again). `threads`: its torch threads, as a trainer's."""
    run_dir = Path(result["run_dir"])
    if (run_dir / TEST_SCORES).is_file() or resolve_checkpoint(run_dir, strict=False) is None:
        return result
    cmd = evaluate_command(run_dir, test_dir, max_files)
    env = with_threads(dict(os.environ), threads)
    t0 = time.perf_counter()
    with open(run_dir / "train.log", "a") as log:
        log.write("test scores of best.pt: " + " ".join(cmd[3:]) + "\n")
        log.flush()
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=repo_root()).returncode
    seconds = time.perf_counter() - t0
    if rc != 0 or not (run_dir / TEST_SCORES).is_file():
        return {**result, "status": f"failed: test scores (exit {rc}): {last_log_line(run_dir)}",
                "seconds": result["seconds"] + seconds}  # fmt: skip
    done = run_dir / "done.json"  # the run's length with its scoring, for a later start's time limit
    if done.is_file():
        replace_text(done, json.dumps({**json.loads(done.read_text()), "test_seconds": seconds}))
    return {**result, "seconds": result["seconds"] + seconds}


def visible_gpus() -> list[str]:
    """GPU ids from CUDA_VISIBLE_DEVICES (or all CUDA devices); empty on a CPU machine."""
    ids = os.environ.get("CUDA_VISIBLE_DEVICES")
    if ids is not None:
        return [i.strip() for i in ids.split(",") if i.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def run_grid(grid: Grid, run_root: str | os.PathLike, progress: bool = True, runs_per_gpu: int = 1,
             cpu_runs: int = 1, time_limit: float | None = None, run_seconds: float = 0.0) -> pd.DataFrame:  # fmt: skip
    """Train every variant x seed; on GPUs, `runs_per_gpu` runs share each GPU; on CPU, `cpu_runs` at once,
    each with its share of the cores as threads (small models scale poorly past one thread: on 2 cores two
    single-thread runs finish a grid sooner than one two-thread run at a time).

    One official-size run at batch 4 uses about 20 GiB in fp32, so an 80 GiB card fits more than one; whether
    that raises throughput is measured, not assumed (the default stays 1).

    `time_limit` (seconds from now; a lent GPU machine is held for minutes): a run starts only if it is expected
    to end in time, judged by the longest run finished so far: in this start, or earlier in RUN_ROOT
    (`longest_finished`), or `run_seconds` (what a run is expected to take, say the last grid's), whichever is
    longest; with none of them the first runs start regardless. Jobs go seed by seed, so what is left out is whole
    seeds of the grid; each is recorded as 'not started: time limit'.
    """
    from tqdm.auto import tqdm

    if runs_per_gpu < 1 or cpu_runs < 1:
        raise ValueError(f"runs_per_gpu and cpu_runs must be >= 1, got {runs_per_gpu} and {cpu_runs}")
    jobs = grid.jobs()
    gpus = visible_gpus()
    slots: queue.Queue[str | None] = queue.Queue()
    for slot in [g for g in gpus for _ in range(runs_per_gpu)] or [None] * cpu_runs:
        slots.put(slot)
    threads = None if gpus or cpu_runs == 1 else thread_share(cpu_runs)
    bar = tqdm(total=len(jobs), desc="ablation runs", unit="run", disable=not progress)
    deadline = None if time_limit is None else time.monotonic() + time_limit
    test_dir = grid.data_dir() if grid.test_after_training else None  # every variant is tested on the same files
    longest = max(run_seconds, longest_finished(run_root))  # the longest run so far (shared by the workers)
    trainers = Trainers()

    def work(job):
        nonlocal longest
        variant, seed = job
        gpu = slots.get()  # a free place on a GPU (None on CPU): no two runs more than runs_per_gpu per card
        try:
            name = run_dir_for(run_root, variant, seed)
            skipped = dict(run=name.name, variant=variant, seed=seed, run_dir=str(name), seconds=0.0)
            if trainers.stopping:
                result = {**skipped, "status": "not started: interrupted"}
            elif deadline is not None and time.monotonic() + longest > deadline:
                why = f"not started: time limit ({time_limit:.0f} s; longest run {longest:.0f} s)"
                result = {**skipped, "status": why}
            else:
                result = train_run(grid.base_config, variant, seed, run_root, grid.overrides, gpu=gpu,
                                   switches=grid.variant_overrides(variant), threads=threads,
                                   trainers=trainers)  # fmt: skip
                if test_dir is not None and result["status"].startswith("done"):
                    result = score_run_on_test(result, test_dir, grid.evaluate_max_files, threads)
                longest = max(longest, result["seconds"])
        finally:
            slots.put(gpu)
        bar.update()
        bar.write(f"{result['run']}: {result['status']} ({result['seconds']:.0f} s)")
        return result

    with ThreadPoolExecutor(max_workers=slots.qsize()) as ex:
        futures = [ex.submit(work, job) for job in jobs]
        try:
            results = [f.result() for f in futures]
        except KeyboardInterrupt:  # Ctrl-C: the running trainers stop at a step boundary, the rest never start
            trainers.stop()
            results = [f.result() for f in futures]
    bar.close()
    status = pd.DataFrame(results)
    Path(run_root).mkdir(parents=True, exist_ok=True)
    status.to_csv(Path(run_root) / "status.csv", index=False)
    if trainers.stopping:
        counts = status.status.str.extract(r"^(done|interrupted|not started)")[0].value_counts()
        raise AblationInterrupted(
            f"interrupted: {counts.get('interrupted', 0)} run(s) stopped at a step boundary, "
            f"{counts.get('not started', 0)} not started, {counts.get('done', 0)} finished (status: "
            f"{Path(run_root) / 'status.csv'}); the same command resumes them"
        )
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
    render_html(target)
    return target


def execute_notebooks(names: list[str] | tuple[str, ...], out_dir: str | os.PathLike,
                      parameters: dict[str, dict[str, Any]]) -> list[Path]:  # fmt: skip
    """Run the notebooks at once, each in its own kernel with its share of the cores as torch threads (as
    `run_grid` splits them among runs): none reads what another writes (01 writes audit/, 02 the tables beside
    summary.csv, 03 evaluate/; 01 reads 02's table when it is there, written whole then renamed), and one after
    another they left a core idle through every kernel's start and every plot. Without the split, two kernels of
    two OpenMP threads each on 2 cores ran slower together than one after another. All run to their end; then
    the first failure, in the order given, is raised."""
    threads = thread_share(len(names))
    print(f"  notebooks {', '.join(names)} (at once, {threads} thread(s) each)")
    with thread_env(threads), ThreadPoolExecutor(max_workers=max(1, len(names))) as ex:  # kernels inherit it
        futures = [ex.submit(execute_notebook, name, out_dir, parameters[name]) for name in names]
    return [f.result() for f in futures]


def render_html(notebook: Path) -> Path:
    """NOTEBOOK.html beside NOTEBOOK.ipynb, without code cells or prompts: what `jupyter nbconvert --to html
    --no-input` writes, byte for byte, in this process (a subprocess paid ~3 s of imports per notebook)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4),
                                          resources={"metadata": {"name": notebook.stem}})  # fmt: skip
    html = notebook.with_suffix(".html")
    html.write_text(body, encoding="utf-8")
    return html


def write_summary(run_root: Path, out: Path, status: pd.DataFrame | None = None,
                  test_set: str | os.PathLike | None = None) -> pd.DataFrame:  # fmt: skip
    """summary.csv: one row per run (status, training facts, the split that selected its checkpoint, and test
    metrics with the test set that scored them, when notebook 03 wrote them)."""
    from cmgan_lib.analysis.training_analysis import load_run_configs, run_summary
    from cmgan_lib.training.runs import load_runs

    epochs, steps = load_runs(run_root)
    summary = run_summary(epochs, steps, load_run_configs(run_root)) if len(epochs) else pd.DataFrame(columns=["run"])
    if status is not None and len(status):
        summary = status[["run", "variant", "seed", "status"]].merge(summary, on=["run", "variant", "seed"],
                                                                       how="left")  # fmt: skip
    if len(summary):
        summary["val_split"] = [run_config(run_root / r).get("val_split", "test") for r in summary["run"]]
    per_file = out / "evaluate" / "metrics_per_file.csv"  # written by notebook 03 (evaluate.evaluate_runs)
    if per_file.is_file() and len(summary):
        from cmgan_lib.scoring.metrics import METRIC_NAMES

        scores = pd.read_csv(per_file)
        if "reason" in scores:
            scores = scores[scores.reason.isna()]
        test = scores.groupby("run")[list(METRIC_NAMES)].mean().add_prefix("test_").reset_index()
        summary = summary.merge(test, on="run", how="left")
        summary["test_set"] = shown_path(test_set, out)  # relative: summary.csv is shared (issue 23)
    summary.to_csv(out / "summary.csv", index=False)
    return summary


def notebook_parameters(grid: Grid, out: Path) -> dict[str, dict[str, Any]]:
    """What each notebook gets from `cmgan ablate`: the grid's own data (never the embedded default by accident),
    its run folder, and where to write."""
    data_dir = grid.data_dir().resolve()
    run_root = str((out / "runs").resolve())
    return {
        "01_pesq_failure_audit": dict(data_dir=str(data_dir), run_root=run_root,
                                      out_dir=str((out / "audit").resolve())),
        "02_train_baseline_vs_fixed": dict(run_root=run_root, comparisons=grid.resolved_comparisons(),
                                           out_dir=str(out.resolve())),
        "03_evaluate": dict(run_root=run_root, test_dir=str(data_dir), out_dir=str((out / "evaluate").resolve()),
                            max_files=grid.evaluate_max_files),
    }  # fmt: skip


def status_of_runs(grid: Grid, run_root: str | os.PathLike) -> pd.DataFrame:
    """What run_grid would report, read from the run folders alone (nothing trains): for runs trained elsewhere,
    e.g. on a lent GPU machine whose logs came back without checkpoints."""
    from cmgan_lib.training.runs import EPOCH_LOG, read_log

    rows = []
    for variant, seed in grid.jobs():
        run_dir = run_dir_for(run_root, variant, seed)
        epochs = len(read_log(run_dir / EPOCH_LOG))
        if (run_dir / "done.json").is_file():
            state = "done (not retrained)"
        elif epochs:
            state = f"incomplete: {epochs} epoch(s) logged, never finished"
        else:
            state = "not trained"
        rows.append(dict(run=run_dir.name, variant=variant, seed=seed, run_dir=str(run_dir), status=state,
                         seconds=0.0))  # fmt: skip
    return pd.DataFrame(rows)


def has_checkpoints(run_root: str | os.PathLike) -> bool:
    """Whether any run folder kept a generator for notebook 03 to evaluate."""
    from cmgan_lib.training.runs import find_runs, resolve_checkpoint

    return any(resolve_checkpoint(run, strict=False) for run in find_runs(run_root))


def run_ablation(grid: str | os.PathLike | Grid, out: str | os.PathLike, notebooks: bool = True,
                 status: pd.DataFrame | None = None, runs_per_gpu: int = 1, audit: bool = False,
                 cpu_runs: int = 1, train: bool = True, time_limit: float | None = None,
                 run_seconds: float = 0.0) -> pd.DataFrame:  # fmt: skip
    """`cmgan ablate`: train the grid into OUT/runs (unless `status` says it was, or `train` is False: then the
    runs already there are reported as they are), then notebook 02 (plots) and 03 (metrics, on the test split of
    the grid's data; left out when no run kept a checkpoint), and summary.csv. `audit`: notebook 01 as well."""
    t0 = time.monotonic()  # --time-limit counts from here: building the corpus is part of it
    grid = grid if isinstance(grid, Grid) else load_grid(grid)
    out = Path(out)
    run_root = out / "runs"
    run_root.mkdir(parents=True, exist_ok=True)
    (out / "grid.yaml").write_text(yaml.safe_dump(grid.to_dict(), sort_keys=False))
    if status is None and train:
        grid.data_dir(build=True)  # once, before runs start at once (each would build a missing corpus itself)
        left = None if time_limit is None else time_limit - (time.monotonic() - t0)
        status = run_grid(grid, run_root, runs_per_gpu=runs_per_gpu, cpu_runs=cpu_runs, time_limit=left,
                          run_seconds=run_seconds)  # fmt: skip
    elif status is None:
        status = status_of_runs(grid, run_root)
    params = notebook_parameters(grid, out)
    if notebooks:
        names = NOTEBOOKS if audit else NOTEBOOKS[1:]
        if not has_checkpoints(run_root):
            print(f"  notebook 03_evaluate left out: no run in {run_root} kept a checkpoint to evaluate")
            names = [n for n in names if n != "03_evaluate"]
        execute_notebooks(names, out, params)
    summary = write_summary(run_root, out, status, test_set=params["03_evaluate"]["test_dir"])
    unfinished = status[~status.status.str.startswith("done")]
    print(f"{len(status) - len(unfinished)} of {len(status)} runs finished; summary: {out / 'summary.csv'}")
    for _, row in unfinished.iterrows():
        print(f"  {row.run}: {row.status} (log: {row.run_dir}/train.log)")
    return summary


def run_study(out: str | os.PathLike = "runs/STUDY", grid: str | os.PathLike = "configs/ablation_tiny.yaml") -> None:
    """`make study`: the embedded synthetic corpus, a short CPU ablation, then notebooks 01 (audit at the runs'
    own crop, with their step logs and checkpoints), 02 (training) and 03 (test metrics), and summary.csv.

    The runs train at once, each with its share of the cores (on a CPU): on 2 cores the three tiny runs took 287 s
    together against 376 s one after another with two threads each (2026-12-07). Their numbers differ from the
    one-at-a-time runs' in the fourth decimal (a thread count changes the order of float sums)."""
    os.chdir(repo_root())
    out = Path(out)
    t0 = time.perf_counter()
    g = load_grid(grid)
    print(f"[1/3] data: {g.data_dir(build=True)}")
    print(f"[2/3] ablation: {', '.join(g.variants)} x seeds {g.seeds} ({g.base_config})")
    status = run_grid(g, out / "runs", cpu_runs=len(g.jobs()))
    print("[3/3] notebooks 01 (PESQ failure audit), 02 (training curves), 03 (test metrics); summary.csv")
    run_ablation(g, out, status=status, audit=True)
    print(f"study finished in {time.perf_counter() - t0:.0f} s: {out}/ (notebooks, HTML reports, summary.csv)")


def shareable_text(text: str, run_root: str | os.PathLike) -> str:
    """An executed notebook's text for a shared report: the project root's and the run root's absolute prefixes
    removed from its parameters and papermill metadata, so its paths read relative to them (issue 23); the
    notebook in the run folder keeps the paths it ran with."""
    import re

    for base in sorted({str(repo_root()), os.path.abspath(run_root), str(Path(run_root).resolve())}, key=len,
                       reverse=True):  # fmt: skip
        text = re.sub(re.escape(base) + r"(?:/|(?![\w.-]))", lambda m: "" if m.group().endswith("/") else ".", text)
    return text


NOTEBOOK_LIMIT_BYTES = 2 * 2**20
# A shared report holds HTML, CSV and logs, never checkpoints or audio files. The confirmatory report's 21 runs of
# 2026-12-07 came to 11.9 MiB (each run's logs ~110 KB, notebook 03's HTML 3 MB with its audio players, 02's 2 MB);
# its 72 runs will need about 20 MiB. Over this, something that does not belong was copied.
REPORT_LIMIT_BYTES = 32 * 2**20


def share_report(out: str | os.PathLike, dest: str | os.PathLike, command: str, device: str,
                 wall_seconds: float | None = None, note: str = "", overwrite: bool = False) -> Path:  # fmt: skip
    """Copy what others need from an ablation folder into reports/<dest>: the rendered notebooks (HTML),
    summary.csv, grid.yaml, every run's config and step/epoch logs, and a README naming device, command, commit
    and wall time. Checkpoints and audio never go in (they are large and can be regenerated).

    A `dest` that already holds files is refused unless `overwrite`: its README may hold findings added by hand
    since, which writing it again would drop. With `overwrite` the copied files and README.md are written again;
    other files in `dest` stay."""
    import shutil

    out, dest = Path(out), Path(dest)
    if not (out / "summary.csv").is_file():
        raise FileNotFoundError(f"{out}: no summary.csv (run `cmgan ablate` first)")
    if dest.is_dir() and any(dest.iterdir()) and not overwrite:
        raise FileExistsError(f"{dest}: already holds a shared report; writing it again would replace its README "
                              "(and any notes added to it): pass --overwrite, or choose another folder")  # fmt: skip
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    from cmgan_lib.reports.report_02_training import COMPARISONS_CSV, PER_SEED_CSV, PER_VARIANT_CSV, runs_data_order
    from cmgan_lib.reports.report_confirmatory import BOTTOM_LINE_MD

    # notebook 02's full tables: its HTML links to them
    for name in ["summary.csv", "grid.yaml", *(f"{nb}.html" for nb in REPORT_NOTEBOOKS), PER_SEED_CSV, PER_VARIANT_CSV,
                 COMPARISONS_CSV]:  # fmt: skip
        if (out / name).is_file():
            shutil.copy2(out / name, dest / name)
            copied.append(name)
    for nb in REPORT_NOTEBOOKS:  # the executed notebooks the HTML reports link to, unless audio makes them large
        path = out / f"{nb}.ipynb"
        if path.is_file() and path.stat().st_size <= NOTEBOOK_LIMIT_BYTES:
            (dest / path.name).write_text(shareable_text(path.read_text(), out))
            copied.append(path.name)
    for sub in ("evaluate", "audit", "analysis"):  # notebooks 03, 01 and 04's tables (and 04's bottom line)
        tables = sorted([*(out / sub).glob("*.csv"), *(out / sub).glob(BOTTOM_LINE_MD)])
        for table in tables:
            (dest / sub).mkdir(exist_ok=True)
            shutil.copy2(table, dest / sub / table.name)
            copied.append(f"{sub}/{table.name}")
    for run in sorted(p for p in (out / "runs").iterdir() if p.is_dir()) if (out / "runs").is_dir() else []:
        for name in ("config.yaml", "training_step_log.csv", "training_epoch_log.csv"):
            if (run / name).is_file():
                (dest / "runs" / run.name).mkdir(parents=True, exist_ok=True)
                if name == "config.yaml":  # its run_dir relative to the report, as the notebooks' paths
                    (dest / "runs" / run.name / name).write_text(shareable_text((run / name).read_text(), out))
                else:
                    shutil.copy2(run / name, dest / "runs" / run.name / name)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    if size > REPORT_LIMIT_BYTES:
        raise ValueError(f"{dest}: {size / 2**20:.1f} MiB is too large for a shared report; check what was copied")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=repo_root()).stdout.strip() or "unknown"  # fmt: skip
    wall = f"{wall_seconds / 60:.1f} min" if wall_seconds else "not recorded"
    bottom = out / "analysis" / BOTTOM_LINE_MD  # notebook 04's generated bottom line opens the README
    top = [bottom.read_text().strip(), "", "## How it was made", ""] if bottom.is_file() else []
    lines = [f"# {dest.name}", "", *top, f"- device: {device}", f"- command: `{command}`", f"- commit: {commit}",
             f"- wall time: {wall}", f"- written: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"- {runs_data_order(out / 'runs')}", "",
             "Files: " + ", ".join(f"`{c}`" for c in copied) + ", and `runs/<run>/` (config.yaml, step and epoch "
             "logs; no checkpoints).", ""]  # fmt: skip
    if note:
        lines += [note.strip(), ""]
    (dest / "README.md").write_text("\n".join(lines))
    return dest
