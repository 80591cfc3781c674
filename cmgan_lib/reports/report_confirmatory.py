"""Notebook 04's words, tables and figures for the confirmatory analysis (numbers: `confirmatory`): the bottom
line, the family tables with Holm-adjusted intervals and verdicts, the pairing, the dose-response, collapse,
the sensitivity analyses, the early-stopping replay and clipping; small multiples, a forest plot and the
dose-response plot in the style of `plotting`."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cmgan_lib.analysis.confirmatory import (
    DIFFERS,
    INCONCLUSIVE,
    NOT_MEASURED,
    PLAN_DOC,
    REFERENCE,
    Analysis,
    dose_data,
)
from cmgan_lib.analysis.stats import mean_interval
from cmgan_lib.core.paths import shown_path
from cmgan_lib.reports.plotting import EPOCH_LABEL, integer_ticks, legend_outside
from cmgan_lib.reports.report_02_training import model_parts, regime_parts

ENDPOINT_SHORT = {"late_val_pesq": "late validation PESQ", "drop_smoothed": "smoothed drop",
                  "best_val_pesq": "best validation PESQ"}  # fmt: skip


def _ci(lo: float, hi: float, d: int = 3) -> str:
    return f"{lo:+.{d}f} to {hi:+.{d}f}" if np.isfinite(lo) and np.isfinite(hi) else "n/a"


def no_runs_markdown(run_root: str | os.PathLike) -> str:
    """What to run when the run root holds no finished run."""
    return (f"**No finished runs under `{shown_path(run_root)}`**: start the confirmatory grid with "
            "`cmgan ablate --grid configs/confirmatory_cpu.yaml --out runs/CONFIRMATORY_CPU --cpu-runs 2 "
            "--no-notebooks` (hours on 2 cores; it resumes), then run this notebook again. "
            "Nothing below is shown.")  # fmt: skip


def header_markdown(a: Analysis, plan_commit: str = "") -> str:
    """The runs found, the seeds per variant, the plan's commit, INTERIM or EXPLORATORY."""
    done = ", ".join(f"`{v}` {n}" for v, n in a.seeds_done.items())
    text = (f"{len(a.endpoints)} finished runs under `{shown_path(a.runs.root)}`; seeds per variant: {done}. "
            f"Analysis plan: `{PLAN_DOC}`")  # fmt: skip
    text += f" (last changed in commit {plan_commit})." if plan_commit else "."
    if a.runs.unfinished:
        text += (
            f" Not counted: {len(a.runs.unfinished)} runs without `done.json` (still running or failed; in a "
            "shared copy: an epoch log shorter than its config's epochs, e.g. a run that stopped early)."
        )
    if a.interim:
        text += f" **INTERIM**: fewer than the planned {len(a.planned_seeds)} seeds; no verdict is final."
    if not a.planned_seeds:
        text += " **EXPLORATORY** data (not the confirmatory grid): nothing here is evidence."
    return text


def bottom_line_markdown(lines: Sequence[str]) -> str:
    return "\n".join(f"- {x}" for x in lines)


def family_display(fam: pd.DataFrame, endpoint: str | None = None) -> pd.DataFrame:
    """One row per contrast: the difference, unadjusted and Holm-adjusted intervals, Welch beside, p-values,
    p_TOST and the verdict."""
    f = fam if endpoint is None else fam[fam.endpoint == endpoint]
    out = pd.DataFrame({
        "contrast": [f"{t} - {r}" for t, r in zip(f.treatment, f.reference, strict=True)],
        "endpoint": f.endpoint.map(ENDPOINT_SHORT), "method": f.method, "seeds": f.n,
        "difference": f.difference.map(lambda x: f"{x:+.3f}"),
        "95% CI": [_ci(lo, hi) for lo, hi in zip(f.ci95_low, f.ci95_high, strict=True)],
        "Holm-adjusted CI": [f"{_ci(lo, hi)} ({100 * lv:.2f}%)" if np.isfinite(lv) else "n/a"
                             for lo, hi, lv in zip(f.adj_low, f.adj_high, f.holm_level, strict=True)],
        "90% CI": [_ci(lo, hi) for lo, hi in zip(f.ci90_low, f.ci90_high, strict=True)],
        "p (Holm)": [f"{p:.3f} ({q:.3f})" for p, q in zip(f.p, f.p_holm, strict=True)],
        "p TOST (Holm)": [f"{p:.3f} ({q:.3f})" for p, q in zip(f.p_tost, f.p_tost_holm, strict=True)],
        "Welch 95% CI": [_ci(lo, hi) for lo, hi in zip(f.welch_low, f.welch_high, strict=True)],
        "verdict": f.verdict,
    })  # fmt: skip
    return out.drop(columns="endpoint") if endpoint is not None else out


def pairing_markdown(fam: pd.DataFrame) -> str:
    """Which contrasts were paired, and the printed reason where the pairing failed (Welch instead)."""
    if not len(fam):
        return "No contrast has both variants."
    f = fam.drop_duplicates(["treatment", "reference"])
    failed = f[f.method != "paired"]
    text = (f"Pairing checked on the first step's losses: {len(f) - len(failed)} of {len(f)} contrasts paired by "
            "seed.")  # fmt: skip
    for r in failed.itertuples():
        text += f"\n- `{r.treatment} - {r.reference}`: **Welch instead**: {r.pairing_reason}."
    return text


def dose_markdown(a: Analysis) -> str:
    """The dose-response slopes (designed and applied skip rate) in words."""
    d = a.dose
    if not len(d) or not np.isfinite(d.slope).any():
        return "Dose-response: too few runs for a slope with seed fixed effects."
    lines = []
    for r in d.itertuples():
        if not np.isfinite(r.slope):
            continue
        x = "designed skip fraction" if r.x == "designed_skip" else "applied skip rate (sensitivity)"
        flag = "flat within the margin" if r.flat else ("excludes 0" if r.significant else "neither")
        lines.append(f"- {ENDPOINT_SHORT[r.endpoint]} on the {x}: {r.slope:+.3f} per 100% (95% CI "
                     f"{_ci(r.ci95_low, r.ci95_high)}; 90% CI {_ci(r.ci90_low, r.ci90_high)}; {r.n} runs, "
                     f"{r.seeds} seeds, {r.df} df): {flag}.")  # fmt: skip
    return "\n".join(lines)


def collapse_display(a: Analysis) -> pd.DataFrame:
    """Per variant: k of n seeds collapse under each null (phi), Wilson 95%."""
    c = a.collapse
    if not len(c):
        return pd.DataFrame()
    c = c.assign(cell=[f"{k} of {n} ({100 * lo:.0f}-{100 * hi:.0f}%)" for k, n, lo, hi in
                       zip(c.k, c.n, c.low, c.high, strict=True)])  # fmt: skip
    wide = c.pivot(index="variant", columns="phi", values="cell")
    wide.columns = [f"AR(1) phi {p:g}" + (" (plan)" if p == a.plan.phi else "") for p in wide.columns]
    order = [f"AR(1) phi {p:g}" + (" (plan)" if p == a.plan.phi else "") for p in a.plan.phis]
    return wide[[c for c in order if c in wide.columns]].reset_index()


def loso_display(a: Analysis) -> pd.DataFrame:
    lo = a.loso
    if not len(lo):
        return pd.DataFrame()
    return pd.DataFrame({"contrast": [f"{t} - {r}" for t, r in zip(lo.treatment, lo.reference, strict=True)],
                         "all seeds": lo.difference.map(lambda x: f"{x:+.3f}"),
                         "leave one seed out: range": [_ci(a_, b_) for a_, b_ in zip(lo.loso_min, lo.loso_max,
                                                                                     strict=True)]})  # fmt: skip


def replay_display(a: Analysis, variant: str | None = None) -> pd.DataFrame:
    r = a.replay
    if not len(r):
        return pd.DataFrame()
    r = r[r.variant == variant] if variant else r
    return pd.DataFrame({
        "rule": r.rule, "runs of": r.variant,
        "stopped": [f"{s} of {n}" for s, n in zip(r.stopped, r.runs, strict=True)],
        "stop epoch": r.stop_epoch.map(lambda x: f"{x:.1f}"), "kept epoch": r.kept_epoch.map(lambda x: f"{x:.1f}"),
        "kept - late PESQ": [f"{m:+.3f} ({_ci(lo, hi)})" for m, lo, hi in
                             zip(r.kept_minus_late, r.kept_minus_late_low, r.kept_minus_late_high, strict=True)],
        "kept - best PESQ": [f"{m:+.3f} ({_ci(lo, hi)})" for m, lo, hi in
                             zip(r.kept_minus_best, r.kept_minus_best_low, r.kept_minus_best_high, strict=True)],
        "compute saved": r.saved.map(lambda x: f"{100 * x:.0f}%"),
    })  # fmt: skip


def clipping_markdown(a: Analysis) -> str:
    c = a.clipping
    if not len(c):
        return "No clipped run finished."
    per = ", ".join(f"`{r.run}` G {100 * r.clip_exceeded_g_frac:.0f}% / D {100 * r.clip_exceeded_d_frac:.0f}%"
                    for r in c.itertuples())  # fmt: skip
    return (f"Share of steps whose pre-clip gradient norm exceeded the clip ({c.grad_clip_norm.iloc[0]:g}): {per}. "
            "D's skipped updates have no norm and are not counted.")  # fmt: skip


def reread_display(table: pd.DataFrame, endpoint: str = "late_val_pesq") -> pd.DataFrame:
    """The exploration re-read: per data and seeds, each contrast's difference, Holm-adjusted CI and verdict."""
    if not len(table):
        return pd.DataFrame()
    t = table[table.endpoint == endpoint]
    return pd.DataFrame({
        "data": t.data, "seeds": t.seeds,
        "contrast": [f"{a} - {b}" for a, b in zip(t.treatment, t.reference, strict=True)],
        "paired difference": t.difference.map(lambda x: f"{x:+.3f}"),
        "95% CI": [_ci(lo, hi) for lo, hi in zip(t.ci95_low, t.ci95_high, strict=True)],
        "Holm-adjusted CI": [_ci(lo, hi) for lo, hi in zip(t.adj_low, t.adj_high, strict=True)],
        "Welch 95% CI": [_ci(lo, hi) for lo, hi in zip(t.welch_low, t.welch_high, strict=True)],
        "verdict": t.verdict,
    }).reset_index(drop=True)  # fmt: skip


# --------------------------------------------------------------------------------------------------- figures


def plot_small_multiples(a: Analysis, reference: str = REFERENCE):
    """One panel per variant: its seeds (thin coloured lines) against the reference's seeds (thin grey)."""
    import matplotlib.pyplot as plt

    e = a.runs.epochs
    variants = [v for v in a.plan.variants if v != reference and v in set(e.variant)]
    variants += sorted(set(e.variant) - set(variants) - {reference})
    if not variants:
        variants = [reference]
    cols = min(3, len(variants))
    rows = int(np.ceil(len(variants) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), sharex=True, sharey=True, squeeze=False)
    ref = e[e.variant == reference]
    for ax, v in zip(axes.flat, variants, strict=False):
        for _, g in ref.groupby("run"):
            ax.plot(g.epoch, g.val_pesq, color="0.6", lw=0.8, alpha=0.8)
        for _, g in e[e.variant == v].groupby("run"):
            ax.plot(g.epoch, g.val_pesq, color="C0", lw=0.9, alpha=0.9)
        ax.set_title(f"{v} (blue) vs {reference} (grey)", fontsize=10)
        integer_ticks(ax)
    for ax in axes.flat[len(variants) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(EPOCH_LABEL if cols == 1 else "epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("validation PESQ")
    fig.suptitle("Validation PESQ per epoch, every seed a thin line", y=1.0)
    fig.tight_layout()
    return fig


def plot_forest(fam: pd.DataFrame, margin: float, endpoint: str = "late_val_pesq", title: str = ""):
    """Paired differences with their unadjusted 95% (thin) and Holm-adjusted (thick) intervals, 0 and the
    equivalence margin drawn; verdict written beside each."""
    import matplotlib.pyplot as plt

    f = fam[fam.endpoint == endpoint].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8.5, 0.5 * len(f) + 1.4))
    y = np.arange(len(f))[::-1]
    ax.axvspan(-margin, margin, color="C2", alpha=0.12, label=f"equivalence margin ±{margin:g}")
    ax.axvline(0, color="0.3", lw=0.8)
    for yi, r in zip(y, f.itertuples(), strict=True):
        color = "C3" if r.differs else ("C2" if r.equivalent else "0.4")
        ax.plot([r.ci95_low, r.ci95_high], [yi, yi], color=color, lw=1.0)
        ax.plot([r.adj_low, r.adj_high], [yi, yi], color=color, lw=3.5, alpha=0.55, solid_capstyle="butt")
        ax.plot(r.difference, yi, "o", color=color, ms=5)
    ax.set_yticks(y, [f"{t} - {r}" + ("" if m == "paired" else " (Welch)") for t, r, m in
                      zip(f.treatment, f.reference, f.method, strict=True)])  # fmt: skip
    lim = np.nanmax(np.abs(np.r_[f.adj_low, f.adj_high, f.ci95_low, f.ci95_high, margin * 1.5]))
    ax.set_xlim(-lim * 1.05, lim * 1.05)
    for yi, r in zip(y, f.itertuples(), strict=True):
        ax.annotate(r.verdict, (1.01, yi), xycoords=("axes fraction", "data"), va="center", fontsize=9)
    ax.set_xlabel(f"difference in {ENDPOINT_SHORT.get(endpoint, endpoint)} (treatment - reference)")
    ax.set_title(title or f"Paired differences, {ENDPOINT_SHORT.get(endpoint, endpoint)}: 95% (thin) and "
                 "Holm-adjusted (thick) intervals", fontsize=11)  # fmt: skip
    ax.grid(axis="y", visible=False)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.08), frameon=False, fontsize=9)
    fig.tight_layout()
    return fig


def plot_dose_response(a: Analysis, endpoint: str | None = None):
    """Designed skip fraction against the endpoint, one line per seed, and the fitted seed-fixed-effects slope
    (drawn through the grand mean)."""
    import matplotlib.pyplot as plt

    endpoint = endpoint or a.plan.primary
    d = dose_data(a.endpoints, a.plan).sort_values("designed_skip")
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for i, (seed, g) in enumerate(d.groupby("seed")):
        ax.plot(100 * g.designed_skip, g[endpoint], "o-", color=f"C{i % 10}", lw=0.9, ms=3.5, alpha=0.8,
                label=f"seed {seed}")  # fmt: skip
    fit = a.dose[(a.dose.endpoint == endpoint) & (a.dose.x == "designed_skip")]
    if len(fit) and np.isfinite(fit.slope.iloc[0]) and len(d):
        r = fit.iloc[0]
        xs = np.array([0.0, 1.0])
        ys = d[endpoint].mean() + r.slope * (xs - d.designed_skip.mean())
        ax.plot(100 * xs, ys, color="black", lw=2.2, label=f"fitted: {r.slope:+.3f} per 100%\n"
                f"(95% CI {_ci(r.ci95_low, r.ci95_high)})")  # fmt: skip
    ax.set_xticks([100 * x for x in sorted(a.plan.dose)])
    ax.set_xlabel("discriminator updates skipped by design (%)")
    ax.set_ylabel(ENDPOINT_SHORT.get(endpoint, endpoint))
    names = ", ".join(f"{int(100 * x)}% = {v}" for x, v in sorted(a.plan.dose.items()))
    ax.set_title(f"Dose-response ({names})", fontsize=10)
    legend_outside(ax)
    fig.tight_layout()
    return fig


def write_tables(a: Analysis, out_dir: str | os.PathLike, more: Mapping[str, pd.DataFrame] | None = None) -> list:
    """Every table of the analysis as CSV under `out_dir` (per-run endpoints, families, dose, collapse, replay),
    and `more` (file name -> table: the replications')."""
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {"confirmatory_endpoints.csv": a.endpoints, "confirmatory_families.csv": a.families,
              "confirmatory_exploratory.csv": a.exploratory, "confirmatory_dose.csv": a.dose,
              "confirmatory_collapse_runs.csv": a.collapse_runs, "confirmatory_loso.csv": a.loso,
              "confirmatory_replay_runs.csv": a.replay_runs, "confirmatory_clipping.csv": a.clipping,
              **(more or {})}  # fmt: skip
    paths = []
    for name, table in tables.items():
        table.to_csv(out / name, index=False)
        paths.append(out / name)
    return paths


def csv_markdown(paths: Sequence) -> str:
    return f"Full tables: {', '.join(f'`{p.name}`' for p in paths)} in `{shown_path(paths[0].parent)}`."


def table(df: pd.DataFrame):
    """A table for display: left-aligned, no index column (the row numbers mean nothing here)."""
    from cmgan_lib.reports.plotting import left_aligned

    return left_aligned(df).hide(axis="index")


def replication_display(rep: pd.DataFrame) -> pd.DataFrame:
    """Family R: each replication's contrasts (late validation PESQ) as `family_display` shows them."""
    if not len(rep):
        return pd.DataFrame()
    return (
        family_display(rep)
        .drop(columns="endpoint")
        .assign(replication=rep.replication.to_numpy(), seeds=[seeds_words(x) for x in rep.itertuples()])
        .pipe(lambda d: d[["replication", *(c for c in d.columns if c != "replication")]])
    )


NO_SPEAKER_SCORES = ("R-vb per speaker: no finished real-speech run has test scores yet (RUN/test/, written as "
                     "each run of `configs/replication_vb_cpu.yaml` finishes).")  # fmt: skip


def per_speaker_display(spk: pd.DataFrame) -> pd.DataFrame:
    """R-vb per speaker (exploratory, unadjusted): each contrast's paired difference in mean test PESQ of the
    runs' best checkpoints, with its 95% interval."""
    if not len(spk):
        return pd.DataFrame()
    return pd.DataFrame({
        "speaker": spk.speaker, "test files": spk.files,
        "contrast": [f"{t} - {r}" for t, r in zip(spk.treatment, spk.reference, strict=True)],
        "method": spk.method, "seeds": spk.n, "difference": spk.difference.map(lambda x: f"{x:+.3f}"),
        "95% CI (unadjusted)": [_ci(lo, hi) for lo, hi in zip(spk.ci95_low, spk.ci95_high, strict=True)],
        "verdict (exploratory)": spk.verdict,
    })  # fmt: skip


# ------------------------------------------------------------------------------------- the bottom line (section 9)

FIX_CONTRASTS = {  # proposal -> (treatment, reference) of family F
    "batch-mean labels": ("batch_mean_p56", "official_p56"),
    "clipping at 5": ("clip5", "official"),
}
SKIP_CONTRAST = ("official_p56", "official")
ES_RULE = "document"  # the fix document's rule (validation loss, patience 15)


def advice(verdict_text: str, difference: float, good: str = "apply it", bad: str = "it hurts") -> str:
    """Plan section 9's words for a verdict: apply it / it does not matter / it hurts / not settled."""
    if verdict_text == NOT_MEASURED or not np.isfinite(difference):
        return "not measured yet"
    if verdict_text == INCONCLUSIVE:
        return "not settled"
    direction = good if difference > 0 else bad
    if verdict_text.startswith(DIFFERS) and "less than" in verdict_text:
        return f"{direction}, but by less than the margin (it does not matter in practice)"
    if verdict_text.startswith(DIFFERS):
        return direction
    return "it does not matter"


def _interval_words(lo: float, hi: float) -> str:
    return f"{lo:+.3f} to {hi:+.3f}" if np.isfinite(lo) and np.isfinite(hi) else "no interval"


def contrast_words(row: pd.Series) -> str:
    """'t - r: +0.012 late validation PESQ (paired 95% CI .., Holm-adjusted .., n seeds; verdict)'."""
    how = "paired" if row.method == "paired" else "Welch (pairing failed)"
    return (f"`{row.treatment}` - `{row.reference}`: {row.difference:+.3f} late validation PESQ ({how} 95% CI "
            f"{_interval_words(row.ci95_low, row.ci95_high)}; Holm-adjusted {_interval_words(row.adj_low, row.adj_high)}; "
            f"n = {row.n} seeds; {row.verdict})")  # fmt: skip


def seeds_words(x) -> str:
    """'3 of 5 planned seeds', or '3 seeds' when the replication's plan of seeds is unknown."""
    planned = float(getattr(x, "planned_seeds", math.nan))
    return f"{x.seeds} of {planned:.0f} planned seeds" if np.isfinite(planned) else f"{x.seeds} seeds"


def replication_words(rep: pd.DataFrame | None, contrast: tuple[str, str], main: pd.Series | None) -> str:
    """Which replications agree with the main grid's verdict (same verdict and, for differs, the same sign). One
    with no verdict yet (fewer than 2 seeds) neither agrees nor disagrees; one with fewer seeds than its grid plans
    agrees or not 'so far'."""
    if rep is None or not len(rep) or main is None:
        return ""
    r = rep[(rep.treatment == contrast[0]) & (rep.reference == contrast[1])]
    if not len(r):
        return ""

    def key(v, d):
        return (v.split(",")[0], np.sign(d) if v.startswith(DIFFERS) else 0)

    same = key(main.verdict, main.difference)
    parts = []
    for x in r.itertuples():
        if x.verdict == NOT_MEASURED or not np.isfinite(x.difference):
            parts.append(f"{x.replication} not measured yet ({seeds_words(x)})")
            continue
        planned = float(getattr(x, "planned_seeds", math.nan))
        so_far = " so far" if np.isfinite(planned) and x.seeds < planned else ""
        parts.append(f"{x.replication} {'agrees' if key(x.verdict, x.difference) == same else 'does not agree'}"
                     f"{so_far} ({x.difference:+.3f}, {x.verdict}, {seeds_words(x)})")  # fmt: skip
    return " Replications (family R, Holm): " + "; ".join(parts) + "."


def scope_words(a: Analysis) -> str:
    """The regime the runs trained in, read from their own configs (notebook 02's regime parts) and logs, so that
    a sentence of the bottom line names the grid it was measured on, whichever grid that is."""
    configs = a.runs.configs
    epochs = f", {int(a.endpoints.epochs.max())} epochs" if len(a.endpoints) else ""
    if configs is None or not len(configs):
        return f"the runs' regime (no readable config{epochs})"
    regimes = pd.Series([", ".join([*regime_parts(c), *model_parts(c)]) for _, c in configs.iterrows()])
    counts = regimes.value_counts(sort=True)
    other = (f"; {len(configs) - counts.iloc[0]} of the {len(configs)} runs in {len(counts) - 1} other regime"
             f"{'s' if len(counts) > 2 else ''}" if len(counts) > 1 else "")  # fmt: skip
    return f"this regime ({counts.index[0]}{epochs}{other})"


def interim_label(a: Analysis) -> str:
    """'INTERIM (...)' with the finished seeds per variant when fewer than planned finished; '' otherwise."""
    if not a.interim:
        return ""
    done = ", ".join(f"`{v}` {n}" for v, n in a.seeds_done.items())
    return f"**INTERIM**: fewer than the planned {len(a.planned_seeds)} seeds finished ({done}); not the verdict."


def early_stopping_words(a: Analysis, rule: str = ES_RULE, variant: str = REFERENCE) -> str:
    """The replay of the fix document's rule on `official`: kept checkpoint's validation PESQ - late PESQ over
    seeds (95% interval; equivalence by the 90% interval inside the margin; unadjusted) and the compute saved."""
    r = a.replay_runs
    g = r[(r.rule == rule) & (r.variant == variant)] if len(r) else r
    if not len(g):
        return f"**Early stopping** (`{rule}` rule): not measured yet."
    scope = scope_words(a)
    iv95, iv90 = mean_interval(g.kept_minus_late), mean_interval(g.kept_minus_late, 1 - 2 * a.plan.alpha)
    m = a.plan.margin
    if not np.isfinite(iv95.low):
        words = "not settled"
    elif iv95.low > 0 or iv95.high < 0:
        words = "apply it" if iv95.mean > 0 else "it hurts"
        if iv90.low > -m and iv90.high < m:
            words += ", but by less than the margin (it does not matter in practice)"
    elif iv90.low > -m and iv90.high < m:
        words = "it does not matter"
    else:
        words = "not settled"
    monitor, patience, _ = a.plan.replay_rules[rule]
    best = mean_interval(g.kept_minus_best)
    return (f"**Early stopping** ({monitor}, patience {patience}, replayed over the logs of `{variant}`): {words}. "
            f"The checkpoint it keeps minus training to the end: {iv95.mean:+.3f} validation PESQ (95% CI "
            f"{_interval_words(iv95.low, iv95.high)}, n = {iv95.n} runs, unadjusted); minus the best epoch: {best.mean:+.3f}; "
            f"it stops {int(g.stopped.sum())} of {len(g)} runs, saving {100 * g.saved.mean():.0f}% of the epochs "
            f"on average. Scope: {scope}; the kept PESQ is read on the validation split that chose it.")  # fmt: skip


def denormalized_words(claims_csv: str | os.PathLike) -> str | None:
    """The bottom line's sentence on denormalized PESQ, from notebook 01's claims.csv (claim c, its scale audit:
    PESQ of each crop as is and multiplied by the training normalizer c); None when there is no such file or it
    has no measured row. Why here: the fix document's fourth proposal is no training arm, so its verdict is the
    audit's."""
    from cmgan_lib.reports.report_01_claims import CLAIMS

    if not os.path.isfile(claims_csv):
        return None
    claims = pd.read_csv(claims_csv)
    rows = claims[(claims.claim == CLAIMS[2]) & (claims.verdict != "not measured")] if len(claims) else claims
    if not len(rows):
        return None
    refuted = rows.verdict.str.startswith("refuted").all()
    words = "it does not matter (PESQ is scale-invariant)" if refuted else "it matters: scaling changed PESQ"
    each = "; ".join(f"{r.condition}: {r.measured}" for r in rows.itertuples())
    return f"{words}. Notebook 01's scale audit, {each}."


def bottom_line(a: Analysis, replications: pd.DataFrame | None = None, denormalized: str | None = None) -> list[str]:
    """Plan section 9: one sentence per proposal of the fix document and for skipping itself, each with its
    interval and scope; INTERIM with seed counts first when fewer than the planned seeds finished.
    `denormalized`: the measured sentence of notebook 01's scale audit, when the caller has it."""
    out = [label] if (label := interim_label(a)) else []
    scope = scope_words(a)
    skip = a.contrast(*SKIP_CONTRAST)
    if skip is not None:
        words = advice(skip.verdict, skip.difference, good="it helps", bad="it hurts")
        dose = a.dose[(a.dose.endpoint == a.plan.primary) & (a.dose.x == "designed_skip")] if len(a.dose) else a.dose
        slope = ""
        if len(dose) and np.isfinite(dose.slope.iloc[0]):
            d = dose.iloc[0]
            slope = (f" Dose-response over 0/56/82/100% skipped (seed fixed effects): {d.slope:+.3f} late PESQ per "
                     f"100% skipped (95% CI {_interval_words(d.ci95_low, d.ci95_high)}, {d.n} runs)"
                     + ("; flat within the margin" if d.flat else "; excludes 0" if d.significant else "")
                     + ".")  # fmt: skip
        p82 = a.contrast("official_p82", "official")
        rep = replication_words(replications, ("official_p82", "official"), p82)
        out.append(f"**Skipped discriminator updates** (56% skipped against none): {words}. {contrast_words(skip)}."
                   f"{slope}{rep} Scope: {scope}.")  # fmt: skip
    for what, (t, r) in FIX_CONTRASTS.items():
        row = a.contrast(t, r)
        if row is None:
            out.append(f"**{what.capitalize()}**: not measured yet (`{t}` - `{r}` has no finished runs).")
            continue
        extra = ""
        if t == "clip5" and len(a.clipping):
            c = a.clipping
            extra = (
                f" The clip acts on {100 * c.clip_exceeded_g_frac.mean():.0f}% of G's steps and "
                f"{100 * c.clip_exceeded_d_frac.mean():.0f}% of D's updates (mean over {len(c)} runs)."
            )
        out.append(f"**{what.capitalize()}**: {advice(row.verdict, row.difference)}. {contrast_words(row)}.{extra} "
                   f"Scope: {scope}.")  # fmt: skip
    out.append(early_stopping_words(a))
    out.append(
        "**Denormalized PESQ**: "
        + (
            denormalized
            or "not a training arm: PESQ is scale-invariant, and "
            "notebook 01's scale audit measures it (its claims table)."
        )
    )
    return out
