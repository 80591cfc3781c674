"""Issue 32: the end of an epoch is one commit, tested as databases are: the trainer is stopped at every write of
an epoch (its step rows and its end), by a kill or by a full disk, then resumed, and the run folder must end as an
uninterrupted run's (logs, best.pt, last.pt, the files kept). And `--resume` refuses a changed recipe.

The kill is a wrapped write (not timing luck): every write into the run folder (a log row's append, a checkpoint's
torch.save to its temporary file, a rename, a link, an unlink) is counted; at the chosen one the wrapper raises
`Crash` (a BaseException no handler of the trainer catches: the process state is lost as in a kill), or writes
half of it first, or fails as a full disk does (ENOSPC after half a row; torch's `unexpected pos` after 64 bytes).
"""

# ruff: noqa: F811  (the `corpus` fixture is imported from test_bad_inputs and requested by name)

from __future__ import annotations

import errno
import os
import pickle
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_bad_inputs import OFFICIAL, corpus, tiny  # noqa: F401 (corpus: the shared module fixture)

from cmgan_lib.training import commit, runguard, runs
from cmgan_lib.training.runs import CsvLog
from cmgan_lib.training.train import Trainer
from cmgan_lib.training.train import main as train_main

EPOCHS = 2
CRASH_EPOCH = 1  # the second epoch: a new best after a committed one, and the run's last epoch
# The writes of epoch 2 in the order the trainer makes them: its step row (one step an epoch: every step row is
# the same write), its epoch row, best.pt (the previous one kept as a link until the commit), epoch_002.pt, then
# last.pt, whose rename commits the epoch.
WRITE_POINTS = [
    "append training_step_log.csv", "append training_epoch_log.csv",
    "link best.pt.prev", "replace best.pt.prev", "save best.pt", "replace best.pt", "save epoch_002.pt",
    "replace epoch_002.pt", "save last.pt", "replace last.pt", "unlink best.pt.prev",
]  # fmt: skip
MODES = {"append": ("kill", "kill-half", "disk-full"), "save": ("kill", "kill-half", "disk-full")}
CASES = [(i, mode) for i, point in enumerate(WRITE_POINTS) for mode in MODES.get(point.split()[0], ("kill",))]


class Crash(BaseException):
    """The trainer killed at a write point."""


def _target(path: str | os.PathLike) -> str:
    """The file a write is for: `.last.pt.x1y2.tmp` -> last.pt, `.best.pt.prev.123.link.tmp` -> best.pt.prev."""
    name = Path(path).name
    if name.endswith(".tmp"):
        name = name.removesuffix(".tmp").removesuffix(".link").rsplit(".", 1)[0]
    return name.lstrip(".")


class Writes:
    """Counts the writes into `run` while armed (from the start of epoch CRASH_EPOCH) and fails the `fault`th."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, run: Path, fault: tuple[int, str] | None = None):
        self.run, self.fault, self.armed, self.points = run.resolve(), fault, False, []
        real_append, real_save = CsvLog._append, torch.save
        real = {op: getattr(os, op) for op in ("replace", "link", "unlink")}

        def append(log: CsvLog, data: bytes) -> None:
            mode = self.hit(f"append {log.path.name}", log.path)
            if mode in ("kill-half", "disk-full"):
                real_append(log, data[: len(data) // 2])
            if mode == "disk-full":
                raise OSError(errno.ENOSPC, "No space left on device")
            self.die(mode)
            real_append(log, data)

        def save(obj, f, *a, **kw):
            mode = self.hit(f"save {_target(f)}", f) if isinstance(f, str | os.PathLike) else None
            if mode in ("kill-half", "disk-full"):
                Path(f).write_bytes(b"x" * 64)
            if mode == "disk-full":
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
            self.die(mode)
            return real_save(obj, f, *a, **kw)

        def wrap(op: str):
            def wrapped(*a, **kw):
                self.die(self.hit(f"{op} {_target(a[-1])}", a[-1]))
                return real[op](*a, **kw)

            return wrapped

        monkeypatch.setattr(CsvLog, "_append", append)
        monkeypatch.setattr(torch, "save", save)
        for op in real:
            monkeypatch.setattr(os, op, wrap(op))
        monkeypatch.setattr(runguard.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))
        train_epoch = Trainer._train_epoch

        def arming(trainer: Trainer, epoch: int):
            self.armed = epoch == CRASH_EPOCH
            return train_epoch(trainer, epoch)

        monkeypatch.setattr(Trainer, "_train_epoch", arming)

    def hit(self, point: str, path: str | os.PathLike) -> str | None:
        if not self.armed or Path(path).resolve().parent != self.run:
            return None
        self.points.append(point)
        if self.fault is not None and self.fault[0] == len(self.points) - 1:
            self.armed = False  # what follows (the trainer's own clean-up) is not counted
            return self.fault[1]
        return None

    @staticmethod
    def die(mode: str | None) -> None:
        if mode in ("kill", "kill-half"):
            raise Crash


def _logs(run: Path) -> dict[str, pd.DataFrame]:
    names = ("training_step_log.csv", "training_epoch_log.csv")
    return {n: pd.read_csv(run / n).drop(columns=["seconds"]) for n in names}


def _files(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name not in (runguard.LOCK_NAME, "resume_overrides.csv"))


def _ck(path: Path) -> dict:
    """A checkpoint this test's own runs wrote: the full unpickler, 3x faster than weights_only on ~1500 tensors
    (the trainer itself reads with weights_only)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def _same_state(a: dict, b: dict) -> bool:
    return a["epoch"] == b["epoch"] and all(torch.equal(a["generator"][k], b["generator"][k]) for k in a["generator"])


@pytest.fixture(scope="module")
def whole(corpus, tmp_path_factory) -> dict:
    """An uninterrupted run of EPOCHS epochs (a checkpoint kept per epoch), the writes of its epoch 2, and a copy
    of its folder as epoch 1's commit left it (where every crash case starts)."""
    run = tmp_path_factory.mktemp("whole") / "run"
    snapshot = run.parent / "after_epoch_1"
    with pytest.MonkeyPatch.context() as mp:
        writes = Writes(mp, run)
        end_epoch = Trainer._end_epoch

        def end_then_copy(trainer: Trainer, epoch: int, *a):
            stop = end_epoch(trainer, epoch, *a)
            if epoch == CRASH_EPOCH - 1:
                shutil.copytree(run, snapshot, ignore=shutil.ignore_patterns(runguard.LOCK_NAME))
            return stop

        mp.setattr(Trainer, "_end_epoch", end_then_copy)
        argv = ["--config", OFFICIAL, *tiny(corpus, run, f"epochs={EPOCHS}", "checkpoint_every=1")]
        argv = [a for a in argv if not a.startswith("max_steps_per_epoch=")]
        argv += ["max_steps_per_epoch=1"]  # a case trains its epoch twice: one step is enough
        assert train_main(argv) == 0
    assert list(pd.read_csv(run / "training_epoch_log.csv").best) == [1, 1]  # epoch 2 is a new best
    kept = {p.name: _ck(p) for p in sorted(run.glob("*.pt"))}  # read once for every case's comparisons
    return dict(run=run, snapshot=snapshot, points=writes.points, logs=_logs(run), files=_files(run), kept=kept)


def test_the_epoch_end_writes_everything_before_last_pt_commits_it(whole):
    """The write points the crash cases below enumerate, in order: last.pt's rename is the last write but the
    clean-up of the previous best (a new write point must be added to WRITE_POINTS, so every one is tested)."""
    assert whole["points"] == WRITE_POINTS


@pytest.mark.slow
@pytest.mark.parametrize(
    "point, mode", [pytest.param(i, m, id=f"{i:02d}-{WRITE_POINTS[i].replace(' ', '-')}-{m}") for i, m in CASES]
)
def test_a_kill_or_a_full_disk_at_any_write_resumes_to_the_uninterrupted_run(whole, tmp_path, capsys, monkeypatch,
                                                                             point, mode):  # fmt: skip
    run = tmp_path / "run"
    shutil.copytree(whole["snapshot"], run)
    with monkeypatch.context() as mp:
        writes = Writes(mp, run, (point, mode))
        capsys.readouterr()
        if mode == "disk-full":
            assert train_main(["--resume", str(run)]) == 1
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and "Traceback" not in err, err
            assert "disk full" in err and "--resume" in err and _target(WRITE_POINTS[point].split()[1]) in err
        else:
            with pytest.raises(Crash):
                train_main(["--resume", str(run)])
        assert writes.points[-1] == WRITE_POINTS[point]
    # as left: last.pt commits one epoch or the other; resumed with the epochs it commits, --resume only puts the
    # folder right (nothing is trained): best.pt is then the best that last.pt records, never another epoch's
    committed = _ck(run / "last.pt")["epoch"]
    capsys.readouterr()
    assert train_main(["--resume", str(run), f"epochs={committed + 1}"]) == 0
    assert "finished" in capsys.readouterr().out
    best = _ck(run / "last.pt")["early_stopping"]["best_epoch"]
    assert _same_state(_ck(run / "best.pt"), whole["kept"][f"epoch_{best + 1:03d}.pt"])
    assert train_main(["--resume", str(run)]) == 0
    for name, df in _logs(run).items():
        pd.testing.assert_frame_equal(df, whole["logs"][name], check_exact=True, obj=name)
    assert _same_state(_ck(run / "best.pt"), whole["kept"]["best.pt"])
    assert _same_state(_ck(run / "last.pt"), whole["kept"]["last.pt"])
    assert _files(run) == whole["files"]


# -------------------------------------------------------------------- what --resume finds in a folder
def _copy(whole: dict, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(whole["run"], run, ignore=shutil.ignore_patterns(runguard.LOCK_NAME))
    return run


def _bytes(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file() and p.name != runguard.LOCK_NAME}


def test_a_stale_best_pt_left_by_an_older_version_is_rebuilt_from_the_checkpoint_of_its_epoch(whole, tmp_path,
                                                                                             capsys):  # fmt: skip
    """As the old order (last.pt first) left a kill after last.pt: best.pt of epoch 1 while last.pt records the
    best at epoch 2, and no row for epoch 2. --resume rebuilds best.pt from last.pt and names the lost row."""
    run = _copy(whole, tmp_path)
    shutil.copyfile(run / "epoch_001.pt", run / "best.pt")
    (run / "epoch_002.pt").unlink()
    log = pd.read_csv(run / "training_epoch_log.csv")
    log[log.epoch == 0].to_csv(run / "training_epoch_log.csv", index=False)
    capsys.readouterr()
    assert train_main(["--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "best.pt: rebuilt from last.pt" in out and "no row for epoch(s) 2" in out and "finished" in out
    assert _same_state(_ck(run / "best.pt"), _ck(whole["run"] / "best.pt"))


def test_a_best_pt_that_no_file_can_restore_is_refused_in_one_line(whole, tmp_path, capsys):
    run = _copy(whole, tmp_path)
    shutil.copyfile(run / "epoch_001.pt", run / "best.pt")
    (run / "epoch_002.pt").unlink()
    state = _ck(run / "last.pt")
    state["epoch"] = 2  # a later epoch committed after the best one was lost: nothing holds epoch 2 any more
    torch.save(state, run / "last.pt")
    before = _bytes(run)
    capsys.readouterr()
    assert train_main(["--resume", str(run), "epochs=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "best.pt" in err and "epoch 2" in err and "lost" in err, err
    assert _bytes(run) == before


def test_a_finished_run_without_best_pt_is_not_replaced_by_last_pt_in_checkpoint_lookup(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"")
    assert runs.resolve_checkpoint(run) == run / "last.pt"  # unfinished: its latest epoch
    (run / "done.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="finished run without best.pt"):
        runs.resolve_checkpoint(run)
    assert runs.resolve_checkpoint(run, strict=False) is None
    assert runs.resolve_checkpoint(run / "last.pt") == run / "last.pt"  # asked for by name


def test_commit_keeps_the_previous_best_until_last_pt_commits(tmp_path):
    """A kill after best.pt was replaced but before last.pt: reconcile puts the previous best back."""
    run = tmp_path
    state = {"epoch": 0, "early_stopping": {"best_epoch": 0}}
    commit.commit_epoch(state, run, 0, True, 0, [])
    assert commit.checkpoint_epoch(run / "best.pt") == 0 and not (run / commit.PREV_BEST).exists()
    commit._keep_copy(run / "best.pt", run / commit.PREV_BEST)
    runs.atomic_save({"epoch": 1}, run / "best.pt")  # the uncommitted epoch's best
    notes = commit.reconcile(run, state)
    assert commit.checkpoint_epoch(run / "best.pt") == 0 and not (run / commit.PREV_BEST).exists()
    assert len(notes) == 1 and "rebuilt from .best.pt.prev" in notes[0]


class _Planted:
    """A pickled object whose unpickling would write a file: what a checkpoint peek must never run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_the_epoch_of_a_checkpoint_is_read_from_its_pickle_alone_and_nothing_in_it_runs(tmp_path):
    """resume asks best.pt's epoch (and the epochs of the files it may rebuild best.pt from): read from the
    pickle without a tensor; a global outside a checkpoint's own is refused, never run (as with weights_only)."""
    state = {"epoch": 7, "generator": torch.nn.Linear(3, 2).state_dict(), "rng_cpu": torch.get_rng_state(),
             "early_stopping": {"best": 2.5, "best_epoch": 5, "counter": 0}, "config": {"lr_g": 5e-4}}  # fmt: skip
    runs.atomic_save(state, tmp_path / "best.pt")
    assert commit._peek_epoch(tmp_path / "best.pt") == 7 == commit.checkpoint_epoch(tmp_path / "best.pt")
    marker = tmp_path / "ran.txt"
    torch.save({**state, "epoch": 3, "planted": _Planted(marker)}, tmp_path / "planted.pt")
    with pytest.raises(pickle.UnpicklingError, match="not in a checkpoint"):  # refused, as weights_only refuses it
        commit._peek_epoch(tmp_path / "planted.pt")
    assert commit.checkpoint_epoch(tmp_path / "planted.pt") is None and not marker.exists()
    (tmp_path / "cut.pt").write_bytes((tmp_path / "best.pt").read_bytes()[:4096])  # a cut copy: unreadable
    assert commit.checkpoint_epoch(tmp_path / "cut.pt") is None
    torch.save({"epoch": torch.tensor(4)}, tmp_path / "tensor_epoch.pt")  # not this trainer's layout: torch reads it
    assert commit.checkpoint_epoch(tmp_path / "tensor_epoch.pt") == 4


def test_a_resume_reads_last_pt_once(whole, tmp_path, monkeypatch):
    """The check, the finish note and the restore share one read of last.pt (0.2-0.9 s a read on a CPU)."""
    run = _copy(whole, tmp_path)
    reads = []
    real_load = torch.load

    def load(f, *a, **kw):
        if isinstance(f, str | os.PathLike) and Path(f).name == "last.pt":
            reads.append(Path(f))
        return real_load(f, *a, **kw)

    monkeypatch.setattr(torch, "load", load)
    assert train_main(["--resume", str(run)]) == 0  # finished: the check and the note
    assert reads == [run / "last.pt"]
    reads.clear()
    monkeypatch.setattr(Trainer, "fit", lambda self: None)  # the restore, no training
    assert train_main(["--resume", str(run), f"epochs={EPOCHS + 1}"]) == 0
    assert reads == [run / "last.pt"]


# ------------------------------------------------------------------------- resume refuses a changed recipe
@pytest.mark.parametrize("key, old, new", [("pesq_strategy", "skip", "masked"), ("lr_g", 0.0005, 0.001)])
def test_resume_refuses_a_hand_edited_config_naming_the_key_and_both_values(whole, tmp_path, capsys, key, old, new):
    run = _copy(whole, tmp_path)
    path = run / "config.yaml"
    path.write_text(path.read_text().replace(f"{key}: {old}\n", f"{key}: {new}\n"))
    before = _bytes(run)
    capsys.readouterr()
    assert train_main(["--resume", str(run), "epochs=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err and repr(old) in err and repr(new) in err, err
    assert _bytes(run) == before


def test_a_hand_edited_resumable_key_is_recorded(whole, tmp_path, capsys):
    run = _copy(whole, tmp_path)
    path = run / "config.yaml"
    path.write_text(path.read_text().replace("log_steps: true\n", "log_steps: false\n"))
    # the run is finished: nothing to do with or without the edit, and nothing changes
    assert train_main(["--resume", str(run)]) == 0
    assert not (run / "resume_overrides.csv").exists()
    monkey = pytest.MonkeyPatch()
    try:
        monkey.setattr(Trainer, "fit", lambda self: self.run_dir)  # the records only, no training
        assert train_main(["--resume", str(run), "epochs=3"]) == 0
    finally:
        monkey.undo()
    record = pd.read_csv(run / "resume_overrides.csv")
    assert sorted(record.key) == ["epochs", "log_steps"]
    assert list(record.set_index("key").loc["log_steps", ["old", "new"]].astype(str)) == ["True", "False"]


def test_resume_of_a_finished_run_says_so_and_changes_nothing_and_refuses_fewer_epochs(whole, tmp_path, capsys):
    run = _copy(whole, tmp_path)
    before = _bytes(run)
    capsys.readouterr()
    assert train_main(["--resume", str(run), "pesq_workers=2"]) == 0
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert len(lines) == 1 and "finished" in lines[0] and f"{EPOCHS} of {EPOCHS}" in lines[0] and not out.err
    assert _bytes(run) == before
    assert train_main(["--resume", str(run), "epochs=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "shrink" in err and "epochs=1" in err, err
    assert _bytes(run) == before
