"""The adversarial term's share of the generator's gradient: the formula, and the trainer's log of it."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_bad_inputs import short_validation

from cmgan_lib.core.dsp import rms_normalizer
from cmgan_lib.training.config import load_config
from cmgan_lib.training.grad_share import COLUMNS, adversarial_grads, share_stats
from cmgan_lib.training.train import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_share_stats_of_known_gradients():
    w = torch.nn.Parameter(torch.zeros(3))
    a, b = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([1.0, 1.0, 0.0])
    adv_loss, rest_loss = w @ a, w @ b
    g_adv = adversarial_grads(adv_loss, [w])
    (adv_loss + rest_loss).backward()
    s = share_stats(g_adv, [w.grad])
    assert s["grad_norm_g_adv"] == pytest.approx(3.0)
    assert s["grad_norm_g_rest"] == pytest.approx(math.sqrt(2))
    assert s["grad_ratio_adv_rest"] == pytest.approx(3.0 / math.sqrt(2))
    assert s["grad_cos_adv_rest"] == pytest.approx(1 / math.sqrt(2))
    assert list(s) == COLUMNS


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from cmgan_lib.data.synthetic import make_dataset

    out = tmp_path_factory.mktemp("corpus")
    make_dataset(out, n_train=4, n_test=1, seed=0, hard_fraction=0.0, progress=False, n_valid=1)
    return short_validation(out)


def test_trainer_logs_the_share_of_the_weighted_gan_term(corpus, tmp_path):
    cfg = load_config(CONFIGS / "official.yaml", [
        f"data_dir={corpus}", f"run_dir={tmp_path / 'run'}", "batch_size=2", "cut_len=8000", "num_channel=4",
        "num_tscb=1", "ndf=4", "pesq_workers=1", "grad_share_every=1", "loss_weights=[0.1,0.9,0.2,0.5]"])  # fmt: skip
    tr = Trainer(cfg)
    try:
        clean, noisy, _ = next(iter(tr.loader))
        # reference on the same graph: the same RNG (dropout) and buffers (spectral norm, BatchNorm) as the step
        saved, rng = tr._buffers(), torch.get_rng_state()
        c = rms_normalizer(noisy)[:, None]
        out = tr.forward_losses(clean * c, noisy * c)
        w, params = cfg.loss_weights, tr.gen_params
        rest = w[0] * out["loss_ri"] + w[1] * out["loss_mag"] + w[2] * out["loss_time"]
        g_adv = torch.autograd.grad(w[3] * out["loss_gan"], params, retain_graph=True, allow_unused=True)
        g_rest = torch.autograd.grad(rest, params, allow_unused=True)
        flat = [torch.cat([g.reshape(-1) for g in gs if g is not None]) for gs in (g_adv, g_rest)]
        tr._restore_buffers(saved)
        torch.set_rng_state(rng)
        row = tr.train_step(clean, noisy)
        # measured, not skipped (row 2 of the step log with grad_share_every=2 would be NaN)
        assert row["grad_norm_g_adv"] == pytest.approx(float(flat[0].norm()), rel=1e-4)
        assert row["grad_norm_g_rest"] == pytest.approx(float(flat[1].norm()), rel=1e-4)
        cos = float(flat[0] @ flat[1] / (flat[0].norm() * flat[1].norm()))
        assert row["grad_cos_adv_rest"] == pytest.approx(cos, rel=1e-3, abs=1e-5)
        assert row["grad_ratio_adv_rest"] == pytest.approx(float(flat[0].norm() / flat[1].norm()), rel=1e-4)
    finally:
        tr.pool.close()


def test_share_is_logged_every_n_steps_and_off_by_default(corpus, tmp_path):
    from cmgan_lib.training.train import main

    base = [f"data_dir={corpus}", "epochs=1", "batch_size=1", "cut_len=8000", "num_channel=4", "num_tscb=1", "ndf=4",
            "val_max_files=1", "pesq_workers=1"]  # fmt: skip
    assert main(["--config", str(CONFIGS / "official.yaml"), *base, f"run_dir={tmp_path / 'a'}",
                 "grad_share_every=2"]) == 0  # fmt: skip
    steps = pd.read_csv(tmp_path / "a" / "training_step_log.csv")
    measured = steps.grad_norm_g_adv.notna()
    assert measured.tolist() == [(s - 1) % 2 == 0 for s in steps.step]  # steps 1, 3 (global step 0, 2, ...)
    assert (steps.grad_norm_g_adv[measured] > 0).all()
    assert main(["--config", str(CONFIGS / "official.yaml"), *base, f"run_dir={tmp_path / 'b'}"]) == 0
    assert pd.read_csv(tmp_path / "b" / "training_step_log.csv")[COLUMNS].isna().all().all()


def test_train_disc_false_never_updates_the_discriminator(corpus, tmp_path):
    from cmgan_lib.training.train import main

    run = tmp_path / "frozen"
    assert main(["--config", str(CONFIGS / "official.yaml"), f"data_dir={corpus}", f"run_dir={run}", "epochs=1",
                 "batch_size=1", "cut_len=8000", "num_channel=4", "num_tscb=1", "ndf=4", "val_max_files=1",
                 "pesq_workers=1", "train_disc=false", "grad_share_every=1"]) == 0  # fmt: skip
    steps = pd.read_csv(run / "training_step_log.csv")
    assert (steps.disc_skipped == 1).all() and steps.disc_loss.isna().all() and steps.grad_norm_d.isna().all()
    assert (steps.grad_norm_g_adv > 0).all()  # the adversarial term still reaches the generator
    init = Trainer(load_config(run / "config.yaml", [f"run_dir={tmp_path / 'init'}"]))
    init.pool.close()
    final = torch.load(run / "last.pt", weights_only=True)["discriminator"]
    for k, v in init.disc.state_dict().items():
        if "weight_orig" in k or k.endswith("bias"):
            assert torch.equal(v, final[k]), k
