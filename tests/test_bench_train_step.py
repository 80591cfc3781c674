"""benchmarks/bench_train_step.py --published: the published step is the same function on the same weights,
and the benchmark runs end to end on a small config (on CUDA where there is one, else on CPU)."""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from cmgan_lib.models import TSCNet
from cmgan_lib.models.conformer import GLU, Attention, Swish
from cmgan_lib.training.config import load_config
from cmgan_lib.training.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny_cpu.yaml")
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_train_step  # noqa: E402
from published_step import (  # noqa: E402
    LiteralAttention,
    LiteralGLU,
    LiteralSwish,
    PublishedStep,
    literal_generator,
)


@pytest.fixture(autouse=True)
def _reset_numerics():
    yield
    from cmgan_lib.training.numerics import configure

    configure("fp32", deterministic=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from cmgan_lib.data.synthetic import make_dataset

    out = tmp_path_factory.mktemp("corpus")
    make_dataset(out, n_train=4, n_test=2, seed=0, hard_fraction=0.0, progress=False)
    return out


def overrides(corpus: Path) -> list[str]:
    return [f"data_dir={corpus}", "val_split=test", "batch_size=2", "cut_len=4000", "num_channel=4", "num_tscb=1",
            "ndf=4", "pesq_workers=1"]  # fmt: skip


def test_published_generator_shares_weights_and_computes_the_same_function():
    torch.manual_seed(0)
    ours = TSCNet(num_channel=4, num_features=201).eval()
    published = literal_generator(ours).eval()
    counts = Counter(type(m) for m in published.modules())
    assert counts[LiteralAttention] == 8  # 4 TSCBs x (time, frequency) conformers
    assert counts[LiteralGLU] == 8 and counts[LiteralSwish] == 8 * 3
    assert not {Attention, Swish, GLU} & set(counts)  # none of this project's fast forms left
    a, b = ours.state_dict(), published.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(1, 2, 9, 201)
    with torch.no_grad():
        (r1, i1), (r2, i2) = ours(x), published(x)
    torch.testing.assert_close((r2, i2), (r1, i1), rtol=0, atol=1e-5)


def test_published_step_trains_its_own_copy_from_the_trainers_weights(corpus, tmp_path):
    trainer = Trainer(load_config(TINY, [*overrides(corpus), f"run_dir={tmp_path}"]))
    try:
        step = PublishedStep(trainer)
        before = {k: v.detach().clone() for k, v in trainer.gen.named_parameters()}
        assert all(torch.equal(before[k], v) for k, v in step.gen.named_parameters())
        clean, noisy, _ = next(iter(trainer.loader))
        loss, disc_loss = step.step(clean, noisy)
    finally:
        trainer.pool.close()
    assert math.isfinite(loss) and math.isfinite(disc_loss)
    # parameters, not buffers: BatchNorm's running statistics change in any forward pass
    assert any(not torch.equal(before[k], v) for k, v in step.gen.named_parameters())
    assert all(torch.equal(before[k], v) for k, v in trainer.gen.named_parameters())


def _check(results, precisions, capsys):
    """Device auto: CUDA where there is one (each side's peak memory measured), else CPU (peaks n/a)."""
    cuda = torch.cuda.is_available()
    assert [r["precision"] for r in results] == precisions
    for r in results:
        assert str(r["device"]).startswith("cuda" if cuda else "cpu") and r["steps"] == 1
        assert r["published_ms"] > 0 and r["ours_ms"] > 0
        assert r["ratio"] == pytest.approx(r["ours_ms"] / r["published_ms"])
        peaks = (r["published_peak_gib"], r["ours_peak_gib"])
        assert all(p > 0 for p in peaks) if cuda else all(math.isnan(p) for p in peaks)
    bench_train_step.print_published(results)
    out = capsys.readouterr().out
    assert all(p in out for p in precisions)
    assert cuda or ("n/a" in out and "peak RSS" in out)


def test_published_benchmark_runs_end_to_end(corpus, capsys):
    results = bench_train_step.bench_published(TINY, overrides(corpus), 1, ["fp32"], warmup=0)
    _check(results, ["fp32"], capsys)


@pytest.mark.slow
def test_published_benchmark_runs_tf32_and_bf16(corpus, capsys):
    results = bench_train_step.bench_published(TINY, overrides(corpus), 1, ["tf32", "bf16"], warmup=0)
    _check(results, ["tf32", "bf16"], capsys)
