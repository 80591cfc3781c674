"""The grid on a Slurm cluster: `cmgan ablate --executor slurm` (one job array through submitit, one task per
(variant, seed)), `--status OUT` (each run queued / running / done / failed, from the run folders and Slurm), and
`--emit-sbatch FILE` (the same array as a plain sbatch script, for clusters without submitit).

Why a task loses no work: it trains through study.train_run (a finished run is skipped, an interrupted one resumed
from last.pt), the trainer holds the run folder's lock (a second task for it is refused), and a cluster's "time is
up" signal stops the trainer at a step boundary (runguard.REQUEUE_SIGNALS) before the task is queued again. The
trainer checkpoints at epoch ends: a requeue redoes at most the epoch it was in, and exactly (docs/cluster.md).
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cmgan_lib.core.paths import repo_root
from cmgan_lib.study import TORCHRUN_SIGNALS, Grid, load_grid, run_dir_for, train_overrides, trainer_command
from cmgan_lib.training import runguard

INSTALL_HINT = 'pip install -e ".[cluster]"'
JOBS_CSV = "jobs.csv"  # OUT/jobs.csv: one row per submitted task (appended at each submission)
LOG_DIR = "slurm_logs"  # OUT/slurm_logs/: submitit's pickles and each task's stdout/stderr
JOB_COLUMNS = ["task", "run", "variant", "seed", "job_id", "executor", "submitted"]
EXECUTORS = {"slurm": "slurm", "submitit-local": "local"}  # --executor -> submitit's cluster name


class MissingExtraError(RuntimeError):
    """submitit (the `cluster` extra) is not installed."""


def require_submitit() -> Any:
    """The submitit module, or a one-line error naming the install command."""
    try:
        import submitit
    except ImportError:
        raise MissingExtraError(f"--executor slurm needs submitit, which is not installed: {INSTALL_HINT}") from None
    return submitit


# ------------------------------------------------------------------------------------------- the options
@dataclass
class SlurmOptions:
    """What each task of the array asks Slurm for; from the grid YAML's `slurm:` mapping, then the command line."""

    partition: str | None = None  # None: the cluster's default partition
    gpus_per_run: int = 1  # > 1: the run uses torchrun over that many GPUs of one node (train.py's DDP path)
    cpus_per_run: int = 8  # data loading and the PESQ workers
    mem_gb: int = 64
    time_min: int = 1440  # the time limit of one task; a run that needs longer is requeued and resumes
    array_parallelism: int | None = None  # tasks running at once (the %N of --array); None: all
    extra: list[str] = field(default_factory=list)  # further sbatch flags, e.g. ["--account=abc", "--qos=high"]
    signal_delay_s: int = 120  # the "time is up" signal comes this long before the time limit
    max_timeouts: int = 20  # time-outs after which a task is not requeued again (preemptions do not count)

    def __post_init__(self) -> None:
        positive = {"cpus_per_run": self.cpus_per_run, "mem_gb": self.mem_gb, "time_min": self.time_min,
                    "signal_delay_s": self.signal_delay_s, "max_timeouts": self.max_timeouts,
                    "array_parallelism": self.array_parallelism or 1}  # fmt: skip
        bad = [f"{k}={v}" for k, v in positive.items() if not isinstance(v, int) or v < 1]
        if not isinstance(self.gpus_per_run, int) or self.gpus_per_run < 0:
            bad.append(f"gpus_per_run={self.gpus_per_run}")
        if bad:
            raise ValueError(f"slurm options {', '.join(bad)}: expected whole numbers >= 1 (gpus_per_run >= 0)")
        if isinstance(self.extra, str):
            self.extra = shlex.split(self.extra)
        flags = [f for f in self.extra if not str(f).startswith("--")]
        if flags:
            raise ValueError(f"slurm extra flags {flags}: each must be a long sbatch option, e.g. --account=abc")

    def additional_parameters(self) -> dict[str, Any]:
        """`extra` as submitit's slurm_additional_parameters: --key=value -> {key: value}, --flag -> {flag: True}."""
        out: dict[str, Any] = {}
        for flag in self.extra:
            key, sep, value = flag[2:].partition("=")
            out[key.replace("-", "_")] = value if sep else True
        return out


def slurm_options(from_grid: dict[str, Any] | None, from_cli: dict[str, Any] | None = None) -> SlurmOptions:
    """The grid's `slurm:` mapping, then the command line's values (None: not given) on top; unknown keys refused."""
    known = {f.name for f in fields(SlurmOptions)}
    values = dict(from_grid or {})
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"grid `slurm:` has unknown keys {unknown}; known: {sorted(known)}")
    for key, value in (from_cli or {}).items():
        if value is None or value == []:
            continue
        values[key] = [*values.get("extra", []), *value] if key == "extra" else value
    return SlurmOptions(**values)


# ------------------------------------------------------------------------------------------- one task
@dataclass
class GridTask:
    """One (variant, seed) of a grid as a checkpointable submitit task: `__call__` trains (or resumes) the run
    through study.train_run; on preemption or time-out submitit calls `checkpoint`, which stops the trainer at a
    step boundary and hands submitit this same task again, to be requeued (it then resumes from last.pt)."""

    base_config: str
    variant: str
    seed: int
    run_root: str
    overrides: dict[str, Any]
    switches: dict[str, Any]
    nproc: int = 1
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False, compare=False)

    def __call__(self) -> dict[str, Any]:
        from cmgan_lib.study import train_run

        result = train_run(self.base_config, self.variant, self.seed, self.run_root, self.overrides,
                           switches=self.switches, started=self._started, nproc=self.nproc)  # fmt: skip
        if not result["status"].startswith("done"):  # the task (and its Slurm state) fails; a run stopped by
            # SIGTERM (preemption without the signal, scancel) is requeued by Slurm itself where it preempts so
            raise RuntimeError(f"{result['run']}: {result['status']}")
        return result

    def _started(self, proc: subprocess.Popen) -> None:
        self._proc = proc

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's hook on preemption or time-out: stop the trainer, then requeue a fresh copy of this task."""
        submitit = require_submitit()
        if self._proc is not None:
            print(f"{self.variant} seed {self.seed}: preempted or timed out; stopping the trainer at a step boundary",
                  flush=True)  # fmt: skip
            stop_trainer(self._proc.pid)
        fresh = GridTask(self.base_config, self.variant, self.seed, self.run_root, self.overrides, self.switches,
                         self.nproc)  # fmt: skip
        return submitit.helpers.DelayedSubmission(fresh)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_proc": None}  # a process is never pickled (submitit pickles the task)


def stop_trainer(pid: int, poll: float = 0.2) -> int | None:
    """Send SIGUSR1 to the trainer (or torchrun, which forwards it) and wait until it has exited; returns its exit
    status (runguard.REQUEUE_EXIT when it stopped at a step boundary), None when it had already been reaped.
    Why not Popen.wait: this runs inside a signal handler that interrupted Popen.wait on the same object."""
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        return None
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)  # leaves it to Popen to reap
        except ChildProcessError:
            return None
        if info is not None:
            return info.si_status
        time.sleep(poll)


# ------------------------------------------------------------------------------------------- submission
def grid_tasks(grid: Grid, run_root: Path, nproc: int = 1) -> list[tuple[int, GridTask]]:
    """(array index, task) for each (variant, seed) of the grid, in Grid.jobs() order (the emitted script's too)."""
    return [(i, GridTask(grid.base_config, v, s, str(run_root), dict(grid.overrides), grid.variant_overrides(v),
                         nproc)) for i, (v, s) in enumerate(grid.jobs())]  # fmt: skip


def make_executor(submitit: Any, folder: Path, options: SlurmOptions, cluster: str, name: str) -> Any:
    """A submitit executor with the options: one node, one task, `gpus_per_run` GPUs per array task."""
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster, slurm_max_num_timeout=options.max_timeouts)
    except RuntimeError as exc:  # e.g. no srun: not on a Slurm login node
        raise ValueError(
            f"--executor {cluster}: {exc} (`--emit-sbatch FILE` writes a script to submit there)"
        ) from None
    params: dict[str, Any] = dict(name=name, timeout_min=options.time_min, nodes=1, tasks_per_node=1,
                                  gpus_per_node=options.gpus_per_run, cpus_per_task=options.cpus_per_run,
                                  mem_gb=float(options.mem_gb))  # fmt: skip
    if cluster == "slurm":
        params.update(slurm_signal_delay_s=options.signal_delay_s,
                      slurm_additional_parameters=options.additional_parameters())  # fmt: skip
        if options.partition:
            params["slurm_partition"] = options.partition
        if options.array_parallelism:
            params["slurm_array_parallelism"] = options.array_parallelism
    executor.update_parameters(**params)  # the local executor's own signal comes 30 s before its time limit
    return executor


def write_grid(grid: Grid, out: Path) -> None:
    """OUT/grid.yaml, what --status and --no-train read back (as run_ablation writes it)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.yaml").write_text(yaml.safe_dump(grid.to_dict(), sort_keys=False))


def submit_grid(grid: Grid, out: str | os.PathLike, options: SlurmOptions, executor: str = "slurm") -> pd.DataFrame:
    """Submit the grid as one job array and return at once: one task per (variant, seed) whose run is not done;
    the job ids go to OUT/jobs.csv. `executor`: 'slurm' or 'submitit-local' (submitit's local executor: the same
    tasks on this machine, all at once)."""
    submitit = require_submitit()
    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r}: expected one of {sorted(EXECUTORS)}")
    out = Path(out).resolve()  # tasks may start in another folder; the trainer runs in the project root
    run_root = out / "runs"
    run_root.mkdir(parents=True, exist_ok=True)
    write_grid(grid, out)
    grid.data_dir(build=True)  # a missing synthetic corpus, once, before tasks start at once
    todo = [(i, t) for i, t in grid_tasks(grid, run_root, max(1, options.gpus_per_run))
            if not (run_dir_for(run_root, t.variant, t.seed) / "done.json").is_file()]  # fmt: skip
    if not todo:
        print(f"every run of the grid is done in {run_root}; nothing submitted")
        return pd.DataFrame(columns=JOB_COLUMNS)
    ex = make_executor(submitit, out / LOG_DIR, options, EXECUTORS[executor], f"cmgan-{out.name}")
    jobs = ex.submit_array([t for _, t in todo])
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rows = [dict(task=i, run=run_dir_for(run_root, t.variant, t.seed).name, variant=t.variant, seed=t.seed,
                 job_id=str(j.job_id), executor=executor, submitted=stamp)
            for (i, t), j in zip(todo, jobs, strict=True)]  # fmt: skip
    table = pd.DataFrame(rows, columns=JOB_COLUMNS)
    path = out / JOBS_CSV
    table.to_csv(path, mode="a", header=not path.is_file(), index=False)
    return table


# ------------------------------------------------------------------------------------------- status
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING", "PREEMPTED", "SUSPENDED"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm's state of each job id ('123_4'), from sacct; {} where sacct is missing or fails. A pending array
    shows as one row ('123_[0-3%2]'): each index in it gets that state."""
    if not job_ids:
        return {}
    try:
        text = subprocess.run(["sacct", "-n", "-P", "-o", "JobID,State", "-j", ",".join(sorted(set(job_ids)))],
                              capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    states: dict[str, str] = {}
    for line in text.splitlines():
        jid, _, state = line.partition("|")
        state = state.split(" ")[0].strip()  # "CANCELLED by 123" -> CANCELLED
        if not state or "." in jid:  # 123_4.batch, 123_4.extern: the steps, not the task
            continue
        pending = re.fullmatch(r"(\d+)_\[([^\]]+)\]", jid)
        if pending:
            for part in pending.group(2).split("%")[0].split(","):
                lo, _, hi = part.partition("-")
                for k in range(int(lo), int(hi or lo) + 1):
                    states[f"{pending.group(1)}_{k}"] = state
        else:
            states[jid] = state
    return states


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _result_error(log_dir: Path, job_id: str) -> bool:
    """Whether submitit recorded an exception for this task (OUT/slurm_logs/<job>_0_result.pkl: ("error", ...))."""
    import pickle

    path = log_dir / f"{job_id}_0_result.pkl"
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)[0] == "error"
    except (OSError, pickle.UnpicklingError, EOFError, IndexError, TypeError, AttributeError, ImportError):
        return False


def last_log_line(run_dir: Path, width: int = 160) -> str:
    """The last non-empty line of RUN/train.log (progress bars' carriage returns split lines)."""
    path = run_dir / "train.log"
    if not path.is_file():
        return ""
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 8192))
        tail = fh.read().decode(errors="replace")
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", tail) if ln.strip()]
    return lines[-1][:width] if lines else ""


def run_state(run_dir: Path, job: dict[str, str] | None, slurm_state: str | None, log_dir: Path) -> str:
    """queued / running / done / failed (or 'not submitted' / 'unknown') for one run, from its folder and job."""
    if (run_dir / "done.json").is_file():
        return "done"
    if slurm_state in RUNNING:  # before submitit's result: a task requeued by Slurm may have left an error behind
        return "running"
    if slurm_state in QUEUED:
        return "queued"
    if job is not None and _result_error(log_dir, job["job_id"]):
        return "failed"
    if slurm_state:  # COMPLETED without done.json, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, ...
        return "failed"
    if runguard.lock_holder(run_dir) is not None:
        return "running"
    if job is None:
        return "not submitted"
    if job["executor"] == "submitit-local":  # the job id is the local controller's pid
        return "running" if _alive(job["job_id"]) else "failed"
    return "unknown"  # a Slurm job sacct does not know (yet, or any more)


def grid_status(out: str | os.PathLike) -> pd.DataFrame:
    """One row per run of OUT/grid.yaml: state, epochs done, Slurm state and job id where known, last log line."""
    from cmgan_lib.training.runs import EPOCH_LOG, read_log

    out = Path(out)
    if not (out / "grid.yaml").is_file():
        raise FileNotFoundError(f"{out}: no grid.yaml; not an ablation folder (`cmgan ablate --out` writes one)")
    grid = load_grid(out / "grid.yaml")
    jobs: dict[str, dict[str, str]] = {}
    if (out / JOBS_CSV).is_file():
        with open(out / JOBS_CSV, newline="") as fh:
            for row in csv.DictReader(fh):
                jobs[row["run"]] = row  # the latest submission of each run wins
    states = sacct_states([j["job_id"] for j in jobs.values() if j["executor"] == "slurm"])
    rows = []
    for variant, seed in grid.jobs():
        run_dir = run_dir_for(out / "runs", variant, seed)
        job = jobs.get(run_dir.name)
        slurm_state = states.get(job["job_id"]) if job else None
        rows.append(dict(run=run_dir.name, variant=variant, seed=seed,
                         state=run_state(run_dir, job, slurm_state, out / LOG_DIR),
                         epochs=len(read_log(run_dir / EPOCH_LOG)), slurm_state=slurm_state or "",
                         job_id=job["job_id"] if job else "", last_line=last_log_line(run_dir)))  # fmt: skip
    return pd.DataFrame(rows)


def format_status(table: pd.DataFrame, out: str | os.PathLike) -> str:
    counts = table.state.value_counts()
    head = f"{out}: {len(table)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items())
    lines = [head, ""]
    for _, r in table.iterrows():
        slurm = f" [{r.slurm_state} {r.job_id}]" if r.slurm_state else (f" [job {r.job_id}]" if r.job_id else "")
        lines.append(f"{r.run:<28} {r.state:<13} {r.epochs:>4} epoch(s){slurm}  {r.last_line}")
    if counts.get("done", 0) == len(table):
        lines += ["", f"all done: `cmgan ablate --grid {Path(out) / 'grid.yaml'} --out {out} --no-train` writes the "
                  "reports"]  # fmt: skip
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- plain sbatch
def sbatch_script(grid: Grid, out: str | os.PathLike, options: SlurmOptions) -> str:
    """A plain sbatch script for the grid: SLURM_ARRAY_TASK_ID -> (variant, seed) as in Grid.jobs(); it skips a
    done run, resumes one with last.pt, forwards Slurm's USR1 (`--signal=B:USR1@N` reaches this shell only) to the
    trainer, and requeues the task when the trainer stopped for it (exit runguard.REQUEUE_EXIT)."""
    out = Path(out).resolve()
    run_root = out / "runs"
    nproc = max(1, options.gpus_per_run)
    tasks = grid_tasks(grid, run_root, nproc)
    n = len(tasks)
    array = f"0-{n - 1}" + (f"%{options.array_parallelism}" if options.array_parallelism else "")
    q = shlex.quote
    heads = [f"--job-name=cmgan-{out.name}", f"--array={array}", "--nodes=1", "--ntasks=1",
             f"--cpus-per-task={options.cpus_per_run}", f"--mem={options.mem_gb}G", f"--time={options.time_min}",
             "--requeue", f"--signal=B:USR1@{options.signal_delay_s}", "--open-mode=append",
             f"--output={out / LOG_DIR}/%A_%a.out"]  # fmt: skip
    if options.gpus_per_run:
        heads.append(f"--gres=gpu:{options.gpus_per_run}")
    if options.partition:
        heads.append(f"--partition={options.partition}")
    heads += options.extra
    cases = []
    for i, t in tasks:
        run_dir = run_dir_for(run_root, t.variant, t.seed)
        args = " ".join(q(a) for a in train_overrides(t.switches, t.seed, run_dir, t.overrides))
        cases.append(f"  {i}) RUN={q(run_dir.name)}; ARGS=({args}) ;;")
    trainer = " ".join(q(a) for a in trainer_command(nproc)).replace(q(sys.executable), '"$PYTHON"')
    torchrun_env = f"export TORCHELASTIC_SIGNALS_TO_HANDLE={TORCHRUN_SIGNALS}\n" if nproc > 1 else ""
    return f"""#!/bin/bash
# The grid {q(str(out / "grid.yaml"))} as one Slurm job array: {n} tasks, one per (variant, seed).
# Written by `cmgan ablate --emit-sbatch`; submit with `sbatch THIS_FILE`, or run one task by hand with
# `SLURM_ARRAY_TASK_ID=K bash THIS_FILE`. Progress: `cmgan ablate --status {q(str(out))}`.
{chr(10).join(f"#SBATCH {h}" for h in heads)}

set -u
cd {q(str(repo_root()))}
PYTHON=${{CMGAN_PYTHON:-{q(sys.executable)}}}
BASE={q(grid.base_config)}
TASK=${{SLURM_ARRAY_TASK_ID:?SLURM_ARRAY_TASK_ID is not set: submit with sbatch, or set it to 0-{n - 1}}}
case "$TASK" in
{chr(10).join(cases)}
  *) echo "error: SLURM_ARRAY_TASK_ID=$TASK is not a task of this grid (0-{n - 1})" >&2; exit 2 ;;
esac
RUN_DIR={q(str(run_root))}/$RUN
mkdir -p "$RUN_DIR" {q(str(out / LOG_DIR))}
LOG="$RUN_DIR/train.log"
if [ -f "$RUN_DIR/done.json" ]; then
  echo "$RUN: done (not retrained)" | tee -a "$LOG"; exit 0
fi
if [ -f "$RUN_DIR/last.pt" ]; then START=(--resume "$RUN_DIR"); else START=(--config "$BASE"); fi
{torchrun_env}CMD=({trainer} "${{START[@]}}" "${{ARGS[@]}}")
echo "\\$ ${{CMD[*]}}  (Slurm job ${{SLURM_JOB_ID:-none}}, task $TASK)" >> "$LOG"
STOPPED=0
"${{CMD[@]}}" >> "$LOG" 2>&1 &
CHILD=$!
# Slurm's USR1 reaches this shell only (B:): the trainer stops at a step boundary and exits {runguard.REQUEUE_EXIT}
trap 'STOPPED=1; echo "$RUN: USR1: stopping at a step boundary" >> "$LOG"; kill -USR1 "$CHILD" 2>/dev/null' USR1
wait "$CHILD"
while kill -0 "$CHILD" 2>/dev/null; do wait "$CHILD"; done
wait "$CHILD"; RC=$?  # the trainer's own status (bash keeps it)
if [ "$RC" -eq 0 ]; then
  printf '{{"seconds": %s, "slurm_job": "%s"}}\\n' "$SECONDS" "${{SLURM_JOB_ID:-}}" > "$RUN_DIR/done.json"
  echo "$RUN: done" >> "$LOG"; exit 0
fi
if [ "$RC" -eq {runguard.REQUEUE_EXIT} ] || [ "$STOPPED" -eq 1 ]; then
  if [ -n "${{SLURM_JOB_ID:-}}" ]; then
    echo "$RUN: stopped (exit $RC); requeued as Slurm job $SLURM_JOB_ID, it resumes from last.pt" >> "$LOG"
    scontrol requeue "$SLURM_JOB_ID"; exit 0
  fi
  echo "$RUN: stopped (exit $RC); run this task again to resume from last.pt" | tee -a "$LOG"; exit "$RC"
fi
echo "$RUN: failed (exit $RC); see $LOG" >&2
exit "$RC"
"""


def write_sbatch(grid: Grid, out: str | os.PathLike, options: SlurmOptions, path: str | os.PathLike) -> Path:
    """Write the sbatch script to `path` (executable) and OUT/grid.yaml (for --status and --no-train)."""
    path = Path(path)
    write_grid(grid, Path(out))
    for sub in ("runs", LOG_DIR):  # Slurm opens --output before the script runs
        (Path(out) / sub).mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sbatch_script(grid, out, options))
    path.chmod(0o755)
    return path


def options_summary(options: SlurmOptions) -> str:
    return ", ".join(f"{k}={v}" for k, v in asdict(options).items() if v not in (None, []))
