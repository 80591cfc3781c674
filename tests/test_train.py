"""The trainer: published defaults, switches, logs, atomic checkpoints, exact resume, robustness, DDP."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_bad_inputs import short_validation

from cmgan_lib.scoring.enhance import load_generator
from cmgan_lib.training.config import load_config
from cmgan_lib.training.runs import EPOCH_COLUMNS, STEP_COLUMNS
from cmgan_lib.training.tensorboard_log import available as tensorboard_available
from cmgan_lib.training.train import EarlyStopping, Trainer, TrainingDiverged, main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
CUDA = torch.cuda.is_available()  # the tiny runs below use device auto: CUDA wherever there is one
# Two runs compared for equality: the default kernels (exact on CPU; on CUDA they differ at ~1e-5, so
# compared with a tolerance there) and deterministic=true (exact everywhere; slow on CPU, where it adds nothing).
RUN_MODES = [
    pytest.param(False, id="default"),
    pytest.param(True, id="deterministic", marks=() if CUDA else pytest.mark.slow),
]
# Resume is compared in deterministic mode on CUDA only: CPU runs are exact without it, and the overlap test
# already runs deterministic mode on CPU (keeps `make test` within its time on 2 cores).
RESUME_MODES = [
    pytest.param(False, id="default"),
    pytest.param(True, id="deterministic", marks=() if CUDA else pytest.mark.skip(reason="CPU: exact without it")),
]


@pytest.fixture(autouse=True)
def _reset_numerics():
    """A Trainer sets process-wide precision/determinism flags: put the defaults back after each test."""
    yield
    from cmgan_lib.training.numerics import configure

    configure("fp32", deterministic=False)


def assert_same_run(a: pd.DataFrame, b: pd.DataFrame, deterministic: bool) -> None:
    if deterministic or not CUDA:
        pd.testing.assert_frame_equal(a, b)
    else:
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-3, atol=1e-5)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from cmgan_lib.data.synthetic import make_dataset

    out = tmp_path_factory.mktemp("corpus")
    make_dataset(out, n_train=8, n_test=3, seed=0, hard_fraction=0.0, progress=False, n_valid=2)
    return short_validation(out)


def tiny(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    """Overrides for a seconds-long run: a 4-channel CMGAN on 0.5 s crops, 3 steps per epoch."""
    return [
        f"data_dir={corpus}", f"run_dir={run_dir}", "epochs=1", "batch_size=2", "cut_len=8000",
        "num_channel=4", "num_tscb=1", "ndf=4", "max_steps_per_epoch=3", "val_max_files=2", "pesq_workers=2", *extra,
    ]  # fmt: skip


def test_official_config_is_the_published_recipe():
    cfg = load_config(CONFIGS / "official.yaml")
    assert cfg.loss_weights == [0.1, 0.9, 0.2, 0.05]
    assert (cfg.lr_g, cfg.lr_d, cfg.decay_epoch, cfg.lr_gamma) == (5e-4, 1e-3, 30, 0.5)
    assert (cfg.batch_size, cfg.cut_len, cfg.epochs, cfg.n_fft, cfg.hop, cfg.compress) == (4, 32000, 120, 400, 100, 0.3)
    assert (cfg.num_channel, cfg.ndf, cfg.pesq_strategy, cfg.grad_clip_norm) == (64, 16, "skip", 0.0)
    assert not cfg.early_stopping


def test_shipped_configs_change_only_their_switches():
    official = load_config(CONFIGS / "official.yaml").to_dict()
    fixes = load_config(CONFIGS / "seed_fixes.yaml").to_dict()
    masked = load_config(CONFIGS / "masked.yaml").to_dict()
    diff = {k for k in official if official[k] != fixes[k]}
    assert diff == {"run_dir", "pesq_strategy", "early_stopping", "grad_clip_norm"}  # es_* defaults match
    assert (fixes["pesq_strategy"], fixes["es_patience"], fixes["es_min_delta"], fixes["grad_clip_norm"]) == (
        "batch_mean",
        15,
        1e-4,
        5.0,
    )
    assert {k for k in official if official[k] != masked[k]} == {"run_dir", "pesq_strategy"}
    assert load_config(CONFIGS / "tiny_cpu.yaml").num_channel < 64


def test_overrides_are_typed_and_unknown_keys_refused():
    cfg = load_config(CONFIGS / "official.yaml", ["epochs=2", "pesq_strategy=masked", "grad_clip_norm=5"])
    assert cfg.epochs == 2 and cfg.pesq_strategy == "masked" and cfg.grad_clip_norm == 5
    with pytest.raises(ValueError, match="unknown config key 'epoch'"):
        load_config(CONFIGS / "official.yaml", ["epoch=2"])
    with pytest.raises(ValueError, match="pesq_strategy"):
        load_config(CONFIGS / "official.yaml", ["pesq_strategy=mean"])


@pytest.mark.parametrize("mode, values, best_epoch, stops_at", [
    ("max", [2.0, 2.5, 2.50005, 2.4, 2.3], 1, 4),  # +5e-5 is below min_delta 1e-4: no improvement
    ("min", [1.0, 0.9, 0.95, 0.91, 0.8], 4, None),
])  # fmt: skip
def test_early_stopping_direction_and_min_delta(mode, values, best_epoch, stops_at):
    es = EarlyStopping(patience=3, min_delta=1e-4, mode=mode)
    fired = None
    for epoch, v in enumerate(values):
        es.update(v, epoch)
        if es.should_stop and fired is None:
            fired = epoch
    assert es.best_epoch == best_epoch and fired == stops_at


def test_one_epoch_writes_logs_and_atomic_checkpoints(corpus, tmp_path):
    run = tmp_path / "run"
    assert main(["--config", str(CONFIGS / "official.yaml"), *tiny(corpus, run)]) == 0
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "training_step_log.csv", "training_epoch_log.csv",
                                              "last.pt", "best.pt"}  # fmt: skip
    assert not list(run.glob("*.tmp"))
    assert (run / "tensorboard").is_dir() == tensorboard_available()  # the same rows as events, with the tb extra
    steps = pd.read_csv(run / "training_step_log.csv")
    epochs = pd.read_csv(run / "training_epoch_log.csv")
    assert list(steps.columns) == STEP_COLUMNS and len(steps) == 3
    assert list(epochs.columns) == EPOCH_COLUMNS and len(epochs) == 1
    # a skipped discriminator update is NaN, never 0.0; an update that ran has a loss and a gradient norm
    skipped = steps.disc_skipped == 1
    assert steps.loss[~skipped].notna().all()
    assert steps.disc_loss[skipped].isna().all() and steps.grad_norm_d[skipped].isna().all()
    assert (steps.disc_loss[~skipped] > 0).all() and steps.grad_norm_d[~skipped].notna().all()
    assert steps.grad_norm_g.notna().all() and (steps.lr_g == 5e-4).all() and (steps.lr_d == 1e-3).all()
    e = epochs.iloc[0]
    assert 1.0 <= e.val_pesq <= 4.7 and 0.0 <= e.val_stoi <= 1.0 and e.val_files == 2
    assert e.disc_skip_rate == pytest.approx(steps.disc_skipped.mean())
    ck = torch.load(run / "last.pt", weights_only=True)
    assert {"generator", "discriminator", "opt_g", "opt_d", "sched_g", "sched_d", "early_stopping", "epoch",
            "step", "config", "rng_cpu"} <= set(ck)  # fmt: skip
    assert ck["epoch"] == 0 and ck["step"] == 3
    model = load_generator(run / "best.pt", device="cpu")  # what cmgan enhance / evaluate do
    assert model.num_channel == 4


def test_gradient_clipping_logs_pre_clip_norms_and_clips(corpus, tmp_path, monkeypatch):
    seen = []
    orig = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        params = list(params)
        norm = orig(params, max_norm, *a, **k)
        seen.append(
            (
                float(norm),
                max_norm,
                float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))),
            )
        )
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    run = tmp_path / "clip"
    assert main(["--config", str(CONFIGS / "official.yaml"), *tiny(corpus, run, "grad_clip_norm=1e-3")]) == 0
    steps = pd.read_csv(run / "training_step_log.csv")
    g_norms = [s for s in seen if s[1] == 1e-3]
    assert g_norms and all(after <= 1e-3 * 1.01 for _, _, after in g_norms)
    assert (steps.grad_norm_g > 1e-3).all()  # the log keeps the pre-clip norm


def test_precision_is_one_of_fp32_tf32_bf16_and_fp32_by_default():
    assert load_config(CONFIGS / "official.yaml").precision == "fp32"
    assert load_config(CONFIGS / "official.yaml", ["precision=bf16"]).precision == "bf16"
    with pytest.raises(ValueError, match="precision='fp16'"):
        load_config(CONFIGS / "official.yaml", ["precision=fp16"])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bf16_autocasts_only_the_networks_and_fp32_is_the_plain_math(corpus, tmp_path, precision):
    from cmgan_lib.core.dsp import power_compress, stft

    trainer = Trainer(load_config(CONFIGS / "official.yaml", tiny(corpus, tmp_path / "p", f"precision={precision}")))
    seen = set()
    trainer.gen.TSCB_1.time_conformer.attn.fn.to_q.register_forward_hook(lambda m, i, o: seen.add(("G", o.dtype)))
    trainer.disc.layers[0].register_forward_hook(lambda m, i, o: seen.add(("D", o.dtype)))
    batches = [b for _, b in zip(range(2), trainer.loader, strict=False)]
    clean, noisy, _ = batches[0]
    try:
        trainer.gen.eval(), trainer.disc.eval()  # no dropout: the two computations below must match
        out = trainer.forward_losses(clean, noisy)
        dtypes = set(seen)
        # the same forward written plainly, outside any autocast
        real, imag = trainer.gen(power_compress(stft(noisy, 400, 100), 0.3).permute(0, 1, 3, 2))
        est_mag = torch.sqrt(real**2 + imag**2).permute(0, 1, 3, 2)
        trainer.gen.train(), trainer.disc.train()
        rows = [trainer.train_step(c, n) for c, n, _ in batches]
    finally:
        trainer.pool.close()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    assert dtypes == {("G", dtype), ("D", dtype)}
    assert all(v.dtype == torch.float32 for v in out.values())  # losses, magnitudes and the iSTFT audio
    if precision == "fp32":
        assert torch.equal(out["est_mag"], est_mag)  # bitwise: the default path is the published math
    else:
        assert not torch.equal(out["est_mag"], est_mag)
        torch.testing.assert_close(out["est_mag"], est_mag, rtol=0.1, atol=0.1)
    for row in rows:
        assert all(math.isfinite(row[k]) for k in ("loss", "loss_ri", "loss_mag", "loss_time", "loss_gan"))
        assert math.isfinite(row["grad_norm_g"]) and row["nonfinite"] == 0
        assert row["disc_skipped"] or math.isfinite(row["disc_loss"])


@pytest.mark.parametrize("deterministic", RUN_MODES)
def test_overlapped_pesq_gives_the_same_run_as_sequential(corpus, tmp_path, deterministic):
    logs = []
    for overlap in ("true", "false"):
        run = tmp_path / f"overlap_{overlap}"
        extra = (f"overlap_pesq={overlap}", "pesq_strategy=masked", f"deterministic={deterministic}")
        assert main(["--config", str(CONFIGS / "official.yaml"), *tiny(corpus, run, *extra)]) == 0
        logs.append(pd.read_csv(run / "training_step_log.csv").drop(columns="seconds"))
    assert_same_run(logs[0], logs[1], deterministic)


@pytest.mark.parametrize("deterministic", RESUME_MODES)
@pytest.mark.parametrize("inject", [0.0, 0.4])
def test_resume_gives_the_same_epoch_log_as_an_uninterrupted_run(corpus, tmp_path, inject, deterministic):
    full, part = tmp_path / "full", tmp_path / "part"
    extra = ("decay_epoch=1", f"pesq_fail_inject={inject}", f"deterministic={deterministic}")
    assert main(["--config", str(CONFIGS / "official.yaml"), *tiny(corpus, full, "epochs=2", *extra)]) == 0
    assert main(["--config", str(CONFIGS / "official.yaml"), *tiny(corpus, part, "epochs=1", *extra)]) == 0
    # a crash after logging some epoch-1 rows but before its checkpoint: resume must drop them
    for name in ("training_step_log.csv", "training_epoch_log.csv"):
        log = pd.read_csv(part / name)
        pd.concat([log, log.tail(1).assign(epoch=1)]).to_csv(part / name, index=False)
    assert main(["--resume", str(part), "epochs=2"]) == 0
    a = pd.read_csv(full / "training_epoch_log.csv").drop(columns="seconds")
    b = pd.read_csv(part / "training_epoch_log.csv").drop(columns="seconds")
    assert len(a) == 2 and list(a.lr_g) == [5e-4, 2.5e-4]  # the step decay continues across the resume
    assert_same_run(a, b, deterministic)
    sa = pd.read_csv(full / "training_step_log.csv").drop(columns="seconds")
    sb = pd.read_csv(part / "training_step_log.csv").drop(columns="seconds")
    assert_same_run(sa, sb, deterministic)
    assert (sa.pesq_fail_injected.sum() > 0) == (inject > 0)  # the injected draws continued, not restarted


@pytest.mark.parametrize("denormalize", [False, True])
def test_eval_denormalize_decides_what_audio_pesq_labels_see(corpus, tmp_path, denormalize):
    cfg = load_config(CONFIGS / "official.yaml", tiny(corpus, tmp_path / "d", f"eval_denormalize={denormalize}"))
    trainer = Trainer(cfg)
    clean, noisy, _ = next(iter(trainer.loader))
    submitted = []
    submit = trainer.pool.submit
    trainer.pool.submit = lambda c, e: submitted.append(c) or submit(c, e)
    try:
        trainer.train_step(clean, noisy)
    finally:
        trainer.pool.close()
    c = torch.sqrt(noisy.shape[-1] / torch.sum(noisy**2, dim=-1))[:, None]
    expected = clean if denormalize else clean * c  # published: PESQ of the RMS-normalized audio
    np.testing.assert_allclose(submitted[0], expected.numpy(), rtol=1e-5, atol=1e-6)


def test_non_finite_losses_are_skipped_then_stop_with_the_checkpoint_intact(corpus, tmp_path, monkeypatch):
    run = tmp_path / "nan"
    cfg = load_config(CONFIGS / "official.yaml", tiny(corpus, run, "epochs=2", "max_nonfinite_in_a_row=2"))
    trainer = Trainer(cfg)
    calls = {"n": 0}
    forward = trainer.gen.forward

    def poisoned(x):
        calls["n"] += 1
        real, imag = forward(x)
        if trainer.gen.training and calls["n"] > 3:  # epoch 0 (3 steps) is clean; epoch 1 is NaN
            real = real * float("nan")
        return real, imag

    monkeypatch.setattr(trainer.gen, "forward", poisoned)
    before = None
    with pytest.raises(TrainingDiverged, match="2 non-finite losses in a row"):
        try:
            trainer.fit()
        finally:
            before = torch.load(run / "last.pt", weights_only=True)
    assert before["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in before["generator"].values() if v.is_floating_point())
    steps = pd.read_csv(run / "training_step_log.csv")
    assert list(steps.nonfinite) == [0, 0, 0, 1, 1]
    assert steps.disc_loss.iloc[3:].isna().all()


def test_invalid_data_is_refused_before_anything_starts(tmp_path, capsys):
    bad = tmp_path / "bad"
    for split in ("train", "test"):
        (bad / split / "clean").mkdir(parents=True)
        (bad / split / "noisy").mkdir(parents=True)
    import soundfile as sf

    sf.write(bad / "train" / "clean" / "a.wav", np.zeros(16000), 8000)
    sf.write(bad / "train" / "noisy" / "a.wav", np.zeros(16000), 8000)
    sf.write(bad / "train" / "clean" / "b.wav", np.zeros(16000), 16000)
    run = tmp_path / "never"
    assert main(["--config", str(CONFIGS / "official.yaml"), f"data_dir={bad}", f"run_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert "a.wav" in err and "b.wav" in err
    assert not run.exists()


@pytest.mark.slow
def test_ddp_two_gloo_processes_see_different_shards_and_stay_identical(corpus, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           "-m", "cmgan_lib.training", "--config", str(CONFIGS / "official.yaml"),
           *tiny(corpus, run, "epochs=2", "max_steps_per_epoch=2", "batch_size=1", "pesq_workers=1",
                 "device=cpu")]  # fmt: skip
    # the package first, then whatever the caller's PYTHONPATH holds (on the GPU machine: the dependencies)
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads((run / "ddp_ranks.json").read_text())
    assert len(history) == 2
    for ranks in history:
        assert [r["rank"] for r in ranks] == [0, 1]
        assert ranks[0]["gen"] == ranks[1]["gen"] and ranks[0]["disc"] == ranks[1]["disc"]
    first = history[0]
    assert set(first[0]["indices"]).isdisjoint(first[1]["indices"]) and first[0]["indices"]
    assert len(pd.read_csv(run / "training_epoch_log.csv")) == 2
    assert not math.isnan(pd.read_csv(run / "training_epoch_log.csv").val_pesq.iloc[-1])


def test_failures_are_logged_by_cause_and_injection_skips_updates(corpus, tmp_path):
    run = tmp_path / "inject"
    args = tiny(corpus, run, "epochs=2", "pesq_fail_inject=0.5", "checkpoint_every=1", "max_steps_per_epoch=4")
    assert main(["--config", str(CONFIGS / "official.yaml"), *args]) == 0
    steps = pd.read_csv(run / "training_step_log.csv")
    epochs = pd.read_csv(run / "training_epoch_log.csv")
    fail_cols = [c for c in STEP_COLUMNS if c.startswith("pesq_fail_")]
    assert fail_cols == ["pesq_fail_silent_reference", "pesq_fail_too_short", "pesq_fail_estimate",
                         "pesq_fail_other", "pesq_fail_injected"]  # fmt: skip
    failed = steps[fail_cols].sum(axis=1)
    # every failed label has a cause, every skip under the published rule has a failed label
    np.testing.assert_array_equal(failed, np.round((1 - steps.pesq_valid_frac) * 2).astype(int))
    np.testing.assert_array_equal(steps.disc_skipped, (failed > 0).astype(int))
    assert steps.pesq_fail_injected.sum() > 0 and steps.disc_skipped.sum() > 0
    for col in fail_cols:
        assert list(epochs[col]) == list(steps.groupby("epoch")[col].sum())
    assert (run / "epoch_001.pt").is_file() and (run / "epoch_002.pt").is_file()
    assert torch.load(run / "epoch_001.pt", weights_only=True)["epoch"] == 0


def test_validation_split_is_not_the_test_set_unless_asked(corpus, tmp_path):
    names = {}
    for split in ("valid", "test"):
        cfg = load_config(CONFIGS / "official.yaml", tiny(corpus, tmp_path / split, f"val_split={split}"))
        trainer = Trainer(cfg)
        trainer.pool.close()
        names[split] = {p[1].parent.parent.name for p in trainer.val_pairs}
    assert names == {"valid": {"valid"}, "test": {"test"}}
    with pytest.raises(ValueError, match="val_split"):
        load_config(CONFIGS / "official.yaml", ["val_split=train"])


@pytest.mark.parametrize("reshuffle", [False, True])
def test_data_order_repeats_unless_reshuffled(corpus, tmp_path, monkeypatch, reshuffle):
    """Issue 20: published CMGAN never calls DistributedSampler.set_epoch, so every epoch visits the files in the same
    order; `reshuffle_each_epoch=true` draws a new order per epoch. Read from the names training actually saw."""
    seen: list[list[str]] = []
    rows: list[dict] = []
    original = Trainer.train_step

    def recording(self, clean, noisy, names=None):  # one real step, then its row again: the order is the point
        seen.append(list(names))
        if not rows:
            rows.append(original(self, clean, noisy, names))
        return dict(rows[0])

    monkeypatch.setattr(Trainer, "train_step", recording)
    args = tiny(corpus, tmp_path / "order", "epochs=3", "max_steps_per_epoch=4", "val_max_files=1",
                f"reshuffle_each_epoch={str(reshuffle).lower()}")  # fmt: skip
    assert main(["--config", str(CONFIGS / "official.yaml"), *args]) == 0
    epochs = [sum(seen[k : k + 4], []) for k in range(0, 12, 4)]
    assert len(seen) == 12 and all(sorted(e) == sorted(epochs[0]) for e in epochs)  # every file once per epoch
    if reshuffle:
        assert epochs[0] != epochs[1] or epochs[1] != epochs[2]
    else:
        assert epochs[0] == epochs[1] == epochs[2]


def test_official_recipe_keeps_the_published_data_order():
    assert load_config(CONFIGS / "official.yaml").reshuffle_each_epoch is False
    assert load_config(None).reshuffle_each_epoch is True  # older run folders (no key) keep what they ran


@pytest.mark.parametrize("strategy, skipped", [("skip", 1), ("mpsenet", 0)])
def test_mpsenet_updates_the_discriminator_on_a_failed_batch(corpus, tmp_path, strategy, skipped):
    """Issue 20: a batch with a silent reference skips the update under `skip`; under `mpsenet` the discriminator
    still steps (its real term), and the labels of the batch still count as failed."""
    cfg = load_config(CONFIGS / "official.yaml", tiny(corpus, tmp_path / strategy, f"pesq_strategy={strategy}"))
    trainer = Trainer(cfg)
    try:
        g = torch.Generator().manual_seed(0)
        noisy = 0.1 * torch.randn(2, 8000, generator=g)
        clean = noisy.clone()
        clean[1] = 0.0  # PESQ: no utterances in the reference
        before = [p.detach().clone() for p in trainer.disc.parameters()]
        row = trainer.train_step(clean, noisy, ["a", "b"])
        moved = any(not torch.equal(a, b) for a, b in zip(before, trainer.disc.parameters(), strict=True))
    finally:
        trainer.pool.close()
    assert row["pesq_fail_silent_reference"] == 1 and row["pesq_valid_frac"] == 0.5
    assert row["disc_skipped"] == skipped and moved == (not skipped)
    assert math.isnan(row["disc_loss"]) == bool(skipped)
