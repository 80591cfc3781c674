"""Precision and determinism switches: process-wide flags set both ways, autocast only where asked."""

from __future__ import annotations

import os

import pytest
import torch

from cmgan_lib.training.numerics import autocast_call, configure, loader_generator


@pytest.fixture(autouse=True)
def _restore():
    yield
    configure("fp32", deterministic=False)


def test_tf32_flags_follow_the_precision_both_ways():
    configure("tf32", deterministic=False)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    configure("fp32", deterministic=False)  # a later fp32 run in the same process is fp32 again
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    configure("bf16", deterministic=False)
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    with pytest.raises(ValueError, match="precision"):
        configure("fp16", deterministic=False)


def test_deterministic_mode_is_set_and_unset(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    configure("fp32", deterministic=True)
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    configure("fp32", deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic


def test_fp32_call_is_the_plain_call_and_bf16_returns_fp32():
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8)
    plain = lin(x)
    out = autocast_call(lin, "fp32", torch.device("cpu"))(x)
    assert torch.equal(out, plain)
    inner = []
    lin.register_forward_hook(lambda m, i, o: inner.append(o.dtype))
    out16 = autocast_call(lin, "bf16", torch.device("cpu"))(x)
    assert inner[-1] == torch.bfloat16 and out16.dtype == torch.float32
    assert not torch.equal(out16, plain)
    pair = autocast_call(lambda a: (lin(a), lin(a)), "bf16", torch.device("cpu"))(x)
    assert isinstance(pair, tuple) and all(t.dtype == torch.float32 for t in pair)


def test_loader_generator_depends_on_seed_and_epoch_only():
    draw = lambda g: torch.randint(0, 2**31, (3,), generator=g).tolist()  # noqa: E731
    assert draw(loader_generator(0, 1)) == draw(loader_generator(0, 1))
    assert draw(loader_generator(0, 1)) != draw(loader_generator(0, 2))
    assert draw(loader_generator(0, 1)) != draw(loader_generator(1, 1))
