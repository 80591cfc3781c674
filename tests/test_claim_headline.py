"""Notebook 01's verdict headline (issue 23): one generated sentence per claim that names the variable deciding
where the claim holds and the range of measured values; it must change when the numbers change."""

from __future__ import annotations

import pandas as pd
import pytest

from cmgan_lib.reports import report_01_claims as rc
from cmgan_lib.reports import report_01_verdict as rv

SYNTH, REAL = "synthetic corpus (train)", "real speech (25 VB utterances)"


def _sweep(holds) -> pd.DataFrame:
    """A failure_sweep_table on two corpora x four crop lengths: implied skip 56% where `holds(dataset, crop)`,
    else 10% (interval below the claim) at 1 s and longer and 90% (above) at 0.5 s."""
    rows = []
    for dataset in (SYNTH, REAL):
        for crop in (0.5, 1.0, 2.0, 4.0):
            p, lo, hi = (0.56, 0.45, 0.66) if holds(dataset, crop) else (0.1, 0.05, 0.2) if crop > 0.5 else (
                0.9, 0.8, 0.95)  # fmt: skip
            rows.append(dict(dataset=dataset, pair="clean/noisy", model="-", crop_s=crop, failures="3 of 10",
                             batch_size=4, skip=f"{p:.0%} (95% CI {lo:.0%}-{hi:.0%})", skip_low=lo,
                             skip_high=hi))  # fmt: skip
    return pd.DataFrame(rows)


def _headline(sweep: pd.DataFrame) -> str:
    md = rv.claims_markdown(rc.claims_table(sweep=sweep))
    line = next(x for x in md.splitlines() if x.startswith(f"**{rc.CLAIMS[0]}**"))
    return line.removeprefix(f"**{rc.CLAIMS[0]}**: ")


def test_opposite_tables_give_opposite_headlines_and_the_bullets_stay_below():
    short = _headline(_sweep(lambda d, c: c == 0.5))
    long = _headline(_sweep(lambda d, c: c > 0.5))
    assert short == "holds only with 0.5 s crops (56%); at 1 s and longer, at most 10%."
    assert long == "holds only with crops of 1 s and longer (56%); at 0.5 s, at least 90%."
    md = rv.claims_markdown(rc.claims_table(sweep=_sweep(lambda d, c: c == 0.5)))
    claim = md.index(f"**{rc.CLAIMS[0]}**")
    assert claim < md.index("- Holds:") < md.index("- Does not hold:")  # the per-condition bullets follow it


def test_headline_names_two_variables_when_one_does_not_decide():
    text = _headline(_sweep(lambda d, c: c == 0.5 and d == SYNTH))
    assert text == f"holds only with 0.5 s crops on the {SYNTH} (56%); elsewhere, measured 10-90%."


@pytest.mark.parametrize("holds, says", [(lambda d, c: True, "holds wherever it was measured (8 conditions; 56%)"),
                                         (lambda d, c: False, "does not hold wherever it was measured (8 conditions, "
                                                              "measured 10-90%)")])  # fmt: skip
def test_headline_when_every_condition_agrees(holds, says):
    assert _headline(_sweep(holds)) == says + "."


def test_headline_says_when_no_variable_decides_exactly():
    text = _headline(_sweep(lambda d, c: c == 0.5 or (c == 4.0 and d == SYNTH)))
    assert text.startswith("holds under 3 of 8 conditions, most with 0.5 and 4 s crops (56%)")


def test_headline_by_strategy_from_the_runs_logs():
    """Run rows: the strategy decides (a skip run logs 52% of updates skipped; a masked run's natural failures
    imply 5%), and the values are read from the measured text."""
    rows = [(rc.CLAIMS[0], "run official_s0 (skip, 0.5 s crops, B=4)",
             "skipped 21 of 40 = 52% (95% CI 38%-67%) of updates", "consistent"),
            (rc.CLAIMS[0], "run masked_s0 (masked, 0.5 s crops, B=4)",
             "label failures 2 of 160 = 1.2% (95% CI 0.3%-4.4%); the published rule would skip 5% (95% CI 1%-16%)",
             "below the claim")]  # fmt: skip
    md = rv.claims_markdown(pd.DataFrame(rows, columns=["claim", "condition", "measured", "verdict"]))
    assert "holds only under skip (52%); under masked, at most 5%." in md


def test_measured_values_and_condition_variables_read_claims_table_wording():
    assert rv.measured_value("failed crops 3 of 10; implied skip at B=4: 56% (95% CI 45%-66%)") == (
        56.0,
        "%",
    )
    assert rv.measured_value("skipped 0 of 40 (95% upper bound 9%) of updates") == (0.0, "%")
    assert rv.measured_value("mean disc_loss 0.15 (95% CI 0.1-0.2, 40 updates)") == (0.15, "")
    assert rv.measured_value("max |PESQ(cx,cy) - PESQ(x,y)| = 0.0002") == (0.0002, "")
    cond = rv.condition_variables("audit: real speech (25 VB utterances), clean/estimate (official_s0), "
                                      "epoch_002, 2 s crops")  # fmt: skip
    assert cond == {"crop length": 2.0, "corpus": "real speech (25 VB utterances)", "pair type": "clean/estimate",
                    "source": "audit"}  # fmt: skip


def test_headline_names_where_it_holds_never_an_empty_value():
    """A run's log holds the claim and the audit of real speech does not: the runs have no corpus in their
    condition, so the sentence contrasts the sources (notebook 01 on a tiny corpus gave "holds only on the  (50%)"
    before this rule)."""
    rows = [
        (
            rc.CLAIMS[0],
            "run official_s0 (skip, 0.5 s crops, B=4)",
            "skipped 6 of 12 = 50% (95% CI 25%-75%) of updates",
            "consistent",
        )
    ]
    for crop in (0.5, 1, 2):
        rows.append((rc.CLAIMS[0], f"audit: {REAL}, clean/noisy, {crop:g} s crops",
                     "failed crops 0 of 25 (95% upper bound 13%); implied skip at B=4: 0% (95% CI 0%-44%)",
                     "below the claim"))  # fmt: skip
    md = rv.claims_markdown(pd.DataFrame(rows, columns=["claim", "condition", "measured", "verdict"]))
    assert "holds only in the runs' logs (50%); in the audit, at most 0%." in md
