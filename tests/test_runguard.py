"""runguard's requeue signals (issue 34): SIGUSR1/SIGUSR2 stop the trainer at a step boundary like SIGINT, and
the exit status asks for a requeue; the run then resumes exactly. (The lock and SIGINT: tests/test_nothing_lost.py.)"""

# ruff: noqa: F811  (the `corpus` fixture is imported from test_bad_inputs and requested by name)

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_bad_inputs import OFFICIAL, ROOT, corpus, tiny  # noqa: F401 (corpus: the shared module fixture)

from cmgan_lib.training import runguard
from cmgan_lib.training.train import Trainer
from cmgan_lib.training.train import main as train_main


def _logs(run: Path) -> dict[str, pd.DataFrame]:
    names = ("training_step_log.csv", "training_epoch_log.csv")
    return {n: pd.read_csv(run / n).drop(columns=["seconds"]) for n in names}


@pytest.mark.parametrize("sig", [signal.SIGUSR1, pytest.param(signal.SIGUSR2, marks=pytest.mark.slow)],
                         ids=lambda s: signal.Signals(s).name)  # fmt: skip
def test_a_requeue_signal_stops_at_a_step_boundary_exits_75_and_resume_continues_exactly(corpus, tmp_path, capsys,
                                                                                         monkeypatch, sig):  # fmt: skip
    whole = tmp_path / "whole"
    assert train_main(["--config", OFFICIAL, *tiny(corpus, whole, "epochs=2")]) == 0
    run = tmp_path / "run"
    step = Trainer.train_step

    def step_then_signal(self, *a, **kw):
        row = step(self, *a, **kw)
        if self.global_step == 2:  # in step 3, the first of epoch 2
            signal.raise_signal(sig)  # the real handler, as installed by train.main
        return row

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    capsys.readouterr()
    assert train_main(["--config", OFFICIAL, *tiny(corpus, run, "epochs=2")]) == runguard.REQUEUE_EXIT == 75
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert signal.Signals(sig).name in last and "before step 4" in last and "requeue" in last, err
    assert f"--resume {run}" in last and "Traceback" not in err
    monkeypatch.undo()
    assert train_main(["--resume", str(run)]) == 0
    for name, df in _logs(run).items():
        pd.testing.assert_frame_equal(df, _logs(whole)[name], check_exact=True, obj=name)


def test_lock_holder_names_a_live_writer_and_nobody_after_it_ends(tmp_path):
    run = tmp_path / "run"
    assert runguard.lock_holder(run) is None and not run.exists()  # never creates the folder
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom cmgan_lib.training.runguard import run_lock\n"
         "with run_lock(sys.argv[1]):\n    print('ready', flush=True)\n    sys.stdin.readline()\n", str(run)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert runguard.lock_holder(run) == holder.pid
        assert runguard.lock_holder(run) == holder.pid  # asking does not take it away
    finally:
        holder.communicate("\n", timeout=30)
    assert runguard.lock_holder(run) is None
