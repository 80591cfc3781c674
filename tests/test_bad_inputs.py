"""The bad-input matrix of issue 14: each case is an input a user could give, the outcome it must have (nothing
lost, nothing silently wrong) and the exit code. Tiny configs and corpora keep the module under a minute or so.

CLI cases live in CLI_CASES (id, how to build the input, argv, exit code, words the message must hold, a check
of what must or must not have changed); cases that need the library's state (bitwise model state, validation
file lists, PESQ workers after kill -9) are the tests below it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from cmgan_lib.cli import main as cli_main
from cmgan_lib.models import TSCNet
from cmgan_lib.training.config import RANGES, RESUMABLE_KEYS, TrainConfig, load_config
from cmgan_lib.training.train import Trainer
from cmgan_lib.training.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = str(ROOT / "configs" / "official.yaml")
SR = 16000


def tiny(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    """Overrides for a seconds-long run: a 4-channel CMGAN on 0.5 s crops, 2 steps of 2 clips, 1 validation file."""
    return [
        f"data_dir={corpus}", f"run_dir={run_dir}", "epochs=1", "batch_size=2", "cut_len=8000", "num_channel=4",
        "num_tscb=1", "ndf=4", "max_steps_per_epoch=2", "val_max_files=1", "pesq_workers=1", *extra,
    ]  # fmt: skip


def short_validation(corpus: Path, seconds: float = 1.0) -> Path:
    """Cut a test corpus's validation and test files to their first `seconds`: validating on full 1.5-4 s files
    (the test split under configs/official.yaml, as published) was most of a tiny epoch's cost (attention grows
    with the square of a file's frames). 1 s keeps the 30 frames STOI needs."""
    for wav in sorted([*corpus.glob("valid/*/*.wav"), *corpus.glob("test/*/*.wav")]):
        audio, sr = sf.read(wav, dtype="int16")
        sf.write(wav, audio[: int(seconds * sr)], sr, subtype="PCM_16")
    return corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from cmgan_lib.data.synthetic import make_dataset

    out = tmp_path_factory.mktemp("corpus")
    make_dataset(out, n_train=4, n_test=2, n_valid=2, seed=0, hard_fraction=0.0, progress=False, n_jobs=1)
    return short_validation(out)


@pytest.fixture(scope="module")
def finished_run(corpus, tmp_path_factory) -> Path:
    """A run that finished one epoch; cases copy it before touching it."""
    run = tmp_path_factory.mktemp("runs") / "done"
    assert train_main(["--config", OFFICIAL, *tiny(corpus, run)]) == 0
    return run


def _copy_run(finished_run: Path, tmp: Path) -> Path:
    run = tmp / "run"
    shutil.copytree(finished_run, run)
    return run


def _copy_corpus(corpus: Path, tmp: Path) -> Path:
    out = tmp / "corpus"
    shutil.copytree(corpus, out)
    return out


def _bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _ckpt(tmp: Path, poison: str | None = None, extra: object = None) -> Path:
    """A raw generator state dict; `poison` puts NaN into that tensor, `extra` adds a non-tensor object."""
    torch.manual_seed(0)
    state = TSCNet(num_channel=4).state_dict()
    if poison:
        state[poison] = torch.full_like(state[poison], float("nan"))
    obj = {"generator": state, "extra": extra} if extra is not None else state
    path = tmp / "g.pt"
    torch.save(obj, path)
    return path


def _noisy_folder(tmp: Path) -> Path:
    folder = tmp / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    sf.write(folder / "a.wav", 0.1 * rng.standard_normal(SR), SR, subtype="PCM_16")
    return folder


# ----------------------------------------------------------------------------------- the CLI matrix
@dataclasses.dataclass
class Case:
    id: str
    setup: Callable[[Path, Path, Path], dict]  # (tmp, corpus, finished_run) -> values for argv and check
    argv: Callable[[dict], list[str]]
    rc: int
    words: tuple[str, ...]  # each must appear in stderr+stdout
    check: Callable[[dict], None] = lambda ctx: None


def _train_into_existing(tmp, corpus, run0):
    run = _copy_run(run0, tmp)
    return dict(run=run, corpus=corpus, before=_bytes(run))


def _resume_with_changes(tmp, corpus, run0):
    run = _copy_run(run0, tmp)
    return dict(run=run, config=(run / "config.yaml").read_text())


def _run_with_bad_logs(tmp, corpus, run0):
    """A full disk: the epoch log at 0 bytes, the step log without its header and with a cut-off last line;
    a killed checkpoint write left a temporary file."""
    run = _copy_run(run0, tmp)
    (run / "training_epoch_log.csv").write_text("")
    lines = (run / "training_step_log.csv").read_text().splitlines(keepends=True)
    (run / "training_step_log.csv").write_text("".join(lines[1:])[:-9])  # no header; last row cut
    (run / ".last.pt.x1y2.tmp").write_bytes(b"half a checkpoint")
    return dict(run=run, steps_before=len(lines) - 1)


def _check_repaired_logs(ctx):
    run = ctx["run"]
    steps = pd.read_csv(run / "training_step_log.csv")
    epochs = pd.read_csv(run / "training_epoch_log.csv")
    assert list(steps.epoch) == [0] * (ctx["steps_before"] - 1) + [1, 1]  # the cut row dropped, header back
    assert list(epochs.epoch) == [1]  # the 0-byte log gets its header with the first new row
    assert not list(run.glob("*.tmp"))
    record = pd.read_csv(run / "resume_overrides.csv")  # the allowed change, recorded
    assert list(record.key) == ["epochs"] and list(record.old) == [1] and list(record.new) == [2]
    assert list(record.resumed_after_epoch) == [0]
    assert load_config(run / "config.yaml").epochs == 2


def _raw_state_as_last(tmp, corpus, run0):
    run = _copy_run(run0, tmp)
    torch.save(torch.load(run / "last.pt", weights_only=True)["generator"], run / "last.pt")
    return dict(run=run)


def _corpus_with(kind: str):
    def setup(tmp, corpus, run0):
        out = _copy_corpus(corpus, tmp)
        target = out / "train" / "noisy" / "s01_001.wav"
        n = sf.info(str(target)).frames
        if kind == "silent":
            sf.write(target, np.zeros(n), SR, subtype="PCM_16")
        elif kind == "nan":
            audio = sf.read(str(target), dtype="float32")[0]
            audio[10] = np.nan
            sf.write(target, audio, SR, subtype="FLOAT")
        elif kind == "short":
            for sub in ("clean", "noisy"):
                sf.write(out / "test" / sub / "short.wav", 0.1 * np.ones(1000), SR, subtype="PCM_16")
        return dict(data=out)

    return setup


def _eval_set(tmp, corpus, run0):
    """A test folder with a silent noisy file and a 100-sample one among good files."""
    data = _copy_corpus(corpus, tmp) / "test"
    sf.write(data / "clean" / "silent.wav", 0.1 * np.ones(SR), SR, subtype="PCM_16")
    sf.write(data / "noisy" / "silent.wav", np.zeros(SR), SR, subtype="PCM_16")
    sf.write(data / "clean" / "tiny.wav", 0.1 * np.ones(100), SR, subtype="PCM_16")
    sf.write(data / "noisy" / "tiny.wav", 0.1 * np.ones(100), SR, subtype="PCM_16")
    return dict(data=data, ckpt=_ckpt(tmp), out=tmp / "eval")


def _check_eval_rows(ctx):
    rows = pd.read_csv(ctx["out"] / "metrics_per_file.csv").set_index("name")
    assert rows.loc["silent", "reason"] == "enhance_failed" and "silent.wav" in rows.loc["silent", "detail"]
    assert rows.loc["tiny", "reason"] == "enhance_failed" and "tiny.wav" in rows.loc["tiny", "detail"]
    good = rows.drop(index=["silent", "tiny"])
    assert len(good) == 2 and good.reason.isna().all() and good.pesq.notna().all()


def _unchanged(key: str):
    def check(ctx):
        assert _bytes(ctx[key]) == ctx["before"]

    return check


def _with_before(setup, key: str):
    def wrapped(tmp, corpus, run0):
        ctx = setup(tmp, corpus, run0)
        ctx["before"] = _bytes(ctx[key])
        return ctx

    return wrapped


def _synthetic_made(tmp, corpus, run0):
    out = _copy_corpus(corpus, tmp)
    return dict(out=out, before=_bytes(out))


def _yaml_error(tmp, corpus, run0):
    path = tmp / "broken.yaml"
    path.write_text("base: official.yaml\nepochs: 3\nhop: [100\nn_fft: 400\n")
    return dict(path=path)


def _trust(tmp, corpus, run0):
    return dict(ckpt=_ckpt(tmp, extra=argparse.Namespace(note="pickled object")), inp=_noisy_folder(tmp))


def _truncated_last(tmp, corpus, run0):
    run = _copy_run(run0, tmp)
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])  # a copy cut off half-way
    return dict(run=run, before=_bytes(run))


def _old_version_log(tmp, corpus, run0):
    """A step log as an older version wrote it (one column fewer): resume must keep it, not drop its rows."""
    run = _copy_run(run0, tmp)
    steps = pd.read_csv(run / "training_step_log.csv").drop(columns=["pesq_fail_injected"])
    steps.to_csv(run / "training_step_log.csv", index=False)
    return dict(run=run, before=_bytes(run))


def _trust_legacy(tmp, corpus, run0):
    """PyTorch's legacy (non-zip) format holding a pickled object: --trust-checkpoint must load it too."""
    ctx = _trust(tmp, corpus, run0)
    obj = torch.load(ctx["ckpt"], weights_only=False)
    torch.save(obj, ctx["ckpt"], _use_new_zipfile_serialization=False)
    return ctx


CLI_CASES = [
    # --- 3. nothing overwritten without asking
    Case("train-config-into-existing-run", _train_into_existing,
         lambda c: ["train", "--config", OFFICIAL, *tiny(c["corpus"], c["run"])], 2,
         ("holds a run", "--resume", "--overwrite"), _unchanged("run")),
    Case("train-config-overwrite", _train_into_existing,  # the old run is gone: a seed-1 run in its place
         lambda c: ["train", "--config", OFFICIAL, "--overwrite", *tiny(c["corpus"], c["run"], "seed=1")], 0, (),
         lambda c: "seed: 1" in (c["run"] / "config.yaml").read_text() and c["before"]["last.pt"] !=
         (c["run"] / "last.pt").read_bytes() or pytest.fail("old run left")),
    Case("resume-changes-recipe", _resume_with_changes,
         lambda c: ["train", "--resume", str(c["run"]), "epochs=2", "pesq_strategy=masked"], 2,
         ("pesq_strategy", "'skip' -> 'masked'", "max_steps_per_epoch"),
         lambda c: (c["run"] / "config.yaml").read_text() == c["config"] or pytest.fail("config.yaml changed")),
    Case("resume-repairs-logs-removes-tmp-records-change", _run_with_bad_logs,
         lambda c: ["train", "--resume", str(c["run"]), "epochs=2"], 0, ("removed",), _check_repaired_logs),
    Case("make-synthetic-into-existing-corpus", _synthetic_made,
         lambda c: ["make-synthetic", str(c["out"]), "--n-train", "4", "--n-test", "2", "--seed", "5"], 2,
         ("already holds a corpus", "--overwrite"), _unchanged("out")),
    Case("make-synthetic-overwrite", _synthetic_made,
         lambda c: ["make-synthetic", str(c["out"]), "--n-train", "2", "--n-test", "1", "--n-valid", "0",
                    "--hard-fraction", "0", "--overwrite"], 0, ("wrote 3 clips",),
         lambda c: len(list(c["out"].rglob("*.wav"))) == 6 or pytest.fail("old clips left behind")),
    Case("enhance-output-is-input", _with_before(lambda t, c, r: dict(inp=_noisy_folder(t), ckpt=_ckpt(t)), "inp"),
         lambda c: ["enhance", "--checkpoint", str(c["ckpt"]), "--input", str(c["inp"]), "--output", str(c["inp"])],
         2, ("would overwrite input",), _unchanged("inp")),
    Case("enhance-single-file-into-its-folder",
         _with_before(lambda t, c, r: dict(inp=_noisy_folder(t), ckpt=_ckpt(t)), "inp"),
         lambda c: ["enhance", "--checkpoint", str(c["ckpt"]), "--input", str(c["inp"] / "a.wav"), "--output",
                    str(c["inp"])], 2, ("would overwrite input",), _unchanged("inp")),
    # --- 1. one bad file
    Case("validate-all-zero-noisy", _corpus_with("silent"), lambda c: ["validate-data", str(c["data"])], 2,
         ("s01_001.wav", "all", "zero")),
    Case("validate-nan-samples", _corpus_with("nan"), lambda c: ["validate-data", str(c["data"])], 2,
         ("s01_001.wav", "NaN")),
    Case("validate-too-short-is-a-warning", _corpus_with("short"), lambda c: ["validate-data", str(c["data"])], 0,
         ("OK", "1 warning", "short.wav", "PESQ")),
    Case("train-refuses-all-zero-file", _corpus_with("silent"),
         lambda c: ["train", "--config", OFFICIAL, *tiny(c["data"], c["data"].parent / "never")], 2,
         ("s01_001.wav", "zero")),
    Case("enhance-nan-checkpoint", lambda t, c, r: dict(ckpt=_ckpt(t, poison="dense_encoder.conv_1.0.weight"),
                                                         inp=_noisy_folder(t), out=t / "out"),
         lambda c: ["enhance", "--checkpoint", str(c["ckpt"]), "--input", str(c["inp"]), "--output", str(c["out"])],
         2, ("NaN", "dense_encoder.conv_1.0.weight"), lambda c: not c["out"].exists() or pytest.fail("wrote")),
    # --- 5. evaluate goes on past bad files, and says so in its exit code
    Case("evaluate-silent-and-100-sample-noisy", _eval_set,
         lambda c: ["evaluate", "--checkpoint", str(c["ckpt"]), "--test-dir", str(c["data"]), "--out", str(c["out"]),
                    "--jobs", "1"], 1, ("2 file(s) could not be scored", "enhance_failed: 2"), _check_eval_rows),
    # --- 6. config errors: one line naming the file and the key
    Case("yaml-syntax-error", _yaml_error, lambda c: ["train", "--config", str(c["path"])], 2,
         ("broken.yaml", "line 4", "YAML syntax error")),
    *[
        Case(f"range-{kv}", lambda t, c, r: dict(corpus=c, run=t / "never"),
             lambda c, kv=kv: ["train", "--config", OFFICIAL, *tiny(c["corpus"], c["run"]), kv], 2,
             ("official.yaml", kv.split("=")[0]), lambda c: not c["run"].exists() or pytest.fail("run started"))
        for kv in ("hop=0", "n_fft=1", "decay_epoch=0", "cut_len=0", "cut_len=200", "lr_g=-1", "lr_d=.nan",
                   "batch_size=0", "es_patience=0", "val_max_files=0", "compress=0")
    ],
    Case("resume-a-checkpoint-file", lambda t, c, r: dict(path=_ckpt(t)),
         lambda c: ["train", "--resume", str(c["path"])], 2, ("g.pt", "not a file", "run folder")),
    Case("resume-a-folder-without-run", lambda t, c, r: dict(path=_noisy_folder(t)),
         lambda c: ["train", "--resume", str(c["path"])], 2, ("not a run folder", "config.yaml")),
    Case("resume-raw-state-dict-as-last", _raw_state_as_last, lambda c: ["train", "--resume", str(c["run"])], 2,
         ("last.pt", "not a training checkpoint")),
    Case("resume-corrupt-last", _truncated_last, lambda c: ["train", "--resume", str(c["run"])], 2,
         ("last.pt", "unreadable checkpoint"), _unchanged("run")),
    Case("resume-log-of-another-version", _old_version_log, lambda c: ["train", "--resume", str(c["run"]), "epochs=2"],
         2, ("training_step_log.csv", "another version", "pesq_fail_injected"), _unchanged("run")),
    Case("resume-changes-validation-files", _resume_with_changes,
         lambda c: ["train", "--resume", str(c["run"]), "epochs=2", "val_max_files=2"], 2, ("val_max_files",),
         lambda c: (c["run"] / "config.yaml").read_text() == c["config"] or pytest.fail("config.yaml changed")),
    Case("val-speakers-beside-a-valid-split", lambda t, c, r: dict(corpus=c, run=t / "never"),
         lambda c: ["train", "--config", OFFICIAL, *tiny(c["corpus"], c["run"], 'val_speakers=["s01"]',
                                                          "val_split=valid")], 2,
         ("valid/", "val_speakers"), lambda c: not c["run"].exists() or pytest.fail("run started")),
    Case("share-report-missing-note", lambda t, c, r: dict(src=t),
         lambda c: ["share-report", str(c["src"]), str(c["src"] / "r"), "--command", "x", "--device", "y", "--note",
                    str(c["src"] / "nope.md")], 2, ("nope.md", "does not exist")),
    # --- 8. no unpickling unless asked
    Case("enhance-untrusted-checkpoint", _trust,
         lambda c: ["enhance", "--checkpoint", str(c["ckpt"]), "--input", str(c["inp"]), "--output",
                    str(c["inp"].parent / "out")], 2, ("needs unpickling", "--trust-checkpoint")),
    Case("enhance-trusted-checkpoint", _trust,
         lambda c: ["enhance", "--checkpoint", str(c["ckpt"]), "--input", str(c["inp"]), "--output",
                    str(c["inp"].parent / "out"), "--trust-checkpoint"], 0, ("enhanced 1 of 1",)),
    Case("enhance-trusted-legacy-format-checkpoint", _trust_legacy,
         lambda c: ["enhance", "--checkpoint", str(c["ckpt"]), "--input", str(c["inp"]), "--output",
                    str(c["inp"].parent / "out"), "--trust-checkpoint"], 0, ("enhanced 1 of 1",)),
    Case("evaluate-untrusted-checkpoint", lambda t, c, r: {**_trust(t, c, r), "data": c / "test"},
         lambda c: ["evaluate", "--checkpoint", str(c["ckpt"]), "--test-dir", str(c["data"]), "--out",
                    str(c["inp"].parent / "ev")], 2, ("needs unpickling", "--trust-checkpoint")),
]  # fmt: skip


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_bad_input(case: Case, corpus, finished_run, tmp_path, capsys):
    ctx = case.setup(tmp_path, corpus, finished_run)
    rc = cli_main(case.argv(ctx))
    out = capsys.readouterr()
    text = out.err + out.out
    assert rc == case.rc, text[-3000:]
    for word in case.words:
        assert word in text, (word, text[-3000:])
    if case.rc == 2:  # a refusal is one line, never a traceback
        assert "Traceback" not in text
        assert [ln for ln in out.err.splitlines() if ln.startswith("error:")] or "problem(s) found" in out.err
    case.check(ctx)


def test_config_errors_are_one_line_naming_file_and_key(capsys):
    assert train_main(["--config", OFFICIAL, "hop=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "official.yaml" in err and "hop=0" in err


def test_every_numeric_config_field_has_a_range():
    numeric = {f.name for f in dataclasses.fields(TrainConfig)
               if f.type in ("int", "float", "int | None", "float | None", "list[float]")}  # fmt: skip
    assert numeric - set(RANGES) == set(), "add a range to cmgan_lib.training.config.RANGES"
    assert RESUMABLE_KEYS <= {f.name for f in dataclasses.fields(TrainConfig)} | {"checkpoint_every"}


# ----------------------------------------------------------------------------------- library-level cases
def _state(trainer: Trainer) -> dict:
    return copy.deepcopy(
        dict(
            gen=trainer.gen.state_dict(),
            disc=trainer.disc.state_dict(),
            opt_g=trainer.opt_g.state_dict(),
            opt_d=trainer.opt_d.state_dict(),
        )  # fmt: skip
    )


def _assert_bitwise_equal(a, b, where="state"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_bitwise_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_bitwise_equal(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def trainer(corpus, tmp_path_factory):
    """One trainer for the step-level cases (each compares the state after its step with the state before)."""
    t = Trainer(load_config(OFFICIAL, tiny(corpus, tmp_path_factory.mktemp("steps") / "run")))
    yield t
    t.pool.close()


def test_all_zero_noisy_in_a_batch_leaves_the_model_bitwise_unchanged(trainer):
    batch = next(iter(trainer.loader))
    trainer.train_step(batch[0], batch[1], ["x", "y"])  # a real step first: optimizer state is not empty
    before = _state(trainer)
    clean, noisy = batch[0].clone(), batch[1].clone()
    noisy[1] = 0.0
    row = trainer.train_step(clean, noisy, ["good.wav", "silent.wav"])
    assert row["nonfinite"] == 1 and row["bad_files"] == ["silent.wav"]
    _assert_bitwise_equal(_state(trainer), before)


def test_a_non_finite_forward_pass_puts_the_buffers_back(trainer, monkeypatch):
    batch = next(iter(trainer.loader))
    trainer.train_step(batch[0], batch[1])
    before = _state(trainer)
    forward = trainer.gen.forward
    monkeypatch.setattr(trainer.gen, "forward", lambda x: tuple(t * float("nan") for t in forward(x)))
    row = trainer.train_step(batch[0], batch[1])
    assert row["nonfinite"] == 1
    _assert_bitwise_equal(_state(trainer), before)  # BatchNorm running stats and spectral-norm vectors too


def test_constant_or_non_finite_output_is_a_failure_never_a_written_file(tmp_path, monkeypatch, capsys):
    import cmgan_lib.scoring.enhance as enhance

    inp, out = _noisy_folder(tmp_path), tmp_path / "out"
    sf.write(inp / "b.wav", 0.1 * np.random.default_rng(1).standard_normal(SR), SR, subtype="PCM_16")
    outputs = iter([np.full(SR, -1.0, np.float32), np.full(SR, np.nan, np.float32)])  # what NaN buffers gave
    monkeypatch.setattr(enhance, "enhance_track", lambda model, noisy, cut_len, **kw: next(outputs))
    rc = cli_main(["enhance", "--checkpoint", str(_ckpt(tmp_path)), "--input", str(inp), "--output", str(out)])
    err = capsys.readouterr()
    assert rc == 1 and "enhanced 0 of 2" in err.out
    assert "a.wav" in err.err and "constant" in err.err and "b.wav" in err.err and "NaN" in err.err
    assert not out.exists() or not list(out.iterdir())


def test_a_silent_training_file_is_named_and_the_run_stays_finite(corpus, tmp_path):
    data = _copy_corpus(corpus, tmp_path)
    run = tmp_path / "run"
    trainer = Trainer(load_config(OFFICIAL, tiny(data, run, "max_steps_per_epoch=2")))
    # the file goes silent after validation passed (e.g. a disk error); decoded audio is not cached yet
    target = data / "train" / "noisy" / "s02_001.wav"
    sf.write(target, np.zeros(sf.info(str(target)).frames), SR, subtype="PCM_16")
    trainer.fit()
    bad = pd.read_csv(run / "nonfinite_batches.csv")
    assert list(bad.name) == ["s02_001.wav"]
    assert pd.read_csv(run / "training_step_log.csv").nonfinite.sum() == 1
    ck = torch.load(run / "last.pt", weights_only=True)
    for part in ("generator", "discriminator"):
        assert all(torch.isfinite(v).all() for v in ck[part].values() if v.is_floating_point()), part
    assert np.isfinite(pd.read_csv(run / "training_epoch_log.csv").val_pesq).all()
    assert (run / "best.pt").is_file()


def test_validation_scores_every_metric_on_the_same_files_and_names_the_dropped(corpus, tmp_path):
    data = _copy_corpus(corpus, tmp_path)
    cfg = load_config(OFFICIAL, tiny(data, tmp_path / "run", "val_max_files=null"))
    for sub in ("clean", "noisy"):  # a short file passes validate-data with a warning
        sf.write(data / cfg.val_split / sub / "s00_short.wav", 0.1 * np.ones(1000), SR, subtype="PCM_16")
    trainer = Trainer(cfg)
    try:
        names = [n for n, _, _ in trainer.val_pairs]
        submit = trainer.pool.submit

        seen = []

        def pesq_fails_on_the_first(cleans, ests):  # as PESQ does for a file with no speech
            raw, reasons = submit(cleans, ests).result()
            if not seen:
                raw[0], reasons[0] = np.nan, "silent_reference"
            seen.append((cleans, ests))
            return type("H", (), {"result": lambda self: (raw, reasons)})()

        trainer.pool.submit = pesq_fails_on_the_first
        val = trainer.validate()
        cleans = [c for batch, _ in seen for c in batch]  # one call per file (scored beside the next forward)
        ests = [e for _, batch in seen for e in batch]
        raw, _ = submit(cleans, ests).result()
    finally:
        trainer.pool.close()
    loaded = [n for n, _, _ in trainer.val_files.audio()]
    dropped = dict(val["val_dropped"])
    assert set(dropped) == {"s00_short.wav", loaded[0]} and "too short" in dropped["s00_short.wav"]
    assert "silent_reference" in dropped[loaded[0]]
    assert val["val_files"] == len(names) - 2 == len(loaded) - 1
    from pystoi import stoi  # STOI and PESQ over the same files: the one PESQ could not score is left out of both

    stois = [stoi(c, e, SR, extended=False) for c, e in zip(cleans[1:], ests[1:], strict=True)]
    assert val["val_stoi"] == pytest.approx(np.mean(stois), rel=1e-9)
    assert val["val_pesq"] == pytest.approx(np.mean(raw[1:]), rel=1e-9)


def test_pesq_workers_exit_when_their_parent_is_killed(tmp_path):
    psutil = pytest.importorskip("psutil")
    script = tmp_path / "owner.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from cmgan_lib.scoring.pesq_worker import PesqPool
        if __name__ == "__main__":
            pool = PesqPool(n_workers=2)
            print("ready", flush=True)
            time.sleep(120)
    """)
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2  # the workers (and the forkserver and resource tracker)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 5
    alive = children
    while alive and time.time() < deadline:
        time.sleep(0.1)
        alive = [c for c in alive if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    for c in alive:  # do not leave them behind when the test fails
        c.kill()
    assert not alive, [c.cmdline()[-1][:80] for c in alive]


def test_ablate_refuses_bad_seeds_in_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["ablate", "--grid", str(ROOT / "configs" / "ablation_tiny.yaml"), "--out", "x", "--seeds", "0,a"])
    assert exc.value.code == 2 and "comma-separated" in capsys.readouterr().err


def test_an_override_error_is_not_blamed_on_the_file_alone(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("epochs: 2\n")
    with pytest.raises(ValueError, match=r"good.yaml with key=value overrides: .*batch_size=0"):
        load_config(good, ["batch_size=0"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_size: 0\n")
    with pytest.raises(ValueError, match=r"bad.yaml: invalid training config: batch_size=0"):
        load_config(bad, ["epochs=3"])


def test_a_refused_resume_leaves_no_pesq_workers(corpus, finished_run, tmp_path):
    import multiprocessing

    run = _truncated_last(tmp_path, corpus, finished_run)["run"]
    before = len(multiprocessing.active_children())
    with pytest.raises(ValueError, match="unreadable checkpoint"):
        Trainer(load_config(run / "config.yaml", [f"run_dir={run}"]), resume=True)
    assert len(multiprocessing.active_children()) == before
