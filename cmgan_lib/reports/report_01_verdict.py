"""Notebook 01's closing verdict: the claims table (`report_01_claims`) summarised per claim, with one generated
headline sentence each (where it holds, by the variable that decides it) and the markdown the notebook shows."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd


def _split_verdicts(g: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A claim's rows as (holds, does not hold, undecided: inconclusive or not measured)."""
    holds = g[g["verdict"].str.startswith(("consistent", "supported", "possible"))]
    fails = g[g["verdict"].str.startswith(("below", "above", "refuted"))]
    return holds, fails, g.drop(holds.index.union(fails.index))


def _undecided_text(rest: pd.DataFrame) -> str:
    return ", ".join(f"{n} {v}" for v, n in rest["verdict"].value_counts().items())


def claims_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: the conditions under which it holds (verdict consistent/supported), those under which
    it does not, and how many the data did not decide (by verdict; each one is in `claims_table`)."""
    rows = []
    for claim, g in table.groupby("claim", sort=False):
        holds, fails, rest = _split_verdicts(g)
        rows.append(dict(claim=claim, holds_under="; ".join(holds["condition"]) or "none measured",
                         not_under="; ".join(fails["condition"]) or "none measured",
                         undecided=_undecided_text(rest)))  # fmt: skip
    return pd.DataFrame(rows)


# What decides a claim: the variables its conditions vary in, read back from `claims_table`'s own wording (so the
# table stays four plain columns), in the order a reader would name them.
_CONDITION_VARIABLES = {
    "crop length": r"([\d.]+) s crops",
    "corpus": r"^(?:audit: )?([^:,]+?)(?:, clean/|: \d+ crops)",
    "pair type": r"(clean/noisy|clean/estimate)",
    "strategy": r"^run \S+ \((skip|batch_mean|masked),",
    "source": r"^(audit|run)\b",
}


_MEASURED_ANCHORS = r"(?:skip at B=\d+: |skipped |would skip |disc_loss |= )"


def condition_variables(condition: str) -> dict[str, object]:
    """A claims_table condition as {variable: value} (crop length in seconds as a float; missing ones left out)."""

    found: dict[str, object] = {}
    for name, pattern in _CONDITION_VARIABLES.items():
        m = re.search(pattern, condition)
        if m:
            found[name] = float(m.group(1)) if name == "crop length" else m.group(1)
    return found


def measured_value(measured: str) -> tuple[float, str]:
    """The headline number of a claims_table `measured` cell and its unit ("%" or ""): the implied or logged skip
    rate, the mean disc_loss, the largest PESQ change. (nan, "") when there is none."""

    found = list(re.finditer(_MEASURED_ANCHORS + r"(?:(\d+) of \d+ (?:= )?)?(\(|[-+\d.eE]+)(%?)", measured))
    if not found:
        return math.nan, ""
    m = found[-1]  # the last quantity: the skip rate after the label failures it follows from
    if m.group(2) == "(":  # "0 of n (95% upper bound ...)": no event
        return (0.0, "%") if m.group(1) == "0" else (math.nan, "")
    try:
        return float(m.group(2)), m.group(3)
    except ValueError:
        return math.nan, ""


def _values_text(values: list[float], unit: str) -> str:
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    return f"{lo:.3g}{unit}" if lo == hi else f"{lo:.3g}{'-' if unit else ' to '}{hi:.3g}{unit}"


def _deciding_variables(rows: list[dict], holds: list[bool]) -> tuple[list[str], bool]:
    """The fewest variables (one, else two) whose values seen where the claim holds tell exactly where it holds;
    else the single variable that tells it best (and False: the rule has exceptions)."""
    from itertools import combinations

    names = [n for n in _CONDITION_VARIABLES if len({r.get(n) for r in rows}) > 1]

    def errors(chosen) -> int:
        seen = {n: {r.get(n) for r, h in zip(rows, holds, strict=True) if h} for n in chosen}
        return sum(all(r.get(n) in seen[n] for n in chosen) != h for r, h in zip(rows, holds, strict=True))

    def named(chosen) -> bool:  # where it holds has a value of each: "holds only on the <nothing>" says nothing
        return all(any(r.get(n) is not None for r, h in zip(rows, holds, strict=True) if h) for n in chosen)

    def contrasted(chosen) -> bool:  # where it does not hold is named too ("in the audit", not "elsewhere")
        return all(any(r.get(n) is not None for r, h in zip(rows, holds, strict=True) if not h) for n in chosen)

    for k in (1, 2):
        exact = [list(c) for c in combinations(names, k) if named(c) and errors(c) == 0]
        if exact:
            return next((c for c in exact if contrasted(c)), exact[0]), True
    best = min([n for n in names if named([n])], key=errors, default=None)
    return ([best] if best else []), False


def _side_text(name: str, values: set, other: set, at: bool = False) -> str:
    """One variable's values in words: 'with 0.5 s crops', 'with crops of 1 s and longer' (`at`: 'at 1 s and
    longer'), 'on the synthetic corpus (train)', 'under batch_mean'."""
    values = {v for v in values if v is not None}
    if name == "crop length":
        ordered = sorted(values)
        others = sorted(v for v in other if v is not None)
        if others and len(ordered) > 1 and min(ordered) > max(others):
            span = f"{min(ordered):g} s and longer"
        elif others and len(ordered) > 1 and max(ordered) < min(others):
            span = f"{max(ordered):g} s and shorter"
        else:
            listed = " and ".join(f"{v:g}" for v in ordered) + " s"
            return f"at {listed}" if at else f"with {listed} crops"
        return f"at {span}" if at else f"with crops of {span}"
    label = {"corpus": "on the", "pair type": "on", "strategy": "under", "source": "in"}[name]
    words = {"audit": "the audit", "run": "the runs' logs"}
    pairs = " pairs" if name == "pair type" else ""
    return f"{label} " + " and ".join(f"{words.get(v, v)}{pairs}" for v in sorted(values, key=str))


def claim_headline(g: pd.DataFrame) -> str:
    """One sentence for a claim's verdict: where it holds, by the variable that decides it (crop length, corpus,
    pair type, strategy), with the range of measured values; generated from its claims_table rows, so a reader
    gets what the list of conditions supports before reading the list."""
    holds, fails, rest = _split_verdicts(g)
    decided = pd.concat([holds, fails])
    if not len(decided):
        if (rest["verdict"] == "not measured").all():
            return "not measured here"
        return f"not decided by the data here ({_undecided_text(rest)})"  # measured, but no row decides it
    measured = [measured_value(m) for m in decided["measured"]]
    unit = next((u for v, u in measured if np.isfinite(v)), "")
    value = dict(zip(decided.index, (v for v, _ in measured), strict=True))
    held = _values_text([value[i] for i in holds.index], unit)
    fail_values = [value[i] for i in fails.index if np.isfinite(value[i])]
    bound = f"measured {_values_text(fail_values, unit)}" if fail_values else ""
    if fail_values and fails["verdict"].str.startswith("below").all():
        bound = f"at most {max(fail_values):.3g}{unit}"
    elif fail_values and fails["verdict"].str.startswith("above").all():
        bound = f"at least {min(fail_values):.3g}{unit}"
    held_note, bound_note = (f" ({held})" if held else ""), (f", {bound}" if bound else "")
    n = len(decided)
    if not len(fails):
        return f"holds wherever it was measured ({n} condition{'s' if n > 1 else ''}{'; ' + held if held else ''})"
    if not len(holds):
        return f"does not hold wherever it was measured ({n} condition{'s' if n > 1 else ''}{bound_note})"
    rows = [condition_variables(c) for c in decided["condition"]]
    is_held = [i in holds.index for i in decided.index]
    chosen, exact = _deciding_variables(rows, is_held)
    yes = {v: {r.get(v) for r, h in zip(rows, is_held, strict=True) if h} for v in chosen}
    no = {v: {r.get(v) for r, h in zip(rows, is_held, strict=True) if not h} for v in chosen}
    where = " ".join(_side_text(v, yes[v], no[v]) for v in chosen)
    if not chosen:  # the conditions name no variable this function reads
        return f"holds under {len(holds)} of {n} conditions{held_note}; under the others{bound_note or ' not'}"
    if not exact:
        return f"holds under {len(holds)} of {n} conditions, most {where}{held_note}; elsewhere{bound_note or ' not'}"
    if len(chosen) == 1:
        v, others = chosen[0], no[chosen[0]] - yes[chosen[0]] - {None}
        other = _side_text(v, others, yes[v], at=True) if others else "elsewhere"  # a missing value: unnamed
        return f"holds only {where}{held_note}; {other}{bound_note or ' not'}"
    return f"holds only {where}{held_note}; elsewhere{bound_note or ' not'}"


def claims_markdown(table: pd.DataFrame) -> str:
    """The written verdict of notebook 01, generated from the claims table (it changes when the data change)."""
    lines = ["## Verdict", ""]
    for claim, g in table.groupby("claim", sort=False):
        holds, fails, rest = _split_verdicts(g)
        lines.append(f"**{claim}**: {claim_headline(g)}.")
        lines.append("")
        for label, part in (("Holds", holds), ("Does not hold", fails)):
            if len(part):
                lines.append(f"- {label}:")
                lines += [f"    - {c} ({m})" for c, m in zip(part["condition"], part["measured"], strict=True)]
        if len(rest):
            lines.append(f"- Not decided by the data: {len(rest)} condition(s) ({_undecided_text(rest)}; "
                         "listed in claims.csv)")  # fmt: skip
        lines.append("")
    return "\n".join(lines)
