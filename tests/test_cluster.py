"""Issue 34, without a cluster: `cmgan ablate --executor slurm` (its options and the one-line error without
submitit), submitit's local executor running a tiny grid end to end (a preempted task requeued, a failing one
reported), `--status`, and the emitted sbatch script run by hand (its USR1 path requeues)."""

# ruff: noqa: F811  (the `corpus` fixture is imported from test_bad_inputs and requested by name)

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_bad_inputs import ROOT, corpus  # noqa: F401 (corpus: the shared module fixture, 4 training clips)

from cmgan_lib import cluster
from cmgan_lib.cli import main as cli_main
from cmgan_lib.study import load_grid
from cmgan_lib.training import runguard
from cmgan_lib.training.runs import read_log

needs_submitit = pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                                    reason="submitit is not installed (pip install -e '.[cluster]')")  # fmt: skip
LOGS = ("training_step_log.csv", "training_epoch_log.csv")
TINY = dict(epochs=3, batch_size=2, cut_len=8000, num_channel=4, num_tscb=1, ndf=4, max_steps_per_epoch=2,
            val_max_files=1, pesq_workers=1, num_workers=0)  # fmt: skip


def write_grid(path: Path, corpus: Path | str, variants, seeds, **extra) -> Path:
    data = dict(base_config="configs/tiny_cpu.yaml", variants=variants, seeds=seeds,
                overrides={"data_dir": str(corpus), **TINY}, **extra)  # fmt: skip
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def logs(run: Path) -> dict[str, pd.DataFrame]:
    """The step and epoch logs without the wall-clock columns."""
    return {n: pd.read_csv(run / n).drop(columns=["seconds"]) for n in LOGS}


def assert_same_logs(a: Path, b: Path) -> None:
    for name, df in logs(a).items():
        pd.testing.assert_frame_equal(df, logs(b)[name], check_exact=True, obj=f"{a.name}/{name}")


def wait_until_settled(out: Path, timeout: float = 1800) -> pd.DataFrame:
    """--status until no run is queued or running."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        table = cluster.grid_status(out)
        if not table.state.isin(["queued", "running"]).any():
            return table
        time.sleep(1)
    raise AssertionError(f"the grid in {out} did not finish in {timeout} s:\n{cluster.grid_status(out)}")


def wait_for_epoch(run: Path, epoch: int, timeout: float = 300) -> None:
    """Until the step log holds a step of `epoch` (0-based): the run is in the middle of its training. Read as
    the reports read a live run (`read_log`): the trainer creates the file before it writes the header, and a
    poll in between read an empty file (CI of e43625f, 2026-12-07)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = read_log(run / "training_step_log.csv")
        if "epoch" in log and (log.epoch >= epoch).any():
            return
        time.sleep(0.05)
    raise AssertionError(f"{run}: no step of epoch {epoch + 1} within {timeout} s")


# ------------------------------------------------------------------------------------------- fast: no training
def test_without_submitit_executor_slurm_is_one_line_naming_the_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    grid = write_grid(tmp_path / "g.yaml", tmp_path / "no_data", ["official"], [0])
    assert cli_main(["ablate", "--grid", str(grid), "--out", str(tmp_path / "out"), "--executor", "slurm"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert 'pip install -e ".[cluster]"' in err and "submitit" in err
    assert not (tmp_path / "out" / cluster.JOBS_CSV).exists()


def test_slurm_options_come_from_the_grid_then_the_command_line():
    grid = {"partition": "a", "mem_gb": 32, "extra": ["--account=x"]}
    opts = cluster.slurm_options(grid, {"partition": "b", "mem_gb": None, "extra": ["--qos=high", "--exclusive"]})
    assert (opts.partition, opts.mem_gb, opts.gpus_per_run) == ("b", 32, 1)
    assert opts.extra == ["--account=x", "--qos=high", "--exclusive"]
    assert opts.additional_parameters() == {"account": "x", "qos": "high", "exclusive": True}
    with pytest.raises(ValueError, match=r"unknown keys \['gpus'\]"):
        cluster.slurm_options({"gpus": 2})
    with pytest.raises(ValueError, match="time_min=0"):
        cluster.slurm_options({"time_min": 0})
    with pytest.raises(ValueError, match="long sbatch option"):
        cluster.slurm_options({"extra": ["account=x"]})


@needs_submitit
def test_the_options_reach_submitits_sbatch_file(tmp_path, monkeypatch):
    import submitit

    with pytest.raises(ValueError, match="srun"):  # not on a Slurm machine: one line, no traceback
        cluster.make_executor(submitit, tmp_path / "logs", cluster.SlurmOptions(), "slurm", "cmgan-x")
    (tmp_path / "srun").write_text("#!/bin/sh\n")  # submitit looks for srun on PATH
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")

    opts = cluster.slurm_options({"partition": "gpu", "gpus_per_run": 2, "cpus_per_run": 6, "mem_gb": 40,
                                  "time_min": 600, "array_parallelism": 3, "extra": ["--account=abc"]})  # fmt: skip
    ex = cluster.make_executor(submitit, tmp_path / "logs", opts, "slurm", "cmgan-x")
    text = ex._executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=2", "--cpus-per-task=6", "--mem=40GB", "--time=600",
                 "--signal=USR2@120", "--account=abc", "--job-name=cmgan-x"):  # fmt: skip
        assert f"#SBATCH {line}" in text, (line, text)
    assert ex._executor.parameters["array_parallelism"] == 3


def test_the_emitted_script_passes_bash_n_and_maps_each_task_to_its_variant_and_seed(tmp_path, capsys):
    grid = write_grid(tmp_path / "g.yaml", tmp_path / "data", ["official", "masked"], [0, 1],
                      slurm={"partition": "gpu", "array_parallelism": 2})  # fmt: skip
    script = tmp_path / "grid.sbatch"
    assert cli_main(["ablate", "--grid", str(grid), "--out", str(tmp_path / "out"), "--emit-sbatch", str(script),
                     "--sbatch-extra=--account=abc", "--slurm-time", "600"]) == 0  # fmt: skip
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    heads = [ln.split(None, 1)[1] for ln in text.splitlines() if ln.startswith("#SBATCH")]
    for h in ("--array=0-3%2", "--requeue", "--signal=B:USR1@120", "--partition=gpu", "--time=600",
              "--account=abc", "--gres=gpu:1"):  # fmt: skip
        assert h in heads, (h, heads)
    assert (tmp_path / "out" / "grid.yaml").is_file() and (tmp_path / "out" / cluster.LOG_DIR).is_dir()
    for i, (variant, seed) in enumerate(load_grid(grid).jobs()):
        case = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{i})"))
        assert f"RUN={variant}_s{seed};" in case and f"seed={seed}" in case
        assert ("pesq_strategy=masked" in case) == (variant == "masked")
    for env, why in (({"SLURM_ARRAY_TASK_ID": "4"}, "not a task of this grid"), ({}, "SLURM_ARRAY_TASK_ID")):
        env = {k: v for k, v in os.environ.items() if k != "SLURM_ARRAY_TASK_ID"} | env
        out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
        assert out.returncode != 0 and why in out.stderr, out.stderr


def test_status_reports_queued_running_done_failed_epochs_slurm_state_and_last_line(tmp_path, fake_run, capsys,
                                                                                    monkeypatch):  # fmt: skip
    out = tmp_path / "out"
    grid = load_grid(write_grid(tmp_path / "g.yaml", tmp_path / "data", ["official", "masked"], [0, 1]))
    cluster.write_grid(grid, out)
    runs = out / "runs"
    fake_run(runs, "official_s0", [2.0, 2.1, 2.2], 0)  # done.json
    fake_run(runs, "masked_s0", [2.0], 0, finished=False)
    fake_run(runs, "official_s1", [2.0, 2.1], 0, finished=False)
    (runs / "official_s1" / "train.log").write_text(
        "$ python -m cmgan_lib.training.train\nepoch 2/4 ...\nerror: boom\n"
    )
    pd.DataFrame([dict(task=i, run=r, variant=r.rsplit("_s", 1)[0], seed=int(r[-1]), job_id=f"100_{i}",
                       executor="slurm", submitted="t")
                  for i, r in enumerate(["official_s0", "masked_s0", "official_s1", "masked_s1"])]).to_csv(
        out / cluster.JOBS_CSV, index=False)  # fmt: skip
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sacct = bin_dir / "sacct"
    sacct.write_text(
        "#!/bin/sh\ncat <<'EOF'\n100_0|COMPLETED\n100_1|RUNNING\n100_1.batch|RUNNING\n"
        "100_2|CANCELLED by 7\n100_[3%2]|PENDING\nEOF\n"
    )
    sacct.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    table = cluster.grid_status(out).set_index("run")
    assert cli_main(["ablate", "--status", str(out)]) == 0
    assert dict(table.state) == {"official_s0": "done", "masked_s0": "running", "official_s1": "failed",
                                 "masked_s1": "queued"}  # fmt: skip
    assert dict(table.epochs) == {"official_s0": 3, "masked_s0": 1, "official_s1": 2, "masked_s1": 0}
    assert dict(table.slurm_state) == {"official_s0": "COMPLETED", "masked_s0": "RUNNING",
                                       "official_s1": "CANCELLED", "masked_s1": "PENDING"}  # fmt: skip
    assert table.loc["official_s1", "last_line"] == "error: boom"
    head, *lines = capsys.readouterr().out.splitlines()
    assert head.startswith(f"{out}: 4 runs: ")
    assert all(f"1 {s}" in head for s in ("done", "running", "failed", "queued")), head
    assert any("official_s1" in ln and "CANCELLED 100_2" in ln and ln.endswith("error: boom") for ln in lines), lines


def test_status_without_a_job_asks_the_run_lock(tmp_path, fake_run):
    out = tmp_path / "out"
    cluster.write_grid(load_grid(write_grid(tmp_path / "g.yaml", tmp_path / "d", ["official", "masked"], [0])), out)
    fake_run(out / "runs", "official_s0", [2.0], 0, finished=False)
    with runguard.run_lock(out / "runs" / "official_s0"):  # this process writes it
        table = cluster.grid_status(out).set_index("run")
    assert dict(table.state) == {"official_s0": "running", "masked_s0": "not submitted"}
    assert cluster.grid_status(out).set_index("run").loc["official_s0", "state"] == "not submitted"


# ------------------------------------------------------------------------------------------- slow: training
@pytest.fixture(scope="module")
def local_grid(corpus, tmp_path_factory):
    """A 2-variant x 2-seed tiny grid submitted to submitit's local executor, and its folder once it settled."""
    tmp = tmp_path_factory.mktemp("local_grid")
    grid = write_grid(tmp / "g.yaml", corpus, ["official", "masked"], [0, 1], slurm={"gpus_per_run": 0})
    out = tmp / "out"
    t0 = time.time()
    assert cli_main(["ablate", "--grid", str(grid), "--out", str(out), "--executor", "submitit-local"]) == 0
    submit_s = time.time() - t0
    jobs = pd.read_csv(out / cluster.JOBS_CSV)
    return grid, out, submit_s, jobs, wait_until_settled(out)


@pytest.mark.slow
@needs_submitit
def test_submitit_local_runs_a_2x2_grid_end_to_end_and_no_train_reports_it(local_grid, capsys):
    grid, out, submit_s, jobs, table = local_grid
    assert submit_s < 30  # returns at once: the tasks train after it returned
    assert list(jobs.run) == ["official_s0", "masked_s0", "official_s1", "masked_s1"]
    assert list(jobs.task) == [0, 1, 2, 3]
    assert (table.state == "done").all() and (table.epochs == TINY["epochs"]).all(), table
    capsys.readouterr()
    assert cli_main(["ablate", "--grid", str(out / "grid.yaml"), "--out", str(out), "--no-train",
                     "--no-notebooks"]) == 0  # fmt: skip
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary.run) == sorted(jobs.run) and summary.status.str.startswith("done").all()
    assert "4 of 4 runs finished" in capsys.readouterr().out
    # a second submission retrains nothing
    assert cli_main(["ablate", "--grid", str(grid), "--out", str(out), "--executor", "submitit-local"]) == 0
    assert "nothing submitted" in capsys.readouterr().out and len(pd.read_csv(out / cluster.JOBS_CSV)) == 4


@pytest.mark.slow
@needs_submitit
def test_a_preempted_task_is_requeued_and_a_failing_one_is_reported_failed_while_the_others_finish(
        local_grid, corpus, tmp_path):  # fmt: skip
    """One grid, two tasks: `official_s0` preempted mid-training (requeued, resumed, its logs those of the local
    grid's uninterrupted run) and `too_big_s0` failing at its start (reported failed, with its last line)."""
    _, reference, *_ = local_grid
    grid = write_grid(tmp_path / "g.yaml", corpus, {"official": {}, "too_big": {"batch_size": 64}}, [0],
                      slurm={"gpus_per_run": 0})  # fmt: skip
    out = tmp_path / "out"
    assert cli_main(["ablate", "--grid", str(grid), "--out", str(out), "--executor", "submitit-local"]) == 0
    run = out / "runs" / "official_s0"
    wait_for_epoch(run, 1)  # epoch 1 checkpointed, epoch 2 under way
    trainer = runguard.lock_holder(run)
    task = int(Path(f"/proc/{trainer}/stat").read_text().rsplit(")", 1)[1].split()[1])  # the submitit task
    os.kill(task, signal.SIGUSR2)  # what submitit's Slurm job receives on preemption
    table = wait_until_settled(out).set_index("run")
    assert dict(table.state) == {"official_s0": "done", "too_big_s0": "failed"}, table
    assert "batch_size=64" in table.loc["too_big_s0", "last_line"]
    assert table.loc["official_s0", "epochs"] == TINY["epochs"]
    log = (run / "train.log").read_text()
    assert "SIGUSR1 received" in log and "exit 75" in log, log  # stopped at a step boundary, asking for a requeue
    starts = [ln for ln in log.splitlines() if ln.startswith("$ ")]
    assert len(starts) == 2 and "--resume" in starts[1], log  # requeued once, resumed from last.pt
    submitit_logs = "".join(p.read_text() for p in (out / cluster.LOG_DIR).glob("*_log.*"))
    assert "Requeued job" in submitit_logs
    assert_same_logs(run, reference / "runs" / "official_s0")


@pytest.mark.slow
@needs_submitit  # its reference is the local grid's run
def test_the_emitted_script_run_by_hand_trains_its_run_and_usr1_requeues_it(local_grid, tmp_path):
    grid, reference, *_ = local_grid
    out = tmp_path / "out"
    script = tmp_path / "grid.sbatch"
    assert cli_main(["ablate", "--grid", str(grid), "--out", str(out), "--emit-sbatch", str(script)]) == 0
    bin_dir = tmp_path / "bin"  # a stand-in scontrol that records what it was asked
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.txt\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_ARRAY_TASK_ID": "3",
           "SLURM_JOB_ID": "4242", "PYTHONPATH": str(ROOT)}  # fmt: skip
    run = out / "runs" / "masked_s1"  # task 3 of Grid.jobs(): seed 1, the second variant
    shell = subprocess.Popen(["bash", str(script)], env=env, cwd=tmp_path)
    wait_for_epoch(run, 1)
    shell.send_signal(signal.SIGUSR1)  # what `--signal=B:USR1@120` sends before the time limit
    assert shell.wait(timeout=300) == 0
    assert (tmp_path / "scontrol.txt").read_text().split() == ["requeue", "4242"]
    log = (run / "train.log").read_text()
    assert "exit 75" in log and not (run / "done.json").exists(), log
    assert subprocess.run(["bash", str(script)], env=env, cwd=tmp_path, timeout=300).returncode == 0  # requeued
    assert (run / "done.json").is_file() and "--resume" in (run / "train.log").read_text()
    assert_same_logs(run, reference / "runs" / "masked_s1")
    assert subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True).stdout.strip() == (
        "masked_s1: done (not retrained)"
    )
