"""validate(): each file's PESQ and STOI go to the worker pool as soon as its forward is done (issue 19), and the
averages are those of the files every metric scored."""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import pytest
import torch

from cmgan_lib.training.validation import validate


def _done(value) -> Future:
    f: Future = Future()
    f.set_result(value)
    return f


class _Handle:
    def __init__(self, raw, reasons):
        self.raw, self.reasons = raw, reasons

    def result(self):
        return np.array(self.raw), list(self.reasons)


class FakePool:
    """Records the order of calls; PESQ = 1 + the file's index, except NaN for a clean signal starting at 0.5."""

    def __init__(self, events: list[str]):
        self.events = events

    def submit(self, clean, est):
        self.events += [f"pesq {len(c)}" for c in clean]
        raw = [np.nan if c[0] == 0.5 else 1.0 + float(c[1]) for c in clean]
        return _Handle(raw, ["silent reference" if np.isnan(r) else None for r in raw])

    def submit_stoi(self, clean, est):
        self.events += [f"stoi {len(c)}" for c in clean]
        return [_done(0.5 + float(c[1]) / 10) for c in clean]


class FakeFiles:
    def __init__(self, n: int, bad: int | None = None):
        self.dropped = [("gone.wav", "too short")]
        self._audio = []
        for i in range(n):
            clean = np.full(100 + i, 0.1, dtype=np.float32)
            clean[1] = i
            clean[0] = 0.5 if i == bad else 0.1
            self._audio.append((f"f{i}.wav", clean, clean.copy()))

    def audio(self):
        return self._audio


def test_each_file_is_scored_while_the_next_forward_runs():
    events: list[str] = []

    def forward_losses(clean, noisy):
        events.append(f"forward {clean.shape[-1]}")
        return {"loss": torch.tensor(float(clean.shape[-1])), "est_audio": noisy}

    val = validate(forward_losses, FakeFiles(3), FakePool(events), torch.device("cpu"))
    assert events == ["forward 100", "pesq 100", "stoi 100", "forward 101", "pesq 101", "stoi 101",
                      "forward 102", "pesq 102", "stoi 102"]  # fmt: skip
    assert val["val_pesq"] == pytest.approx(2.0) and val["val_stoi"] == pytest.approx(0.6)
    assert val["val_loss"] == pytest.approx(101.0) and val["val_files"] == 3
    assert val["val_dropped"] == [("gone.wav", "too short")]


def test_a_file_pesq_cannot_score_is_left_out_of_every_average_and_named():
    def forward_losses(clean, noisy):
        return {"loss": torch.tensor(float(clean.shape[-1])), "est_audio": noisy}

    val = validate(forward_losses, FakeFiles(3, bad=1), FakePool([]), torch.device("cpu"))
    assert val["val_files"] == 2 and val["val_pesq"] == pytest.approx(2.0)  # files 0 and 2: PESQ 1 and 3
    assert val["val_stoi"] == pytest.approx(0.6) and val["val_loss"] == pytest.approx(101.0)
    assert val["val_dropped"][-1] == ("f1.wav", "PESQ: silent reference")
