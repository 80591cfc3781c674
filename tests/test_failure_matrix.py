"""Issue 20's failure matrix: every condition's failures classified by cause and by pesq's own error code, the
verdicts generated from them, and what the descendants' `-1 in pesq_score` check catches."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cmgan_lib.analysis import failure_matrix
from cmgan_lib.analysis.audit import load_folder_pairs

# (axis, level) -> the cause every crop of real speech must get there; a misclassification fails the test.
EXPECTED_CAUSE = {
    ("as is", "clean/noisy"): None,
    ("input SNR (dB)", "-10"): None,
    ("input SNR (dB)", "20"): None,
    ("estimate level (gain)", "1e-06"): None,
    ("estimate level (gain)", "0"): "silent_or_nonfinite_estimate",
    ("numeric form", "float64, gain 1"): None,
    ("numeric form", "int16, gain 1e-06"): "silent_or_nonfinite_estimate",  # rounds to exact zeros
    ("numeric form", "clipped, gain 1"): None,
    ("edge case", "too_short_crop"): "too_short",
    ("edge case", "nan_in_estimate"): "silent_or_nonfinite_estimate",
    ("edge case", "inf_in_estimate"): "silent_or_nonfinite_estimate",
    ("edge case", "nan_in_reference"): "nonfinite_reference",
    ("edge case", "dc_offset_estimate"): None,
    ("edge case", "pure_noise_estimate"): None,
    ("edge case", "silent_reference"): "silent_reference",
}
# pesq's RETURN_VALUES result per cause: a code, or NaN where it sets none.
EXPECTED_CODE = {"too_short": -6, "silent_reference": -7, "nonfinite_reference": -7}


@pytest.fixture(scope="module")
def matrix(vb_samples) -> pd.DataFrame:
    """Two 1 s crops of two real utterances (speech throughout) under every condition: 2 x 2 x 32 PESQ calls."""
    pairs = load_folder_pairs(vb_samples)[:2]
    return failure_matrix.failure_matrix(pairs, 16000, crops_per_clip=2, seed=1, dataset="real")


def test_every_condition_gets_its_cause_and_pesq_code(matrix):
    assert len(matrix) == 2 * 2 * len(failure_matrix.matrix_cases())
    for (axis, level), want in EXPECTED_CAUSE.items():
        got = matrix[(matrix.axis == axis) & (matrix.level == level)]
        assert len(got) == 4, (axis, level)
        assert got.cause.map(lambda c: None if pd.isna(c) else c).tolist() == [want] * 4, (axis, level)
        if want is None:
            assert np.all((got.pesq > 1.0) & (got.pesq < 4.7)) and np.all(got.pesq_code == got.pesq)
        elif want in EXPECTED_CODE:
            assert (got.pesq_code == EXPECTED_CODE[want]).all(), (axis, level)
        else:  # the zero / non-finite estimate: pesq raises a ValueError or returns NaN, no code
            assert got.pesq_code.isna().all() or (got.pesq_code == -7).all(), (axis, level)


def test_snr_axis_mixes_at_the_stated_snr(vb_samples):
    clean, noisy = load_folder_pairs(vb_samples)[0].load()
    c, n = clean[:16000], noisy[:16000]
    for snr in (-10.0, 0.0, 20.0):
        mixed = failure_matrix.mix_at_crop_snr(c, n, snr).astype(np.float64)
        residual = mixed - c
        assert 10 * np.log10(np.sum(c.astype(np.float64) ** 2) / np.sum(residual**2)) == pytest.approx(snr, abs=0.01)


def test_speech_fraction_is_relative_to_the_clip():
    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 200 * t).astype(np.float32)
    clip = np.r_[tone, np.zeros(16000, np.float32)]
    peak = failure_matrix.loudest_frame_energy(clip)
    assert failure_matrix.speech_fraction(clip[:16000], peak) == 1.0
    assert failure_matrix.speech_fraction(clip[16000:], peak) == 0.0
    assert failure_matrix.speech_fraction(clip[8000:24000], peak) == 0.5
    assert failure_matrix.speech_fraction(0.001 * clip[:16000], peak) == 0.0  # -60 dB under the clip's loudest frame


def test_numeric_forms():
    x = np.array([0.5, -0.25, 1e-6, 0.0])
    assert failure_matrix.numeric_form(x, "float64").dtype == np.float64
    assert failure_matrix.numeric_form(x, "float32").dtype == np.float32
    np.testing.assert_array_equal(failure_matrix.numeric_form(x, "int16"), np.float32([16384, -8192, 0, 0]) / 32767)
    np.testing.assert_allclose(failure_matrix.numeric_form(x, "clipped"), [0.125, -0.125, 1e-6, 0.0])
    with pytest.raises(ValueError, match="numeric form"):
        failure_matrix.matrix_cases(forms=("float16",))


def test_minus_one_check_catches_every_failure_only_without_return_values(vb_samples):
    """The descendants' `pesq_loss` turns every exception into -1, so `-1 in pesq_score` sees all failures; with
    pesq's RETURN_VALUES (none of them uses it) the failures come back as -7, -6 or NaN and the check misses them."""
    clean, noisy = load_folder_pairs(vb_samples)[0].load()
    c, n = clean[:16000], noisy[:16000]
    cases = {
        "valid": (c, n),
        "silent_reference": (np.zeros_like(c), n),
        "too_short": (c[:3200], n[:3200]),
        "zero_estimate": (c, np.zeros_like(n)),
        "nan_estimate": (c, np.where(np.arange(len(n)) == 99, np.nan, n).astype(np.float32)),
    }
    default = {k: failure_matrix.published_pesq_loss(*v) for k, v in cases.items()}
    codes = {k: failure_matrix.published_pesq_loss(*v, return_values=True) for k, v in cases.items()}
    assert 1.0 < default["valid"] == codes["valid"] < 4.7
    assert all(default[k] == -1 for k in cases if k != "valid")  # caught by `-1 in pesq_score`
    assert codes["silent_reference"] == -7 and codes["too_short"] == -6  # missed: labels (code - 1) / 3.5
    assert math.isnan(codes["zero_estimate"]) and math.isnan(codes["nan_estimate"])  # missed: NaN labels
    assert -1 not in np.array([codes[k] for k in cases])


def test_minus_one_table_from_the_matrix(matrix):
    table = failure_matrix.minus_one_table(matrix).set_index("cause")
    assert set(table.index) == {"too_short", "silent_or_nonfinite_estimate", "nonfinite_reference",
                                "silent_reference"}  # fmt: skip
    assert (table.caught_by_minus_one_default == table.failures).all()
    assert (table.caught_by_minus_one_return_values == 0).all()
    assert "BUFFER_TOO_SHORT" in table.loc["too_short", "pesq_codes"]


def _fake_matrix() -> pd.DataFrame:
    rows = []
    for i in range(10):
        for axis, level, order, cause in (("as is", "clean/noisy", 0.0, None), ("input SNR (dB)", "-10", -10.0, None),
                                          ("edge case", "too_short_crop", 0.0, "too_short")):  # fmt: skip
            code = -6 if cause else 2.0
            rows.append(dict(dataset="d", clip=f"c{i}", clip_index=i, crop=0, axis=axis, level=level, order=order,
                             speech_fraction=1.0, cause=cause, reason=cause, pesq_code=code))  # fmt: skip
    return pd.DataFrame(rows)


def test_verdicts_are_generated_per_cause_and_axis():
    m = _fake_matrix()
    verdicts = failure_matrix.cause_verdicts(m).set_index("cause").verdict
    assert verdicts["too_short"].startswith("causes failures when edge case is too_short_crop (10 of 10 = 100%")
    assert verdicts["silent_reference"] == "no failure in 20 (95% upper bound 16%)"
    axes = failure_matrix.axis_verdicts(m).set_index("axis").verdict
    assert axes["input SNR (dB)"].startswith("no failure in 10 (95% upper bound")
    assert (
        axes["edge case"].startswith("failures at too_short_crop: 10 of 10") and "[too_short 10]" in axes["edge case"]
    )
    table = failure_matrix.matrix_table(m)
    assert list(table.axis.unique()) == ["as is", "input SNR (dB)", "edge case", "speech fraction"]
    assert table.set_index("axis").loc["edge case", "n_too_short"] == 10


def test_matrix_figure_is_readable(matrix, check_figure):
    from cmgan_lib.reports import report_01_audit as r01

    fig = r01.plot_failure_matrix(failure_matrix.matrix_table(matrix))
    check_figure(fig)
    assert [ax.get_xlabel() for ax in fig.axes][:2] == ["input SNR (dB)", "estimate level (gain)"]
