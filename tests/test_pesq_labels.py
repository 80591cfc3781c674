"""PESQ labels on real speech: strategies, failure causes, the masked loss's gradient, pool == serial."""

from __future__ import annotations

import math
import multiprocessing
import subprocess
import sys
from pathlib import Path

import numpy as np
import pesq
import pytest
import torch
from torch import nn

from cmgan_lib import study
from cmgan_lib.core.audio import read_wav
from cmgan_lib.data.crops import crop_pair
from cmgan_lib.scoring import pesq_worker
from cmgan_lib.training.losses import discriminator_loss
from cmgan_lib.training.pesq_labels import PesqPool, batch_pesq, make_labels, normalize_pesq

ROOT = Path(__file__).resolve().parents[1]

B = 4
CUT = 32000


@pytest.fixture(scope="module")
def batch(vb_samples) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Four 2 s training crops of different utterances; the estimate is the noisy crop."""
    names = sorted(p.name for p in (vb_samples / "clean").glob("*.wav"))[:B]
    rng = np.random.default_rng(3)
    clean, noisy = [], []
    for name in names:
        c, n = crop_pair(read_wav(vb_samples / "clean" / name), read_wav(vb_samples / "noisy" / name), CUT, rng)
        clean.append(c)
        noisy.append(n)
    return clean, noisy


@pytest.fixture(scope="module")
def direct(batch) -> np.ndarray:
    """PESQ straight from the library, the independent reference for the valid samples."""
    return np.array([pesq.pesq(16000, c, n, "wb") for c, n in zip(*batch, strict=True)])


@pytest.fixture(scope="module")
def pool():
    with PesqPool(n_workers=2, chunk_size=None) as p:  # one contiguous chunk per worker
        yield p


def with_silent_reference(batch, i=1):
    clean = [c.copy() for c in batch[0]]
    clean[i][:] = 0
    return clean, batch[1]


def with_zero_estimate(batch, i=2):
    est = [e.copy() for e in batch[1]]
    est[i][:] = 0
    return batch[0], est


def test_no_failure_every_strategy(batch, direct):
    assert np.all((direct > 1.0) & (direct < 4.6)) and np.ptp(direct) > 0.05  # real, distinct scores
    expected = torch.tensor(normalize_pesq(direct), dtype=torch.float32)
    skip = batch_pesq(*batch, strategy="skip")
    assert skip.reasons == [None] * B and skip.valid.all() and not skip.skipped
    np.testing.assert_array_equal(skip.raw, direct)
    torch.testing.assert_close(skip.scores, expected, rtol=0, atol=0)
    masked = make_labels(skip.raw, skip.reasons, "masked")
    torch.testing.assert_close(masked.scores, expected, rtol=0, atol=0)
    mean = make_labels(skip.raw, skip.reasons, "batch_mean")
    assert not mean.skipped
    # The proposed fix flattens labels even when nothing failed.
    torch.testing.assert_close(mean.scores, torch.full((B,), normalize_pesq(direct.mean()), dtype=torch.float32))


def test_one_silent_reference(batch, direct):
    clean, est = with_silent_reference(batch, 1)
    skip = batch_pesq(clean, est, strategy="skip")
    assert skip.reasons == [None, "silent_reference", None, None]
    assert math.isnan(skip.raw[1]) and skip.valid.tolist() == [True, False, True, True]
    assert skip.skipped and skip.scores is None
    np.testing.assert_array_equal(skip.raw[[0, 2, 3]], direct[[0, 2, 3]])

    mean = make_labels(skip.raw, skip.reasons, "batch_mean")
    want = normalize_pesq(direct[[0, 2, 3]].mean())
    assert not mean.skipped
    torch.testing.assert_close(mean.scores, torch.full((B,), want, dtype=torch.float32))

    masked = make_labels(skip.raw, skip.reasons, "masked")
    assert not masked.skipped and masked.n_valid == 3 and masked.valid_frac == 0.75
    assert torch.isnan(masked.scores[1])
    torch.testing.assert_close(
        masked.scores[[0, 2, 3]], torch.tensor(normalize_pesq(direct[[0, 2, 3]]), dtype=torch.float32)
    )
    assert masked.valid.tolist() == [True, False, True, True]


@pytest.mark.parametrize("kind", ["zeros", "nan", "inf"])
def test_one_bad_estimate(batch, direct, kind):
    est = [e.copy() for e in batch[1]]
    est[2][:] = 0 if kind == "zeros" else 0.1
    if kind == "nan":
        est[2][500] = np.nan
    if kind == "inf":
        est[2][500] = np.inf
    labels = batch_pesq(batch[0], est, strategy="masked")
    assert labels.reasons == [None, None, "silent_or_nonfinite_estimate", None]
    np.testing.assert_array_equal(labels.raw[[0, 1, 3]], direct[[0, 1, 3]])
    assert batch_pesq(batch[0], est, strategy="skip").skipped
    assert not batch_pesq(batch[0], est, strategy="batch_mean").skipped


def test_all_failing(batch):
    est = [np.zeros_like(e) for e in batch[1]]
    skip = batch_pesq(batch[0], est, strategy="skip")
    assert skip.reasons == ["silent_or_nonfinite_estimate"] * B and not skip.valid.any()
    assert skip.skipped and skip.scores is None and math.isnan(skip.mean_valid_raw)
    mean = batch_pesq(batch[0], est, strategy="batch_mean")
    assert not mean.skipped
    torch.testing.assert_close(mean.scores, torch.full((B,), 0.5))
    masked = batch_pesq(batch[0], est, strategy="masked")
    assert masked.skipped and masked.scores is None
    assert masked.reasons == ["silent_or_nonfinite_estimate"] * B


def test_too_short_is_classified_from_pesq(batch):
    clean = [c[:3000] for c in batch[0][:2]]
    est = [e[:3000] for e in batch[1][:2]]
    labels = batch_pesq(clean, est, strategy="masked")
    assert labels.reasons == ["too_short", "too_short"] and labels.skipped


@pytest.mark.parametrize(
    "exc, reason",
    [
        (pesq.NoUtterancesError(b"No utterances detected"), "silent_reference"),
        (pesq.BufferTooShortError(b"short"), "too_short"),
        (pesq.OutOfMemoryError(b"oom"), "other:OutOfMemoryError: oom"),
        (pesq.PesqError(b"boom"), "other:PesqError: boom"),
    ],
)
def test_pesq_exception_types_map_to_reasons(batch, monkeypatch, exc, reason):
    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(pesq_worker._pesq, "pesq", fail)
    assert pesq_worker.score_one(batch[0][0], batch[1][0]) == (
        pytest.approx(float("nan"), nan_ok=True),
        reason,
    )


def test_unrelated_errors_are_not_swallowed(batch, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("not a PESQ failure")

    monkeypatch.setattr(pesq_worker._pesq, "pesq", fail)
    with pytest.raises(RuntimeError, match="not a PESQ failure"):
        batch_pesq(batch[0][:1], batch[1][:1])
    with pytest.raises(ValueError, match="lengths differ"):
        batch_pesq([batch[0][0]], [batch[1][0][:-1]])


def test_inputs_as_tensor_batch_and_device(batch, direct):
    clean = torch.from_numpy(np.stack(batch[0]))
    est = torch.from_numpy(np.stack(batch[1]))
    labels = batch_pesq(clean, est, strategy="skip", device="cpu")
    np.testing.assert_array_equal(labels.raw, direct)
    assert labels.scores.device == torch.device("cpu") and labels.scores.dtype == torch.float32


def test_make_labels_rejects_inconsistent_input():
    with pytest.raises(ValueError, match="strategy"):
        make_labels(np.array([2.0]), [None], "mean")
    with pytest.raises(ValueError, match="finite exactly where"):
        make_labels(np.array([np.nan]), [None], "skip")
    with pytest.raises(ValueError, match="finite exactly where"):
        make_labels(np.array([2.0]), ["too_short"], "skip")


class TinyDiscriminator(nn.Module):
    """Per-sample stand-in for the metric discriminator: D(x, y) -> (B, 1) in (0, 1)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.5, -2.0]))
        self.b = nn.Parameter(torch.tensor(0.2))
        self.outputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        feats = torch.stack([(x * y).mean(dim=(1, 2, 3)), (y - x).abs().mean(dim=(1, 2, 3))], dim=1)
        out = torch.sigmoid(feats @ self.w + self.b).unsqueeze(1)
        out.retain_grad()
        self.outputs.append(out)
        return out


def mags(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(B, 1, 12, 9, generator=g)
    est = clean + 0.3 * torch.rand(B, 1, 12, 9, generator=g)
    return clean, est


def test_masked_loss_value_and_zero_gradient_for_invalid(batch):
    raw, reasons = pesq_worker.serial_scores(*with_silent_reference(batch, 1))
    labels = make_labels(raw, reasons, "masked")
    d = TinyDiscriminator()
    clean, est = mags()
    est.requires_grad_(True)
    loss = discriminator_loss(d, clean, est, labels, detach_estimate=False)
    pred_est, pred_max = d.outputs  # published order: D(clean, est), then D(clean, clean)
    valid = [0, 2, 3]
    want = ((pred_max - 1) ** 2).mean() + ((pred_est.flatten()[valid] - labels.scores[valid]) ** 2).mean()
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert pred_est.grad[1].item() == 0.0 and torch.all(pred_est.grad[valid] != 0)
    assert torch.all(est.grad[1] == 0) and all(est.grad[i].abs().sum() > 0 for i in valid)
    assert torch.isfinite(d.w.grad).all()


def test_masked_without_failures_equals_published_loss(batch):
    raw, reasons = pesq_worker.serial_scores(*batch)
    clean, est = mags(1)
    masked = discriminator_loss(TinyDiscriminator(), clean, est, make_labels(raw, reasons, "masked"))
    skip = discriminator_loss(TinyDiscriminator(), clean, est, make_labels(raw, reasons, "skip"))
    torch.testing.assert_close(masked, skip, rtol=0, atol=0)


def test_loss_none_when_skipped_and_detached_by_default(batch):
    raw, reasons = pesq_worker.serial_scores(*with_zero_estimate(batch, 0))
    clean, est = mags(2)
    assert discriminator_loss(TinyDiscriminator(), clean, est, make_labels(raw, reasons, "skip")) is None
    all_bad = make_labels(np.full(B, np.nan), ["silent_reference"] * B, "masked")
    assert discriminator_loss(TinyDiscriminator(), clean, est, all_bad) is None
    est.requires_grad_(True)
    loss = discriminator_loss(TinyDiscriminator(), clean, est, make_labels(raw, reasons, "batch_mean"))
    loss.backward()
    assert est.grad is None  # the discriminator step must not reach the generator


def test_pool_equals_serial_exactly(batch, pool):
    clean, est = with_zero_estimate(with_silent_reference(batch, 1), 3)
    clean = clean + batch[0][:2]  # B = 6: uneven chunks
    est = list(est) + batch[1][:2]
    serial_raw, serial_reasons = pesq_worker.serial_scores(clean, est)
    handle = pool.submit(clean, est)
    raw, reasons = handle.result(timeout=120)
    assert handle.done() and handle.size == 6
    np.testing.assert_array_equal(raw, serial_raw)  # NaN == NaN here; values bit-identical
    assert reasons == serial_reasons
    assert reasons[1] == "silent_reference" and reasons[3] == "silent_or_nonfinite_estimate"
    for strategy in ("skip", "batch_mean", "masked"):
        a = batch_pesq(clean, est, strategy=strategy, pool=pool)
        b = make_labels(serial_raw, serial_reasons, strategy)
        assert a.skipped == b.skipped
        if b.scores is not None:
            torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_pool_chunking_and_lifecycle(batch, start_method):
    if start_method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{start_method} is not available on this platform")
    want = pesq_worker.serial_scores(*batch)
    with PesqPool(n_workers=1, chunk_size=3, start_method=start_method) as p:
        raw, reasons = p.scores(torch.from_numpy(np.stack(batch[0])), torch.from_numpy(np.stack(batch[1])))
        np.testing.assert_array_equal(raw, want[0])
        assert reasons == want[1]
    assert p.closed
    with pytest.raises(RuntimeError, match="closed"):
        p.submit(*batch)


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(), reason="no forkserver here")
def test_a_new_pools_workers_start_with_pystoi_already_imported():
    """Every trainer start opens a pool; its workers used to import pystoi (scipy.signal, 2-3 s of CPU) again at
    their first STOI. The forkserver now imports it once and workers fork with it loaded."""
    in_worker = "'pystoi' in __import__('sys').modules"  # evaluated in a worker (eval pickles by reference)
    for _ in range(2):  # the first pool may be the one that starts the forkserver
        with PesqPool(n_workers=1, start_method="forkserver") as p:
            loaded = p._require().submit(eval, in_worker).result()
    assert loaded, "a new pool's worker had to import pystoi itself"


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(), reason="no forkserver here")
def test_the_trainers_pesq_workers_never_import_the_trainer_or_torch():
    """multiprocessing runs the parent's main module again in each worker it starts (as `__mp_main__`), unless that
    module is a package's `__main__`. Started as `-m cmgan_lib.training.train`, every PESQ worker imported the
    trainer and torch (~3 s of CPU, ~300 MB each); `cmgan ablate` now starts `-m cmgan_lib.training`. One process,
    three pools: the trainer's command as `python -m` sets it, then a plain module (which workers do run again),
    then the old alias `-m cmgan_lib.train` (run again too, but it imports nothing at its top)."""
    assert study.trainer_command()[1:] == ["-m", "cmgan_lib.training"]
    probe = "\n".join([
        "import importlib.util, sys",
        "from cmgan_lib.scoring.pesq_worker import PesqPool",
        "for name in sys.argv[1:]:",
        "    spec = importlib.util.find_spec(name)",
        "    assert spec is not None, name",
        "    sys.modules['__main__'].__spec__ = spec  # what `python -m NAME` leaves there",
        "    with PesqPool(n_workers=1, start_method='forkserver') as p:",
        "        seen = \"(__import__('sys').modules['__main__'].__name__, 'torch' in __import__('sys').modules)\"",
        "        print(name, *p._require().submit(eval, seen).result())",
    ])  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe, "cmgan_lib.training.__main__", "cmgan_lib.core.paths",
                          "cmgan_lib.train"], capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr
    left_alone, run_again, alias = out.stdout.splitlines()
    assert left_alone == "cmgan_lib.training.__main__ __main__ False"
    assert run_again == "cmgan_lib.core.paths __mp_main__ False"
    assert alias == "cmgan_lib.train __mp_main__ False"  # the old `-m cmgan_lib.train`: run again, imports nothing


def test_batch_pesq_is_a_drop_in_for_the_published_one(batch, direct):
    """Public API for CMGAN-family code: where the published `batch_pesq(clean, est)` returns None, the labels
    here have `scores is None`; otherwise the scores are its (PESQ - 1) / 3.5, from (B, T) tensors as there."""
    labels = batch_pesq(torch.from_numpy(np.stack(batch[0])), torch.from_numpy(np.stack(batch[1])))
    np.testing.assert_array_equal(labels.raw, direct)
    torch.testing.assert_close(labels.scores, torch.tensor(normalize_pesq(direct), dtype=torch.float32))
    assert labels.valid_frac == 1.0 and labels.mean_valid_raw == pytest.approx(float(np.mean(direct)))
    failed = batch_pesq(batch[0], [np.zeros_like(e) for e in batch[1]])
    assert failed.skipped and failed.scores is None


# ---------------------------------------------------------------- failure injection (issue 11)
from cmgan_lib.analysis.stats import batch_rate, wilson  # noqa: E402
from cmgan_lib.training.pesq_labels import CAUSE_COLUMNS, INJECTED, FailureInjector, cause_counts  # noqa: E402


def test_injected_skip_rate_matches_the_binomial_prediction():
    """p = 0.186 at B = 4 gives ~56% skipped batches under `skip`, as the fix document's rate."""
    p, n_batches, seeds = 0.186, 2000, range(5)  # several runs' streams, as a grid's seeds would draw
    raw, reasons = np.full(B, 3.0), [None] * B
    skipped = 0
    for seed in seeds:
        inj = FailureInjector(p, seed=seed)
        skipped += sum(make_labels(*inj(raw, reasons, step), strategy="skip").skipped for step in range(n_batches))
    expected = batch_rate(p, B)
    assert expected == pytest.approx(0.56, abs=0.005)
    observed = wilson(skipped, n_batches * len(seeds), confidence=0.99)
    assert observed.low <= expected <= observed.high, (observed, expected)


def test_injection_takes_the_path_of_a_real_failure():
    raw, reasons = np.array([3.0, 2.0, 4.0, 1.5]), [None] * 4
    inj = FailureInjector(0.5, seed=1)
    r, why = inj(raw, reasons, step=0)
    lost = [i for i, w in enumerate(why) if w == INJECTED]
    assert lost and len(lost) < 4 and np.isnan(r[lost]).all() and reasons == [None] * 4  # input untouched
    assert make_labels(r, why, "skip").skipped
    bm = make_labels(r, why, "batch_mean")
    kept = [i for i in range(4) if i not in lost]
    assert bm.scores.numpy() == pytest.approx(np.full(4, normalize_pesq(raw[kept].mean())))
    masked = make_labels(r, why, "masked")
    assert not masked.skipped and list(np.flatnonzero(~masked.valid)) == lost
    assert cause_counts(why)[CAUSE_COLUMNS[INJECTED]] == len(lost)


def test_injection_keeps_real_causes_and_p0_draws_nothing():
    inj = FailureInjector(0.99, seed=0)
    r, why = inj(np.array([np.nan, 3.0]), ["silent_reference", None], step=0)
    assert why[0] == "silent_reference"
    counts = cause_counts(["silent_reference", "too_short", "other:PesqError: x", "silent_or_nonfinite_estimate",
                           INJECTED, None])  # fmt: skip
    assert counts == dict.fromkeys(CAUSE_COLUMNS.values(), 1)
    off = FailureInjector(0.0, seed=0)
    assert all(off(np.array([3.0]), [None], step)[1] == [None] for step in range(1000))
    with pytest.raises(ValueError, match="pesq_fail_inject"):
        FailureInjector(1.0, seed=0)


def test_injector_draws_depend_on_seed_rank_and_step_only():
    """No state to checkpoint: a resumed run (any DDP rank) draws what an uninterrupted one draws at that step."""
    raw, reasons = np.full(4, 3.0), [None] * 4

    def draws(inj, steps):
        return [inj(raw, reasons, step)[1] for step in steps]

    a = FailureInjector(0.3, seed=5)
    first = draws(a, range(20))
    assert draws(FailureInjector(0.3, seed=5), range(20)) == first  # a fresh injector: the same draws
    assert draws(a, range(10, 20)) == first[10:]  # starting at step 10, as after a resume
    assert draws(FailureInjector(0.3, seed=5, rank=1), range(20)) != first  # ranks draw independently
    assert draws(FailureInjector(0.3, seed=6), range(20)) != first


# --------------------------------------------------------------------------------------------- mpsenet (issue 20)


def test_mpsenet_trains_the_real_term_and_zeroes_the_fake_term_on_a_failed_batch(batch):
    """MP-SENet/SEMamba: one failure drops only MSE(D(clean, est), labels); D(clean, clean) -> 1 still trains."""
    raw, reasons = pesq_worker.serial_scores(*with_silent_reference(batch, 1))
    labels = make_labels(raw, reasons, "mpsenet")
    assert not labels.skipped and labels.scores is None and not labels.fake_term
    clean, est = mags(3)
    d = TinyDiscriminator()
    loss = discriminator_loss(d, clean, est, labels)
    pred_max, pred_est = d.outputs  # MP-SENet's order: D(clean, clean), then D(clean, est)
    torch.testing.assert_close(loss, ((pred_max.flatten() - 1) ** 2).mean(), rtol=0, atol=0)
    loss.backward()
    assert pred_est.grad is None or torch.all(pred_est.grad == 0)  # the fake term gets no gradient at all
    real_only = TinyDiscriminator()
    ((real_only(clean, clean).flatten() - 1) ** 2).mean().backward()
    torch.testing.assert_close(d.w.grad, real_only.w.grad, rtol=0, atol=0)


def test_mpsenet_without_failures_trains_both_terms(batch):
    raw, reasons = pesq_worker.serial_scores(*batch)
    labels = make_labels(raw, reasons, "mpsenet")
    assert labels.fake_term and not labels.skipped
    clean, est = mags(4)
    d = TinyDiscriminator()
    loss = discriminator_loss(d, clean, est, labels)
    pred_max, pred_est = d.outputs
    want = ((pred_max.flatten() - 1) ** 2).mean() + ((pred_est.flatten() - labels.scores) ** 2).mean()
    torch.testing.assert_close(loss, want)
    skip = discriminator_loss(TinyDiscriminator(), clean, est, make_labels(raw, reasons, "skip"))
    torch.testing.assert_close(loss, skip)  # same loss as published when nothing fails (order aside)
