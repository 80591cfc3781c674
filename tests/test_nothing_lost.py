"""Issue 24, beside tests/test_bad_inputs.py: one writer per run folder, trainers that die with `ablate`, long
files that enhance on any machine, and a line (not a traceback) for SIGINT, a full disk, a dead PESQ worker,
and configs that would do nothing."""

# ruff: noqa: F811  (the `corpus` fixture is imported from test_bad_inputs and requested by name)

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from test_bad_inputs import OFFICIAL, ROOT, SR, corpus, tiny  # noqa: F401 (corpus: the shared module fixture)

from cmgan_lib.cli import main as cli_main
from cmgan_lib.models import TSCNet
from cmgan_lib.scoring.pesq_worker import PesqPool, PesqWorkerDied, serial_scores
from cmgan_lib.training import runguard
from cmgan_lib.training.runguard import RunLockedError, run_lock
from cmgan_lib.training.train import Trainer
from cmgan_lib.training.train import main as train_main


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _logs(run: Path) -> dict[str, pd.DataFrame]:
    """The step and epoch logs without the wall-clock columns."""
    names = ("training_step_log.csv", "training_epoch_log.csv")
    return {n: pd.read_csv(run / n).drop(columns=["seconds"]) for n in names}


# ------------------------------------------------------------------------------------ 1. one writer per folder
def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holder_never_blocks(corpus, tmp_path, capsys,
                                                                                     monkeypatch):  # fmt: skip
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom cmgan_lib.training.runguard import run_lock\n"
         "with run_lock(sys.argv[1]):\n    print('ready', flush=True)\n    time.sleep(120)\n", str(run)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert train_main(["--config", OFFICIAL, *tiny(corpus, run)]) == 2
        line = _one_line(capsys.readouterr().err)
        assert f"PID {holder.pid}" in line and str(run) in line
        assert [p.name for p in run.iterdir()] == [runguard.LOCK_NAME]  # nothing written by the refused writer
    finally:
        holder.kill()  # SIGKILL: its lock file stays, stale
        holder.wait()
    held = []
    fit = Trainer.fit

    def checking_fit(self):  # while train / --resume run, the folder is theirs
        with pytest.raises(RunLockedError, match=f"PID {os.getpid()}"), run_lock(self.run_dir):
            pass
        held.append(self.run_dir)
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", checking_fit)
    assert train_main(["--config", OFFICIAL, *tiny(corpus, run)]) == 0
    assert train_main(["--resume", str(run), "epochs=2"]) == 0
    assert held == [run, run]
    with run_lock(run):  # released when they ended
        pass


def test_a_refused_run_leaves_no_folder(corpus, tmp_path, capsys):
    run = tmp_path / "never"
    assert train_main(["--config", OFFICIAL, *tiny(corpus, run, "batch_size=5")]) == 2
    assert not run.exists()


# ------------------------------------------------------------------------------- 2. trainers die with ablate
def test_a_trainer_started_by_a_runner_dies_with_it(tmp_path):
    """`study.train_run` starts trainers with child_env(); main() calls die_with_parent(): a runner killed with
    SIGKILL takes its trainer with it."""
    child = "import time\nfrom cmgan_lib.training import runguard\nrunguard.die_with_parent()\ntime.sleep(120)\n"
    runner = tmp_path / "runner.py"
    runner.write_text(
        textwrap.dedent(f"""
        import subprocess, sys, time
        from cmgan_lib.training import runguard
        p = subprocess.Popen([sys.executable, "-c", {child!r}], env=runguard.child_env(), cwd={str(ROOT)!r})
        print(p.pid, flush=True)
        time.sleep(120)
    """)
    )
    proc = subprocess.Popen([sys.executable, str(runner)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    trainer_pid = int(proc.stdout.readline())
    time.sleep(1.0)  # the child is running and has asked to die with its parent
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and _alive(trainer_pid):
        time.sleep(0.1)
    alive = _alive(trainer_pid)
    if alive:
        os.kill(trainer_pid, signal.SIGKILL)
    assert not alive, "the trainer outlived the runner that started it"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_ablate_starts_trainers_that_die_with_it(monkeypatch, tmp_path):
    from cmgan_lib import study

    seen = {}

    class Popen:  # the trainer's process, as train_run starts it
        def __init__(self, cmd, **kw):
            seen.update(kw["env"])

        def wait(self):
            return 1

    monkeypatch.setattr(study.subprocess, "Popen", Popen)
    study.train_run(OFFICIAL, "official", 0, tmp_path)
    assert seen.get(runguard.PARENT_ENV) == str(os.getpid())


@pytest.mark.slow
def test_killing_ablate_stops_its_trainer_with_a_resumable_run(corpus, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        f"base_config: {OFFICIAL}\nvariants: [official]\nseeds: [0]\noverrides: {{data_dir: {corpus}, epochs: 50, "
        "batch_size: 2, cut_len: 8000, num_channel: 4, num_tscb: 1, ndf: 4, max_steps_per_epoch: 2, val_max_files: 1, "
        "pesq_workers: 1}\n"
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cmgan_lib.cli", "ablate", "--grid", str(grid), "--out", str(out), "--no-notebooks"]
    ablate = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = out / "runs" / "official_s0"
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "training_epoch_log.csv").is_file():
        time.sleep(0.2)
    pid = int((run / runguard.LOCK_NAME).read_text())
    os.kill(ablate.pid, signal.SIGKILL)
    ablate.wait()
    deadline = time.time() + 30
    while time.time() < deadline and _alive(pid):
        time.sleep(0.1)
    alive = _alive(pid)
    if alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, "the trainer outlived ablate"
    log = (run / "train.log").read_text()
    assert "SIGTERM" in log and "--resume" in log and "Traceback" not in log


# ------------------------------------------------------------------------------------------ 3. long files
class Identity(torch.nn.Module):
    """Returns its compressed input (enhancement reduces to STFT -> iSTFT) and records each batch's shape."""

    num_channel, num_features = 64, 201

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return x[:, 0:1], x[:, 1:2]


def test_a_chunk_never_asks_for_more_than_the_budget_and_overlap_add_is_exact_for_identity():
    from cmgan_lib.scoring.enhance import enhance_track
    from cmgan_lib.scoring.memory import enhance_bytes

    noisy = (0.1 * np.random.default_rng(0).standard_normal(30 * SR + 37)).astype(np.float32)
    model = Identity()
    budget = 4 * 2**30  # 4 GiB: the published two 15 s chunks would take far more
    assert enhance_bytes(model, 2, 15 * SR) > budget
    out = enhance_track(model, noisy, budget=budget)
    frames = {s[2] for s in model.shapes}
    assert all(enhance_bytes(model, s[0], (s[2] - 1) * 100) <= budget for s in model.shapes), model.shapes
    assert max(frames) < 15 * SR // 100
    np.testing.assert_allclose(out, noisy, atol=1e-5)


def test_the_published_chunking_is_kept_where_it_fits_and_run_chunk_by_chunk_where_only_one_fits():
    from cmgan_lib.scoring.enhance import enhance_track
    from cmgan_lib.scoring.memory import enhance_bytes

    torch.manual_seed(0)
    model = TSCNet(num_channel=4).eval()
    noisy = (0.05 * np.random.default_rng(1).standard_normal(3 * SR + 301)).astype(np.float32)
    whole = enhance_track(model, noisy, cut_len=SR, budget=2**50)  # 4 chunks of 12,100 samples in one batch
    one_at_a_time = enhance_track(model, noisy, cut_len=SR, budget=enhance_bytes(model, 1, 12100))
    np.testing.assert_allclose(one_at_a_time, whole, atol=1e-5)


def test_a_long_file_beside_a_short_one_enhances_and_a_failing_file_is_one_line(tmp_path, capsys, monkeypatch):
    """A file 5x longer than the memory budget's chunk enhances in chunks to its full length (10 s here: 30 s
    took three times as long and tests nothing more)."""
    from cmgan_lib.scoring import enhance

    torch.manual_seed(0)
    ckpt = tmp_path / "g.pt"
    torch.save(TSCNet(num_channel=4, num_tscb=1).state_dict(), ckpt)  # 1 block: `enhance` reads the depth
    inp = tmp_path / "in"
    inp.mkdir()
    rng = np.random.default_rng(0)
    sf.write(inp / "long.wav", 0.1 * rng.standard_normal(10 * SR), SR, subtype="PCM_16")
    sf.write(inp / "short.wav", 0.1 * rng.standard_normal(SR // 10), SR, subtype="PCM_16")
    from cmgan_lib.scoring.memory import enhance_bytes

    room = 2 * enhance_bytes(TSCNet(num_channel=4, num_tscb=1), 1, 2 * SR)  # half of it, the budget, fits one 2 s chunk
    monkeypatch.setattr("cmgan_lib.scoring.memory.free_bytes", lambda device: room)
    argv = ["enhance", "--checkpoint", str(ckpt), "--input", str(inp), "--output", str(tmp_path / "out")]
    assert cli_main(argv) == 0
    assert sf.info(tmp_path / "out" / "long.wav").frames == 10 * SR
    assert (tmp_path / "out" / "short.wav").is_file()
    capsys.readouterr()

    real = enhance.enhance_batch

    def allocator(model, audio, *a, **kw):  # the long file fails as torch does on CPU; the short one works
        if audio.shape[-1] > SR:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return real(model, audio, *a, **kw)

    monkeypatch.setattr(enhance, "enhance_batch", allocator)
    assert cli_main([*argv[:-1], str(tmp_path / "out2"), "--max-chunk-seconds", "2"]) == 1
    captured = capsys.readouterr()
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("error")]  # the rest: the progress bar
    assert len(errors) == 1 and "Traceback" not in captured.err, captured.err
    line = errors[0]
    assert "long.wav" in line and "out of memory" in line and "--max-chunk-seconds" in line
    assert (tmp_path / "out2" / "short.wav").is_file() and "enhanced 1 of 2" in captured.out


@pytest.mark.slow
def test_the_memory_estimate_is_an_upper_bound_of_the_measured_peak(tmp_path):
    # peak RSS from VmHWM, reset first: ru_maxrss would start at the pytest process's peak (kept across fork)
    script = textwrap.dedent("""
        import torch
        from cmgan_lib.models import TSCNet
        from cmgan_lib.scoring.enhance import enhance_batch
        from cmgan_lib.scoring.memory import enhance_bytes
        def hwm():
            return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024
        m = TSCNet(num_channel=8).eval()
        x = torch.randn(1, 3 * 16000)
        open("/proc/self/clear_refs", "w").write("5")
        base = hwm()
        enhance_batch(m, x)
        print(hwm() - base, enhance_bytes(m, 1, x.shape[-1]))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    used, estimate = map(int, out.stdout.split())
    assert used <= estimate < 4 * used


# ------------------------------------------------------------------- 4. one line, the right code, nothing lost
def test_sigint_stops_at_a_step_boundary_and_resume_continues_exactly(corpus, tmp_path, capsys, monkeypatch):
    whole = tmp_path / "whole"
    assert train_main(["--config", OFFICIAL, *tiny(corpus, whole, "epochs=2")]) == 0
    run = tmp_path / "run"
    step = Trainer.train_step

    def step_then_signal(self, *a, **kw):
        row = step(self, *a, **kw)
        if self.global_step == 2:  # in step 3, the first of epoch 2 (the counter moves after the step)
            runguard.request_stop(signal.SIGINT)
        return row

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    capsys.readouterr()
    assert train_main(["--config", OFFICIAL, *tiny(corpus, run, "epochs=2")]) == 128 + signal.SIGINT
    line = _one_line(capsys.readouterr().err)
    assert "SIGINT" in line and "before step 4" in line and f"--resume {run}" in line
    monkeypatch.undo()
    assert train_main(["--resume", str(run)]) == 0
    for name, df in _logs(run).items():
        pd.testing.assert_frame_equal(df, _logs(whole)[name], check_exact=True, obj=name)


def test_a_real_sigint_ends_in_one_line_and_leaves_a_resumable_run(corpus, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "cmgan_lib.training", "--config", OFFICIAL, *tiny(corpus, run, "epochs=100")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "last.pt").is_file():
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "--resume" in err.strip().splitlines()[-1]
    assert (
        train_main(["--resume", str(run), "epochs=" + str(len(pd.read_csv(run / "training_epoch_log.csv")) + 1)]) == 0
    )


def test_a_full_disk_names_the_path_and_the_bytes_and_keeps_the_previous_checkpoint(corpus, tmp_path, capsys,
                                                                                     monkeypatch):  # fmt: skip
    run = tmp_path / "run"
    assert train_main(["--config", OFFICIAL, *tiny(corpus, run)]) == 0
    before = {name: (run / name).read_bytes() for name in ("last.pt", "best.pt")}
    real_save = torch.save

    def full_disk_save(obj, f, *a, **kw):
        if isinstance(f, str | os.PathLike):  # a file: the disk fills up after 64 bytes, as PyTorch reports it
            Path(f).write_bytes(b"x" * 64)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", full_disk_save)
    monkeypatch.setattr(runguard.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))
    capsys.readouterr()
    assert train_main(["--resume", str(run), "epochs=2"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "disk full" in line and "needs" in line and "bytes" in line and "100 are free" in line
    assert "best.pt" in line or "last.pt" in line  # the first checkpoint of the epoch (best.pt on a new best)
    assert {name: (run / name).read_bytes() for name in before} == before
    assert not list(run.glob(".*.tmp")) and not list(run.glob(".*.prev"))


def _pool_inputs():
    rng = np.random.default_rng(0)
    clean = [0.1 * rng.standard_normal(SR).astype(np.float32) for _ in range(2)]
    est = [c + 0.01 * rng.standard_normal(SR).astype(np.float32) for c in clean]
    return clean, est


def _kill_workers(pool: PesqPool) -> None:
    for pid in list(pool._executor._processes):
        os.kill(pid, signal.SIGKILL)


def test_a_dead_pesq_worker_is_replaced_and_the_batch_scored_again(capsys):
    clean, est = _pool_inputs()
    with PesqPool(n_workers=1) as pool:
        handle = pool.submit(clean, est)
        _kill_workers(pool)  # mid-batch
        raw, reasons = handle.result()
        want_raw, want_reasons = serial_scores(clean, est)
        np.testing.assert_array_equal(raw, want_raw)
        assert reasons == want_reasons
        _kill_workers(pool)  # between batches: also replaced, once per death
        np.testing.assert_array_equal(pool.scores(clean, est)[0], want_raw)
    assert capsys.readouterr().err.count("PESQ worker process died") == 2


def test_a_second_pesq_worker_death_in_a_row_is_one_line(corpus, tmp_path, capsys, monkeypatch):
    clean, est = _pool_inputs()
    submit = PesqPool.submit_chunks

    def submit_then_die(self, c, e):
        futures = submit(self, c, e)
        _kill_workers(self)
        return futures

    with PesqPool(n_workers=1) as pool:
        monkeypatch.setattr(PesqPool, "submit_chunks", submit_then_die)
        with pytest.raises(PesqWorkerDied, match="died twice in a row"):
            pool.submit(clean, est).result()
    monkeypatch.undo()
    monkeypatch.setattr(Trainer, "fit", lambda self: pool.replace_broken())  # the trainer's view of it
    pool.deaths_in_a_row = 1
    capsys.readouterr()
    assert train_main(["--config", OFFICIAL, *tiny(corpus, tmp_path / "run")]) == 1
    assert "died twice in a row" in _one_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- 5. configs that would do nothing
@pytest.mark.parametrize(
    "extra, words",
    [
        (["epochs=0"], ("official.yaml", "epochs=0", ">= 1")),
        (["batch_size=1000"], ("batch_size=1000", "4 training clips", "drop_last")),
    ],
)
def test_a_run_that_would_do_nothing_is_refused_before_it_starts(corpus, tmp_path, capsys, extra, words):
    run = tmp_path / "never"
    assert train_main(["--config", OFFICIAL, *tiny(corpus, run, *extra)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert all(w in line for w in words), line
    assert not run.exists()
