"""Issue 32 (points 3-5), beside tests/test_nothing_lost.py: the last tracebacks become one line with a non-zero
exit (a full disk under a log row, a device this torch lacks, a `base:` cycle, a generator state dict that does
not fit, Ctrl-C on `ablate`), silent acceptances become refusals (non-integer integers, duplicated YAML keys,
`share-report` over a report, tiled pairs in `audit`, truncated and near-silent WAVs), and the small mends of
`enhance` (--resample, a run folder as --checkpoint, files written with the user's umask)."""

# ruff: noqa: F811  (the `corpus` and `finished_run` fixtures are imported from test_bad_inputs, requested by name)

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from test_bad_inputs import OFFICIAL, ROOT, SR, _ckpt, _noisy_folder, corpus, finished_run, tiny  # noqa: F401

from cmgan_lib.cli import main as cli_main
from cmgan_lib.training import runguard
from cmgan_lib.training.runs import CsvLog, atomic_save
from cmgan_lib.training.train import Trainer
from cmgan_lib.training.train import main as train_main

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a usable CUDA device")


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------ 3. tracebacks become one line
def _full_step_log(monkeypatch):
    """Every step row goes to /dev/full (a real ENOSPC from the kernel), from the first row of `fit` on."""
    fit = Trainer.fit

    def fit_on_a_full_disk(self):
        (self.run_dir / "training_step_log.csv").unlink(missing_ok=True)
        (self.run_dir / "training_step_log.csv").symlink_to("/dev/full")
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", fit_on_a_full_disk)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_under_a_log_row_is_one_line_naming_the_file_and_the_resume(corpus, finished_run, tmp_path,
                                                                                capsys, monkeypatch):  # fmt: skip
    _full_step_log(monkeypatch)
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert train_main(["--resume", str(run), "epochs=2"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "training_step_log.csv" in line and "disk full" in line and f"--resume {run}" in line
    assert "1 finished epoch" in line


def test_a_csv_log_on_a_full_disk_raises_disk_full_and_leaves_nothing_to_flush(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux)")
    (tmp_path / "log.csv").symlink_to("/dev/full")
    log = CsvLog(tmp_path / "log.csv", ["epoch", "x"])
    with pytest.raises(runguard.DiskFullError, match="log.csv: disk full while writing a log row") as exc:
        log.write(dict(epoch=0, x=1))
    assert "nothing to resume; start again with --overwrite" in str(exc.value)  # no last.pt in this folder
    log.close()  # nothing buffered is flushed again (no second error, no 'Exception ignored' at exit)


@NO_CUDA
@pytest.mark.parametrize("device", ["cuda", "gpu", "cuda:1"])
def test_a_device_this_torch_lacks_is_one_line_in_train_and_enhance(device, corpus, tmp_path, capsys):
    run = tmp_path / "never"
    assert train_main(["--config", OFFICIAL, *tiny(corpus, run), f"device={device}"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"device={device!r}" in line and "CUDA" in line
    assert not run.exists()
    out = tmp_path / "out"
    argv = ["enhance", "--checkpoint", str(_ckpt(tmp_path)), "--input", str(_noisy_folder(tmp_path)), "--output",
            str(out), "--device", device]  # fmt: skip
    assert cli_main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"device={device!r}" in line and "CUDA" in line and not out.exists()


def test_a_base_cycle_is_one_line_naming_the_files(tmp_path, capsys):
    (tmp_path / "self.yaml").write_text("base: self.yaml\nepochs: 2\n")
    (tmp_path / "a.yaml").write_text(f"base: b.yaml\nrun_dir: {tmp_path / 'never'}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    assert train_main(["--config", str(tmp_path / "self.yaml")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "self.yaml -> " in line and "cycle" in line
    assert train_main(["--config", str(tmp_path / "a.yaml")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "a.yaml -> " in line and "b.yaml -> " in line and "cycle" in line
    assert not (tmp_path / "never").exists()


def _bad_state(tmp: Path, how: str) -> tuple[Path, str]:
    """A generator state dict with one key missing or one tensor of the wrong shape, and that key."""
    path = _ckpt(tmp)
    state = torch.load(path, weights_only=True)
    key = "TSCB_1.time_conformer.ff1.fn.fn.net.0.weight"
    if how == "missing":
        del state[key]
    else:
        state[key] = torch.zeros(3, 3)
    torch.save(state, path)
    return path, key


@pytest.mark.parametrize("how", ["missing", "shape"])
def test_a_state_dict_that_does_not_fit_is_one_line_in_evaluate_and_enhance(how, corpus, tmp_path, capsys):
    ckpt, key = _bad_state(tmp_path, how)
    words = ("missing key" if how == "missing" else "has shape (3, 3)", key, str(ckpt))
    assert cli_main(["evaluate", "--checkpoint", str(ckpt), "--test-dir", str(corpus / "test"), "--out",
                     str(tmp_path / "ev"), "--jobs", "1"]) == 2  # fmt: skip
    line = _one_line(capsys.readouterr().err)
    assert all(w in line for w in words), line
    assert cli_main(["enhance", "--checkpoint", str(ckpt), "--input", str(_noisy_folder(tmp_path)), "--output",
                     str(tmp_path / "out")]) == 2  # fmt: skip
    line = _one_line(capsys.readouterr().err)
    assert all(w in line for w in words), line


def _interrupt_ablate_after_first_step(corpus: Path, tmp: Path, seeds: str) -> tuple[subprocess.Popen, Path, str, int]:
    grid = tmp / "grid.yaml"
    grid.write_text(
        f"base_config: {OFFICIAL}\nvariants: [official, masked]\nseeds: [{seeds}]\noverrides: {{data_dir: {corpus}, "
        "epochs: 50, batch_size: 2, cut_len: 8000, num_channel: 4, num_tscb: 1, ndf: 4, max_steps_per_epoch: 2, "
        "val_max_files: 1, pesq_workers: 1}\n"
    )
    out = tmp / "out"
    cmd = [sys.executable, "-m", "cmgan_lib.cli", "ablate", "--grid", str(grid), "--out", str(out), "--no-notebooks"]
    # SIGINT as a terminal's Ctrl-C finds it: a test process started in the background (`cmd &` in a script)
    # inherits SIGINT ignored, and an ignored signal stays ignored across exec
    ablate = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    run = out / "runs" / "official_s0"
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "training_epoch_log.csv").is_file():
        time.sleep(0.2)
    assert (run / "training_epoch_log.csv").is_file(), "the first run never finished an epoch"
    pid = int((run / runguard.LOCK_NAME).read_text())
    ablate.send_signal(signal.SIGINT)  # to ablate alone: it must stop its trainer itself
    try:
        _, err = ablate.communicate(timeout=120)
    finally:
        ablate.kill()
    return ablate, out, err, pid


@pytest.mark.slow
def test_ctrl_c_on_ablate_stops_its_trainer_writes_status_and_exits_130_in_one_line(corpus, tmp_path):
    ablate, out, err, pid = _interrupt_ablate_after_first_step(corpus, tmp_path, "0")
    assert ablate.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: 1 run(s) stopped at a step boundary, 1 not started"), err[-2000:]
    assert "status.csv" in last
    status = pd.read_csv(out / "runs" / "status.csv").set_index("run").status
    assert status["official_s0"].startswith("interrupted (exit 143)") and "--resume" in status["official_s0"]
    assert status["masked_s0"] == "not started: interrupted"
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    log = (out / "runs" / "official_s0" / "train.log").read_text()
    assert "SIGTERM" in log and "Traceback" not in log


def test_ctrl_c_on_ablate_starts_no_further_run_and_names_each_in_status(tmp_path, monkeypatch, capsys):
    """The fast check of the same: stand-in trainers (a process that exits 143 on SIGTERM) and a Ctrl-C sent to
    this process while the first one runs."""
    from cmgan_lib import study

    started = []
    start = study.Trainers.start

    def stand_in(self, cmd, **kw):
        code = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(143))\ntime.sleep(60)\n"
        proc = start(self, [sys.executable, "-c", code], **kw)
        if proc is not None:
            started.append(proc)
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C while it runs
        return proc

    monkeypatch.setattr(study.Trainers, "start", stand_in)
    monkeypatch.setattr(study, "visible_gpus", lambda: [])

    monkeypatch.setattr(study.Grid, "data_dir", lambda self, build=False: tmp_path)  # no corpus to build here
    grid = study.Grid(base_config=OFFICIAL, variants=["official", "masked", "seed_fixes"], seeds=[0])
    # Ctrl-C's KeyboardInterrupt even when this process was started with SIGINT ignored (`cmd &` in a script)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert cli_main(["ablate", "--grid", str(_grid_file(tmp_path, grid)), "--out", str(tmp_path / "out"),
                         "--no-notebooks"]) == 130  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("interrupted: 1 run(s) stopped at a step boundary, 2 not started")
    status = pd.read_csv(tmp_path / "out" / "runs" / "status.csv").set_index("run").status
    assert sorted(s.split(":")[0] for s in status) == ["interrupted (exit 143)", "not started", "not started"]
    assert len(started) == 1 and started[0].poll() == 143


def _grid_file(tmp: Path, grid) -> Path:
    import yaml

    path = tmp / "grid.yaml"
    path.write_text(yaml.safe_dump(dict(base_config=grid.base_config, variants=grid.variants, seeds=grid.seeds,
                                        overrides={"epochs": 1})))  # fmt: skip
    return path


# ----------------------------------------------------------------------------- 4. refusals, not silent accepts
@pytest.mark.parametrize("given", ["epochs=1.5", "batch_size=2.5", "seed=true", "cut_len=8000.5"])
def test_a_non_integer_integer_key_is_refused(given, corpus, tmp_path, capsys):
    run = tmp_path / "never"
    assert train_main(["--config", OFFICIAL, *tiny(corpus, run), given]) == 2
    line = _one_line(capsys.readouterr().err)
    assert given.split("=")[0] in line and "not an integer" in line and not run.exists()


def test_a_non_integer_in_a_config_file_is_refused_naming_the_file(corpus, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(f"base: {OFFICIAL}\nepochs: 1.5\n")
    run = tmp_path / "never"
    assert train_main(["--config", str(path), *tiny(corpus, run)]) == 2  # the file is checked before overrides
    line = _one_line(capsys.readouterr().err)
    assert "c.yaml" in line and "epochs=1.5 is not an integer" in line and not run.exists()


def test_whole_numbers_written_as_floats_are_still_integers():
    from cmgan_lib.training.config import load_config

    assert load_config(OFFICIAL, ["epochs=2.0", "cut_len=1.6e4"]).epochs == 2


def test_a_duplicated_key_in_a_config_or_a_grid_file_is_refused_naming_file_and_key(corpus, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"base: {OFFICIAL}\npesq_strategy: skip\nseed: 1\npesq_strategy: masked\n")
    run = tmp_path / "never"
    assert train_main(["--config", str(config), *tiny(corpus, run)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "c.yaml" in line and "'pesq_strategy' given twice" in line and "line 4" in line and not run.exists()
    from cmgan_lib import study

    grid = tmp_path / "g.yaml"
    grid.write_text(f"base_config: {OFFICIAL}\nvariants: [official]\nseeds: [0]\nseeds: [0, 1, 2]\n")
    with pytest.raises(ValueError, match=r"g.yaml: line 4: key 'seeds' given twice \(first on line 3\)"):
        study.load_grid(grid)  # what `cmgan ablate --grid` reads first, before anything is written


def test_share_report_over_a_report_is_refused_without_overwrite(tmp_path, capsys):
    src = tmp_path / "ablation"
    src.mkdir()
    (src / "summary.csv").write_text("run\nofficial_s0\n")
    dest = tmp_path / "reports" / "r"
    argv = ["share-report", str(src), str(dest), "--command", "cmgan ablate", "--device", "2-core CPU"]
    assert cli_main(argv) == 0
    with (dest / "README.md").open("a") as f:
        f.write("\n## Findings added by hand\n")
    readme = (dest / "README.md").read_text()
    capsys.readouterr()
    assert cli_main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(dest) in line and "--overwrite" in line
    assert (dest / "README.md").read_text() == readme
    assert cli_main([*argv, "--overwrite"]) == 0
    assert "Findings added by hand" not in (dest / "README.md").read_text()


def test_audit_names_the_pairs_it_tiles_in_its_summary(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for sub in ("clean", "noisy"):
        (tmp_path / sub).mkdir()
    for name, seconds in (("long.wav", 1.2), ("short.wav", 0.2)):
        x = (0.1 * rng.standard_normal(int(seconds * SR))).astype(np.float32)
        sf.write(tmp_path / "clean" / name, x, SR, subtype="PCM_16")
        sf.write(tmp_path / "noisy" / name, x + 0.01 * rng.standard_normal(len(x)), SR, subtype="PCM_16")
    assert cli_main(["audit", str(tmp_path), "--cut-len", "1", "--crops-per-clip", "1", "--out",
                     str(tmp_path / "audit"), "--workers", "1"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "1 of 2 files shorter than the 1 s crop, tiled" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("short"))
    assert "0.20 s" in line and "shorter than the crop" in line and "too short for PESQ alone" in line
    assert not any(ln.strip().startswith("long ") for ln in text.splitlines())


def _corpus_copy(corpus: Path, tmp: Path) -> Path:
    out = tmp / "corpus"
    shutil.copytree(corpus, out)
    return out


def test_validate_data_reports_a_truncated_wav(corpus, tmp_path, capsys):
    data = _corpus_copy(corpus, tmp_path)
    for sub in ("clean", "noisy"):  # both cut alike: their lengths still agree, only the header tells
        target = data / "train" / sub / "s01_001.wav"
        raw = target.read_bytes()
        target.write_bytes(raw[: len(raw) // 2])
    assert cli_main(["validate-data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "Truncated files" in err and "s01_001.wav: the WAV header declares" in err and "Traceback" not in err


@pytest.mark.parametrize(("subtype", "peak"), [("FLOAT", 1e-20), ("PCM_24", 5e-7)])
def test_validate_data_reports_a_near_silent_file(subtype, peak, corpus, tmp_path, capsys):
    data = _corpus_copy(corpus, tmp_path)
    target = data / "train" / "noisy" / "s01_001.wav"
    n = sf.info(str(target)).frames
    sf.write(target, peak * np.sign(np.random.default_rng(0).standard_normal(n)), SR, subtype=subtype)
    assert cli_main(["validate-data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "s01_001.wav: near-silent: peak" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------ 5. small mends
def test_enhance_takes_the_resample_its_hint_suggests(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "a.wav", 0.1 * np.random.default_rng(0).standard_normal(8000), 8000, subtype="PCM_16")
    ckpt, out = _ckpt(tmp_path), tmp_path / "out"
    assert cli_main(["enhance", "--checkpoint", str(ckpt), "--input", str(folder), "--output", str(out)]) == 1
    assert "--resample" in capsys.readouterr().err  # the hint
    assert cli_main(["enhance", "--checkpoint", str(ckpt), "--input", str(folder), "--output", str(out),
                     "--resample"]) == 0  # fmt: skip
    audio, sr = sf.read(out / "a.wav")
    assert sr == SR and len(audio) == SR


def test_enhance_takes_a_run_folder_as_its_best_checkpoint(finished_run, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["enhance", "--checkpoint", str(finished_run), "--input", str(_noisy_folder(tmp_path)), "--output"]
    assert cli_main([*argv, str(out)]) == 0
    assert f"checkpoint: {finished_run / 'best.pt'}" in capsys.readouterr().err
    assert (out / "a.wav").is_file()


def test_the_disk_full_message_says_the_previous_checkpoint_is_untouched_only_when_there_was_one(tmp_path):
    full = OSError(errno.ENOSPC, "No space left on device")
    message = str(runguard.write_failure(full, {"x": 1}, tmp_path / "best.pt"))
    assert "untouched" not in message and "no best.pt was written" in message and "--overwrite" in message
    (tmp_path / "best.pt").write_bytes(b"old")
    (tmp_path / "last.pt").write_bytes(b"old")
    message = str(runguard.write_failure(full, {"x": 1}, tmp_path / "best.pt"))
    assert "the previous best.pt is untouched" in message and f"--resume {tmp_path}" in message


@pytest.fixture
def umask_002():
    old = os.umask(0o002)  # group-writable: distinct from both mkstemp's 0600 and the usual 0644
    yield 0o664
    os.umask(old)


def test_checkpoints_and_enhanced_wavs_get_the_users_umask(umask_002, tmp_path):
    atomic_save({"x": torch.zeros(1)}, tmp_path / "last.pt")
    assert (tmp_path / "last.pt").stat().st_mode & 0o777 == umask_002
    out = tmp_path / "out"
    assert cli_main(["enhance", "--checkpoint", str(_ckpt(tmp_path)), "--input", str(_noisy_folder(tmp_path)),
                     "--output", str(out)]) == 0  # fmt: skip
    assert (out / "a.wav").stat().st_mode & 0o777 == umask_002
