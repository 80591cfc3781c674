"""Tests of reports.report_01_claims and report_01_verdict: claim verdicts from the numbers, the verdict text."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cmgan_lib.analysis import audit_logs
from cmgan_lib.reports import report_01_claims as rc
from cmgan_lib.reports import report_01_verdict as rv


def _verdicts(table: pd.DataFrame) -> list[str]:
    return table["verdict"].tolist()


def _claim1(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["claim"] == rc.CLAIMS[0]]


def test_skip_verdict_flips_with_the_logged_skip_rate(tmp_path):
    """The claim-1 verdict comes from the step logs: a run that skips ~56% is consistent, one that skips ~5% is
    below the claim (no hard-coded outcome)."""
    from test_audit import _run

    from cmgan_lib.analysis.audit_logs import observed_rates

    rng = np.random.default_rng(0)
    high = (rng.random(200) < 0.56).astype(int)
    low = (rng.random(200) < 0.05).astype(int)
    _run(tmp_path / "high", "official_s0", "skip", high, high)
    _run(tmp_path / "low", "official_s0", "skip", low, low)
    v_high = _claim1(rc.claims_table(observed=observed_rates(tmp_path / "high")))["verdict"].tolist()
    v_low = _claim1(rc.claims_table(observed=observed_rates(tmp_path / "low")))["verdict"].tolist()
    assert v_high == ["consistent"] and v_low == ["below the claim"]
    # a batch_mean run never skips, but its natural failures say what the published rule would have done
    per_sample = rng.binomial(4, 0.186, 400)  # ~56% of batches of 4 hold a failure
    _run(tmp_path / "bm", "seed_fixes_s0", "batch_mean", [0] * 400, per_sample)
    bm = _claim1(rc.claims_table(observed=observed_rates(tmp_path / "bm"))).iloc[0]
    assert bm.verdict == "consistent" and "published rule would skip" in bm.measured
    _run(tmp_path / "inj", "official_p186_s0", "skip", high, high, inject=0.186)
    assert _claim1(rc.claims_table(observed=observed_rates(tmp_path / "inj"))).iloc[0].verdict.startswith("imposed")


def test_rate_verdict_rules():
    assert rc.rate_verdict(0.4, 0.7) == "consistent"
    assert rc.rate_verdict(0.0, 0.2) == "below the claim" and rc.rate_verdict(0.7, 0.9) == "above the claim"
    assert rc.rate_verdict(0.0, 0.93).startswith("inconclusive")
    assert rc.rate_verdict(math.nan, 0.5) == "not measured"


def test_claims_table_other_claims_follow_the_numbers():
    scale = pd.DataFrame([{"dataset": "real", "n_both_valid": 50, "c_min": 5.0, "c_max": 30.0, "max_abs_diff": 2e-4}])
    t = rc.claims_table(scale=scale, skip_logged_ours=math.nan, log_stats={"min_positive": 4e-6, "n_steps": 10})
    v = t.set_index("claim")["verdict"]
    assert v[rc.CLAIMS[1]].startswith("refuted") and "4e-06" in t.set_index("claim").loc[rc.CLAIMS[1], "measured"]
    assert v[rc.CLAIMS[2]].startswith("refuted") and v[rc.CLAIMS[3]] == "not measured"
    assert rc.claims_table(scale=scale.assign(max_abs_diff=0.5)).set_index("claim").loc[
        rc.CLAIMS[2], "verdict"].startswith("supported")  # fmt: skip
    assert rc.claims_table(skip_logged_published=1e-6).set_index("claim").loc[
        rc.CLAIMS[1], "verdict"].startswith("possible")  # fmt: skip
    fixed = pd.DataFrame(
        [{"run": "seed_fixes_s0", "epochs": 3, "n_steps": 30, "mean": 0.15, "low": 0.12, "high": 0.18}]
    )
    assert rc.claims_table(fixed=fixed).set_index("claim").loc[rc.CLAIMS[3], "verdict"] == "consistent"
    assert rc.claims_table(fixed=fixed.assign(low=0.3, high=0.5, mean=0.4)).set_index("claim").loc[
        rc.CLAIMS[3], "verdict"] == "above the claim"  # fmt: skip
    md = rv.claims_markdown(rc.claims_table(scale=scale, fixed=fixed))
    assert "does not hold wherever it was measured" in md and "## Verdict" in md


def test_claims_markdown_lists_each_condition_and_counts_the_undecided():
    table = pd.DataFrame(
        [("c", "real speech, 2 s", "0 of 50", "below the claim"),
         ("c", "run official_s0", "16 of 36", "consistent with the claim"),
         ("c", "synthetic estimates, 1 s", "1 of 12", "inconclusive (too few samples)")],
        columns=["claim", "condition", "measured", "verdict"],
    )  # fmt: skip
    md = rv.claims_markdown(table)
    assert "**c**: holds only in the runs' logs; elsewhere not." in md  # the headline (issue 23), then the bullets
    assert "- Holds:\n    - run official_s0 (16 of 36)" in md
    assert "- Does not hold:\n    - real speech, 2 s (0 of 50)" in md
    assert "Not decided by the data: 1 condition(s) (1 inconclusive (too few samples)" in md
    assert "synthetic estimates" not in md  # undecided conditions are counted, not listed
    row = rv.claims_summary(table).iloc[0]
    assert (row.holds_under, row.not_under) == ("run official_s0", "real speech, 2 s")
    assert row.undecided == "1 inconclusive (too few samples)"


def test_claims_markdown_says_undecided_when_rows_were_measured_but_decide_nothing():
    rows = [("measured", "run a", "1 of 3", "inconclusive (too few samples)"),
            ("measured", "run b", "2 of 4", "imposed (failure injection), not evidence"),
            ("absent", "-", "no step logs", "not measured")]  # fmt: skip
    md = rv.claims_markdown(pd.DataFrame(rows, columns=["claim", "condition", "measured", "verdict"]))
    assert ("**measured**: not decided by the data here (1 inconclusive (too few samples), 1 imposed (failure "
            "injection), not evidence).") in md  # fmt: skip
    assert "**absent**: not measured here." in md
    assert "Not decided by the data: 2 condition(s)" in md


def test_claim4_labels_injected_runs_names_the_crop_and_calls_wide_intervals_inconclusive(tmp_path):
    from test_audit import _run

    _run(tmp_path, "seed_fixes_s0", "batch_mean", [0] * 10, [0] * 10)
    _run(tmp_path, "batch_mean_p186_s0", "batch_mean", [0] * 10, [1] * 10, inject=0.186)
    _run(tmp_path, "official_s0", "skip", [0] * 10, [0] * 10)
    fixed = audit_logs.last_epoch_disc_loss(tmp_path)
    assert sorted(fixed.run) == ["batch_mean_p186_s0", "seed_fixes_s0"]
    c4 = rc.claims_table(fixed=fixed).query("claim == @rc.CLAIMS[3]").set_index("condition")
    natural = c4.loc["run seed_fixes_s0 (0.5 s crops, last of 2 epochs)"]
    assert natural.verdict == "consistent"  # every logged disc_loss is 0.2
    assert c4.loc["run batch_mean_p186_s0 (0.5 s crops, last of 2 epochs)"].verdict.startswith("imposed")
    # the width rule is rate_verdict's: just wider than MAX_INFORMATIVE_WIDTH is inconclusive, just narrower not
    w = rc.MAX_INFORMATIVE_WIDTH
    lo, hi = rc.CLAIMED_DISC_LOSS_RANGE
    for width, ok in ((w + 0.01, False), (w - 0.01, True)):
        rate = rc.rate_verdict(rc.CLAIMED_SKIP_RATE - width / 2, rc.CLAIMED_SKIP_RATE + width / 2)
        ranged = rc._range_verdict(lo, lo + width, lo, hi)
        assert (rate == "consistent") == (ranged == "consistent") == ok
        assert ok or ranged == rate == "inconclusive (too few samples)"
    wide = fixed.assign(low=0.0, high=0.05 + w)
    assert set(rc.claims_table(fixed=wide).query("claim == @rc.CLAIMS[3]").verdict) == {
        "inconclusive (too few samples)", "imposed (failure injection), not evidence"}  # fmt: skip


def test_committed_reports_leave_out_a_shared_copy_of_the_audited_grid(tmp_path, fake_run):
    """The confirmatory grid's own shared report (reports/<date>_confirmatory_cpu, its runs' logs copied) once
    counted every run twice in the claims table; one that copies part of the grid goes too, one whose runs differ
    stays."""
    import shutil

    grid = tmp_path / "runs" / "GRID" / "runs"
    for seed in (0, 1):
        fake_run(grid, f"official_s{seed}", [2.0, 2.2, 2.1 + seed / 10], 0)
    reports = tmp_path / "reports"
    for name in ("copy", "part", "other"):
        (reports / name).mkdir(parents=True)
        (reports / name / "training_comparisons.csv").write_text("variant\n")
    shutil.copytree(grid, reports / "copy" / "runs")
    shutil.copytree(grid / "official_s0", reports / "part" / "runs" / "official_s0")
    fake_run(reports / "other" / "runs", "official_s0", [2.0, 2.3, 2.2], 0)  # same name, another log
    found = rc.committed_reports("auto", root=reports, besides=grid)
    assert [p.name for p in found] == ["other"]
    assert [p.name for p in rc.committed_reports("auto", root=reports)] == ["copy", "other", "part"]
    assert rc.copies_runs_of(reports / "part" / "runs", grid) and not rc.copies_runs_of(tmp_path / "none", grid)
