"""Notebook 04's words, tables and figures for the confirmatory analysis (numbers: `confirmatory`): the bottom
line, the family tables with Holm-adjusted intervals and verdicts, the pairing, the dose-response, collapse,
the sensitivity analyses, the early-stopping replay and clipping; small multiples, a forest plot and the
dose-response plot in the style of `plotting`."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cmgan_lib.analysis.confirmatory import PLAN_DOC, REFERENCE, Analysis, dose_data
from cmgan_lib.core.paths import shown_path
from cmgan_lib.reports.plotting import EPOCH_LABEL, integer_ticks, legend_outside

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


def write_tables(a: Analysis, out_dir: str | os.PathLike) -> list:
    """Every table of the analysis as CSV under `out_dir` (per-run endpoints, families, dose, collapse, replay)."""
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {"confirmatory_endpoints.csv": a.endpoints, "confirmatory_families.csv": a.families,
              "confirmatory_exploratory.csv": a.exploratory, "confirmatory_dose.csv": a.dose,
              "confirmatory_collapse_runs.csv": a.collapse_runs, "confirmatory_loso.csv": a.loso,
              "confirmatory_replay_runs.csv": a.replay_runs, "confirmatory_clipping.csv": a.clipping}  # fmt: skip
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
        .assign(replication=rep.replication.to_numpy())
        .pipe(lambda d: d[["replication", *d.columns[:-1]]])
    )
