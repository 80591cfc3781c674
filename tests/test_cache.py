"""cache.cached_frame: a table is read back only for the same inputs, code and library versions (issue 19)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmgan_lib.analysis import cache


@pytest.fixture
def counted():
    calls = {"n": 0}

    def compute():
        calls["n"] += 1
        return pd.DataFrame({"x": [calls["n"], 2.5]})

    return calls, compute


def inputs(audio: np.ndarray, ckpt: Path, seed: int = 0):
    return [[("clip", audio, {"snr": 5.0})], [0.5, 2.0], seed, [("after epoch 1", ckpt), ("untrained", None)]]


def test_same_inputs_read_back_and_any_change_computes_again(tmp_path, counted):
    calls, compute = counted
    audio = np.linspace(-1, 1, 100, dtype=np.float32)
    ckpt = tmp_path / "epoch_001.pt"
    ckpt.write_bytes(b"weights-1")
    first, path, reused = cache.cached_frame(tmp_path, "sweep", inputs(audio, ckpt), compute)
    assert not reused and calls["n"] == 1 and path.is_file()
    again, path2, reused = cache.cached_frame(tmp_path, "sweep", inputs(audio.copy(), ckpt), compute)
    assert reused and calls["n"] == 1 and path2 == path
    pd.testing.assert_frame_equal(again, first)

    changed = audio.copy()
    changed[3] += 1e-6  # one sample of the audio
    assert not cache.cached_frame(tmp_path, "sweep", inputs(changed, ckpt), compute)[2]
    assert not cache.cached_frame(tmp_path, "sweep", inputs(audio, ckpt, seed=1), compute)[2]  # a parameter
    ckpt.write_bytes(b"weights-2")  # the checkpoint's bytes, same path
    assert not cache.cached_frame(tmp_path, "sweep", inputs(audio, ckpt), compute)[2]
    assert calls["n"] == 4
    assert len(list((tmp_path / ".cache").glob("sweep-*.pkl"))) == 1  # older entries removed


def test_a_change_in_the_code_or_a_library_computes_again(tmp_path, counted, monkeypatch):
    calls, compute = counted
    args = [1, 2, 3]
    cache.cached_frame(tmp_path, "t", args, compute)
    env = cache.environment()
    assert set(env) == {"source", *cache.LIBRARIES}
    monkeypatch.setattr(cache, "environment", lambda: {**env, "source": "edited"})
    assert not cache.cached_frame(tmp_path, "t", args, compute)[2]
    monkeypatch.setattr(cache, "environment", lambda: {**env, "pesq": "0.0.0"})
    assert not cache.cached_frame(tmp_path, "t", args, compute)[2]
    assert calls["n"] == 3


def test_the_source_digest_follows_the_package_files(tmp_path, monkeypatch):
    (tmp_path / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(cache, "PACKAGE", tmp_path)
    before = cache.environment()["source"]
    (tmp_path / "a.py").write_text("x = 2\n")
    assert cache.environment()["source"] != before


def test_an_unreadable_entry_is_computed_again(tmp_path, counted):
    calls, compute = counted
    _, path, _ = cache.cached_frame(tmp_path, "t", [1], compute)
    path.write_bytes(b"truncated")
    frame, _, reused = cache.cached_frame(tmp_path, "t", [1], compute)
    assert not reused and calls["n"] == 2 and list(frame.x) == [2, 2.5]


def test_crop_sweeps_reads_back_with_a_cache_dir_and_computes_without_one(tmp_path, monkeypatch, capsys):
    from cmgan_lib.analysis import audit

    calls = []

    def fake_sweep(pairs, lengths_s, crops_per_clip, seed, metadata=None, pool=None, estimator=None):
        calls.append(len(pairs))
        return pd.DataFrame({"length_s": list(lengths_s), "raw": [1.0] * len(lengths_s)})

    monkeypatch.setattr(audit, "crop_length_sweep", fake_sweep)
    pair = audit.ClipPair("a", np.ones(8000, dtype=np.float32), np.full(8000, 0.5, dtype=np.float32))
    sets = [audit.AuditSet("synthetic", [pair])]
    first = audit.crop_sweeps(sets, None, [0.5, 1.0], 2, 0, None, 12, cache_dir=tmp_path)
    again = audit.crop_sweeps(sets, None, [0.5, 1.0], 2, 0, None, 12, cache_dir=tmp_path)
    assert calls == [1] and "read back" in capsys.readouterr().out
    pd.testing.assert_frame_equal(first, again)
    audit.crop_sweeps(sets, None, [0.5, 1.0], 3, 0, None, 12, cache_dir=tmp_path)  # crops per clip changed
    audit.crop_sweeps(sets, None, [0.5, 1.0], 3, 0, None, 12)  # no cache_dir: always computed
    assert calls == [1, 1, 1]
