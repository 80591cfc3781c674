"""The confirmatory analysis of issue 33, exactly as docs/analysis_plan.md fixes it (what the code reads of the plan
is configs/analysis_plan.yaml): per-run endpoints from the epoch logs, paired contrasts whose pairing is checked on
the first step's losses (else Welch, with the reason), Holm within each family with the matching adjusted
intervals, TOST at the equivalence margin, the dose-response over the skip fraction with seed fixed effects,
collapse per run under a calibrated AR(1) null, the sensitivity analyses, the early-stopping replay, how often
clipping acts, and the generated bottom line for practitioners. Presentation is `report_confirmatory`.

Why a module of its own: the plan was frozen before the runs; every number of the confirmatory report must come
from one place that follows it, with tests, so that nothing is chosen after seeing the data.
Epochs are numbered from 1, as `runs.load_runs` converts them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats as _st

from cmgan_lib.analysis.stats import mean_interval, wilson
from cmgan_lib.analysis.training_analysis import (
    SMOOTH_WINDOW,
    load_run_configs,
    residual_sd,
    run_summary,
    smoothed_drop,
    smoothed_drops,
    smoothed_rows,
    tail_mean,
)
from cmgan_lib.core.paths import repo_root, run_config
from cmgan_lib.training.runs import EPOCH_LOG, TEST_SCORES, find_runs, load_runs, read_log

PLAN_YAML = "configs/analysis_plan.yaml"
PLAN_DOC = "docs/analysis_plan.md"
REFERENCE = "official"

ENDPOINTS = {
    "late_val_pesq": "late validation PESQ (mean of the last 5 epochs)",
    "drop_smoothed": "smoothed drop (peak of the 5-epoch mean before the last 5 epochs - mean of the last 5)",
    "best_val_pesq": "best validation PESQ (max over epochs)",
}

# plan section 4: exploratory contrasts, no adjustment, labelled so
EXPLORATORY_CONTRASTS = (("frozen_disc", "no_disc"), ("batch_mean_p56", "official"), ("masked_p56", "official"))

DIFFERS, DIFFERS_SMALL, EQUIVALENT, INCONCLUSIVE, NOT_MEASURED = (
    "differs", "differs, by less than {m:g}", "equivalent within {m:g}", "inconclusive", "not measured")  # fmt: skip


# ----------------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Plan:
    """What the code reads of the analysis plan (configs/analysis_plan.yaml and the main grid it names)."""

    alpha: float
    margin: float
    primary: str
    secondary: tuple[str, ...]
    contrasts: tuple[tuple[str, str], ...]  # family F (treatment, reference), from the main grid's comparisons
    variants: tuple[str, ...]  # the main grid's variants
    seeds: tuple[int, ...]  # the main grid's planned seeds
    epochs: int
    dose: dict[float, str]  # designed skip fraction -> variant
    pairing_columns: tuple[str, ...]
    rtol: float
    phi: float
    phi_sensitivity: tuple[float, ...]
    draws: int
    quantile: float
    replay_rules: dict[str, tuple[str, int, float]]  # rule -> (monitor, patience, min_delta)
    commit: str = ""

    @property
    def endpoints(self) -> tuple[str, ...]:
        return (self.primary, *self.secondary)

    @property
    def phis(self) -> tuple[float, ...]:
        return (self.phi, *self.phi_sensitivity)


def load_plan(path: str | os.PathLike = PLAN_YAML) -> Plan:
    """The plan's YAML and the main grid it names (resolved from the project root above the YAML)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no analysis plan (configs/analysis_plan.yaml of issue 33)")
    p = yaml.safe_load(path.read_text())
    root = repo_root(path.resolve().parent)
    grid_path = root / p["grids"]["main"]
    if not grid_path.is_file():
        raise FileNotFoundError(f"{path}: its main grid {p['grids']['main']} does not exist")
    grid = yaml.safe_load(grid_path.read_text())
    rules = {k: (str(v[0]), int(v[1]), float(v[2])) for k, v in p["early_stopping_replay"].items()}
    return Plan(
        alpha=float(p["alpha"]), margin=float(p["equivalence_margin"]), primary=p["endpoints"]["primary"],
        secondary=tuple(p["endpoints"]["secondary"]), contrasts=tuple(tuple(c) for c in grid["comparisons"]),
        variants=tuple(grid["variants"]), seeds=tuple(int(s) for s in grid["seeds"]),
        epochs=int(grid.get("overrides", {}).get("epochs", 0)),
        dose={float(k): v for k, v in p["dose_response"].items()},
        pairing_columns=tuple(p["pairing_check"]["columns"]), rtol=float(p["pairing_check"]["rtol"]),
        phi=float(p["collapse"]["phi"]), phi_sensitivity=tuple(float(x) for x in p["collapse"]["phi_sensitivity"]),
        draws=int(p["collapse"]["draws"]), quantile=float(p["collapse"]["quantile"]), replay_rules=rules,
    )  # fmt: skip


def plan_commit(root: str | os.PathLike | None = None) -> str:
    """The last commit that touched the plan (docs and YAML): what the report names; '' outside a git checkout."""
    import subprocess

    root = Path(root) if root else repo_root()
    try:
        out = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%h %cI", "--", PLAN_DOC, PLAN_YAML],
                             capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


# --------------------------------------------------------------------------------------------- runs and endpoints


def finished_runs(run_root: str | os.PathLike) -> list[Path]:
    """Run folders that count: those with done.json. A shared report's copy keeps only the logs (no done.json and
    no checkpoint): there a run counts when its epoch log reaches its config's `epochs`. A live run without
    done.json never counts (it holds last.pt once an epoch finished)."""
    out = []
    for d in find_runs(run_root):
        if (d / "done.json").is_file():
            out.append(d)
        elif not any(d.glob("*.pt")):
            want = run_config(d).get("epochs")
            if want is not None and len(read_log(d / EPOCH_LOG)) >= int(want):
                out.append(d)
    return out


@dataclass
class Runs:
    """The finished runs of one run root: epoch and step logs (tagged run/variant/seed) and their configs."""

    root: Path
    epochs: pd.DataFrame
    steps: pd.DataFrame
    configs: pd.DataFrame
    unfinished: list[str] = field(default_factory=list)


def load_finished(run_root: str | os.PathLike, exclude_seeds: Sequence[int] = ()) -> Runs:
    """The finished runs under `run_root` (see `finished_runs`), without the seeds in `exclude_seeds`."""
    dirs = [d for d in finished_runs(run_root)]
    done = {d.name for d in dirs}
    unfinished = [d.name for d in find_runs(run_root) if d.name not in done]
    epochs, steps = load_runs(dirs) if dirs else load_runs([])
    configs = load_run_configs(dirs) if dirs else pd.DataFrame(columns=["run"])
    if exclude_seeds and len(epochs):
        keep = ~epochs.seed.isin(list(exclude_seeds))
        epochs = epochs[keep].reset_index(drop=True)
        steps = steps[steps.run.isin(set(epochs.run))].reset_index(drop=True) if len(steps) else steps
        configs = configs[configs.run.isin(set(epochs.run))].reset_index(drop=True)
    return Runs(Path(run_root), epochs, steps, configs, unfinished)


def endpoints(epochs: pd.DataFrame, steps: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per run: late validation PESQ (mean of the last 5 epochs), the smoothed drop and its peak epoch,
    best validation PESQ and its epoch, and the applied skip rate (share of steps whose D update was skipped)."""
    cols = ["run", "variant", "seed", "epochs", "late_val_pesq", "drop_smoothed", "peak_epoch", "best_val_pesq",
            "best_epoch", "skip_rate"]  # fmt: skip
    rows = []
    for run, e in epochs.groupby("run", sort=True):
        e = e.sort_values("epoch")
        v = e.val_pesq.to_numpy(dtype=float)
        drop, peak = smoothed_drop(e.epoch.to_numpy(), v)
        ok = np.isfinite(v)
        s = steps[steps.run == run] if steps is not None and len(steps) else pd.DataFrame()
        rows.append(dict(
            run=run, variant=e.variant.iloc[0], seed=int(e.seed.iloc[0]), epochs=len(e),
            late_val_pesq=tail_mean(v, SMOOTH_WINDOW), drop_smoothed=drop, peak_epoch=peak,
            best_val_pesq=float(np.nanmax(v)) if ok.any() else math.nan,
            best_epoch=int(e.epoch.to_numpy()[np.nanargmax(v)]) if ok.any() else math.nan,
            skip_rate=float(s.disc_skipped.mean()) if "disc_skipped" in s and len(s) else math.nan,
        ))  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------------------------------- the pairing


@dataclass(frozen=True)
class Pairing:
    """Whether a contrast may be analysed paired, on which seeds, and why not when it may not."""

    paired: bool
    seeds: tuple[int, ...]
    reason: str


def first_steps(steps: pd.DataFrame) -> pd.DataFrame:
    """The first logged step of each run (one row per run; idempotent, so a caller may pass either)."""
    if not len(steps) or "step" not in steps:
        return steps
    return steps.sort_values(["run", "epoch", "step"]).groupby("run", sort=False).head(1)


def pairing_check(steps: pd.DataFrame, treatment: str, reference: str, seeds: Sequence[int],
                  columns: Sequence[str], rtol: float) -> Pairing:  # fmt: skip
    """Plan section 4: for every seed both variants have, the first step's `columns` must agree to relative `rtol`
    (same initial generator, same first batch). The first seed/column that fails is the reason for Welch."""
    seeds = tuple(sorted(int(s) for s in seeds))
    firsts = first_steps(steps)
    rows = {(v, int(sd)): r for v, sd, r in zip(firsts.variant, firsts.seed, firsts.to_dict("records"), strict=True)}
    if len(seeds) < 2:
        return Pairing(False, seeds, f"{len(seeds)} seed(s) in common: nothing to pair")
    for seed in seeds:
        a, b = rows.get((treatment, seed)), rows.get((reference, seed))
        if a is None or b is None:
            missing = treatment if a is None else reference
            return Pairing(False, seeds, f"seed {seed}: `{missing}` has no step log to check the pairing")
        for col in columns:
            x, y = float(a.get(col, math.nan)), float(b.get(col, math.nan))
            if not (np.isfinite(x) and np.isfinite(y) and math.isclose(x, y, rel_tol=rtol, abs_tol=0.0)):
                return Pairing(False, seeds, f"seed {seed}: first-step {col} differs ({treatment} {x:.9g}, "
                                             f"{reference} {y:.9g}; rtol {rtol:g})")  # fmt: skip
    return Pairing(True, seeds, "")


# ------------------------------------------------------------------------------------------ tests and intervals


@dataclass(frozen=True)
class TStat:
    """A difference with its standard error and t degrees of freedom: any interval and p-value follow."""

    mean: float
    se: float
    df: float
    n: int
    method: str  # paired | welch

    @property
    def ok(self) -> bool:
        return self.n >= 2 and np.isfinite(self.se) and np.isfinite(self.df) and self.df > 0

    def interval(self, level: float) -> tuple[float, float]:
        if not self.ok:
            return math.nan, math.nan
        half = float(_st.t.ppf(0.5 + level / 2, self.df) * self.se)
        return self.mean - half, self.mean + half

    def p(self) -> float:
        """Two-sided p of mean = 0."""
        if not self.ok:
            return math.nan
        if self.se == 0:
            return 0.0 if self.mean != 0 else 1.0
        return float(2 * _st.t.sf(abs(self.mean) / self.se, self.df))

    def p_tost(self, margin: float) -> float:
        """max of the one-sided p against -margin (H0: d <= -margin) and +margin (H0: d >= +margin)."""
        if not self.ok:
            return math.nan
        if self.se == 0:
            return 0.0 if abs(self.mean) < margin else 1.0
        p_low = _st.t.sf((self.mean + margin) / self.se, self.df)
        p_high = _st.t.cdf((self.mean - margin) / self.se, self.df)
        return float(max(p_low, p_high))


def paired_stat(diffs: Sequence[float]) -> TStat:
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return TStat(float(d.mean()) if d.size else math.nan, math.nan, math.nan, int(d.size), "paired")
    return TStat(float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size)), d.size - 1.0, int(d.size), "paired")


def welch_stat(a: Sequence[float], b: Sequence[float]) -> TStat:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    n = int(min(a.size, b.size))
    if a.size < 2 or b.size < 2:
        mean = float(a.mean() - b.mean()) if a.size and b.size else math.nan
        return TStat(mean, math.nan, math.nan, n, "welch")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)) if se > 0 else float(a.size + b.size - 2)
    return TStat(float(a.mean() - b.mean()), se, df, n, "welch")


def holm(pvalues: Sequence[float], alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Holm's step-down over the finite p-values (NaN: not tested, not counted in m). Returns (rejected, adjusted
    p, the confidence level of each one's adjusted interval, plan section 5): rank r (1 = smallest) rejected ->
    1 - alpha/(m - r + 1); not rejected -> 1 - alpha/(m - s + 1), s the first rank not rejected. A rank is
    rejected while p_(r) < alpha/(m - r + 1), so the interval at that level excludes 0 exactly when rejected."""
    p = np.asarray(pvalues, dtype=float)
    rejected = np.zeros(p.size, dtype=bool)
    adjusted = np.full(p.size, math.nan)
    level = np.full(p.size, math.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if not m:
        return rejected, adjusted, level
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    s = None  # first rank not rejected (1-based)
    for r, i in enumerate(order, start=1):
        running = max(running, min(1.0, (m - r + 1) * p[i]))
        adjusted[i] = running
        if s is None and p[i] < alpha / (m - r + 1):
            rejected[i] = True
            level[i] = 1 - alpha / (m - r + 1)
        else:
            s = r if s is None else s
            level[i] = 1 - alpha / (m - s + 1)
    return rejected, adjusted, level


def verdict(differs: bool, equivalent: bool, measured: bool, margin: float) -> str:
    """Plan section 5: differs / differs, by less than the margin / equivalent within it / inconclusive."""
    if not measured:
        return NOT_MEASURED
    if differs:
        return DIFFERS_SMALL.format(m=margin) if equivalent else DIFFERS
    return EQUIVALENT.format(m=margin) if equivalent else INCONCLUSIVE


def contrast_stats(ep: pd.DataFrame, steps: pd.DataFrame, treatment: str, reference: str, endpoint: str,
                   plan: Plan, pairing: Pairing | None = None) -> dict:  # fmt: skip
    """One contrast on one endpoint: paired (checked) or Welch, with the unadjusted 95% and 90% intervals,
    the p-value, p_TOST and Welch's interval beside it (sensitivity 1)."""
    a = ep[ep.variant == treatment].set_index("seed")[endpoint].astype(float)
    b = ep[ep.variant == reference].set_index("seed")[endpoint].astype(float)
    common = sorted(set(a.dropna().index) & set(b.dropna().index))
    if pairing is None:
        pairing = pairing_check(steps, treatment, reference, common, plan.pairing_columns, plan.rtol)
    welch = welch_stat(a.to_numpy(), b.to_numpy())
    stat = paired_stat([a[s] - b[s] for s in pairing.seeds]) if pairing.paired else welch
    lo95, hi95 = stat.interval(1 - plan.alpha)
    lo90, hi90 = stat.interval(1 - 2 * plan.alpha)
    wlo, whi = welch.interval(1 - plan.alpha)
    return dict(treatment=treatment, reference=reference, endpoint=endpoint, method=stat.method,
                pairing_reason=pairing.reason, n=stat.n, n_treatment=int(a.notna().sum()),
                n_reference=int(b.notna().sum()), difference=stat.mean, se=stat.se, df=stat.df, ci95_low=lo95,
                ci95_high=hi95, ci90_low=lo90, ci90_high=hi90, p=stat.p(), p_tost=stat.p_tost(plan.margin),
                welch_difference=welch.mean, welch_low=wlo, welch_high=whi, _stat=stat)  # fmt: skip


def family_table(ep: pd.DataFrame, steps: pd.DataFrame, contrasts: Sequence[Sequence[str]], endpoint: str,
                 plan: Plan, adjust: bool = True, pairings: Mapping | None = None) -> pd.DataFrame:  # fmt: skip
    """A family of contrasts on one endpoint with Holm over the p-values (adjusted intervals at the level of each
    one's Holm step) and Holm over p_TOST, and the verdict. `adjust=False` (exploratory): m = 1 for each."""
    present = set(ep.variant)
    rows = [contrast_stats(ep, steps, t, r, endpoint, plan, (pairings or {}).get((t, r)))
            for t, r in contrasts if t in present and r in present]  # fmt: skip
    if not rows:
        return pd.DataFrame()
    return _adjusted(pd.DataFrame(rows), plan, adjust)


def _adjusted(df: pd.DataFrame, plan: Plan, adjust: bool = True) -> pd.DataFrame:
    """Holm (or none) over a table of `contrast_stats` rows: adjusted p and interval, TOST, the verdict."""
    p, pt = df.p.to_numpy(dtype=float), df.p_tost.to_numpy(dtype=float)
    if adjust:
        rej, padj, level = holm(p, plan.alpha)
        eq, ptadj, _ = holm(pt, plan.alpha)
    else:
        rej, padj, level = p < plan.alpha, p, np.where(np.isfinite(p), 1 - plan.alpha, math.nan)
        eq, ptadj = pt < plan.alpha, pt
    nan2 = (math.nan, math.nan)
    bounds = [s.interval(lv) if np.isfinite(lv) else nan2 for s, lv in zip(df._stat, level, strict=True)]
    df = df.assign(family_m=int(np.isfinite(p).sum()) if adjust else 1, p_holm=padj, holm_level=level,
                   adj_low=[b[0] for b in bounds], adj_high=[b[1] for b in bounds], differs=rej,
                   p_tost_holm=ptadj, equivalent=eq,
                   equivalent_unadjusted=(df.ci90_low > -plan.margin) & (df.ci90_high < plan.margin))  # fmt: skip
    df["verdict"] = [verdict(bool(d), bool(e), bool(np.isfinite(q)), plan.margin)
                     for d, e, q in zip(df.differs, df.equivalent, df.p, strict=True)]  # fmt: skip
    return df.drop(columns="_stat")


def pairings(ep: pd.DataFrame, steps: pd.DataFrame, contrasts: Sequence[Sequence[str]], plan: Plan) -> dict:
    """The pairing check of each contrast, once (it does not depend on the endpoint): on the seeds both have."""
    out, steps = {}, first_steps(steps)
    for t, r in contrasts:
        seeds = set(ep[ep.variant == t].seed) & set(ep[ep.variant == r].seed)
        out[(t, r)] = pairing_check(steps, t, r, sorted(seeds), plan.pairing_columns, plan.rtol)
    return out


def families(ep: pd.DataFrame, steps: pd.DataFrame, plan: Plan, contrasts: Sequence[Sequence[str]] | None = None,
             adjust: bool = True) -> pd.DataFrame:  # fmt: skip
    """One family per endpoint (plan section 4: the primary and one per secondary endpoint)."""
    contrasts = [tuple(c) for c in (plan.contrasts if contrasts is None else contrasts)]
    pair = pairings(ep, steps, contrasts, plan)
    tables = [family_table(ep, steps, contrasts, e, plan, adjust, pair) for e in plan.endpoints]
    tables = [t for t in tables if len(t)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def leave_one_seed_out(ep: pd.DataFrame, steps: pd.DataFrame, plan: Plan,
                       contrasts: Sequence[Sequence[str]] | None = None,
                       endpoint: str | None = None) -> pd.DataFrame:  # fmt: skip
    """Sensitivity 4: each contrast's estimate with each seed left out in turn: its smallest and largest."""
    endpoint = endpoint or plan.primary
    contrasts = [tuple(c) for c in (plan.contrasts if contrasts is None else contrasts)]
    pair = pairings(ep, steps, contrasts, plan)
    rows = []
    for t, r in contrasts:
        if (t, r) not in pair or not len(ep[ep.variant == t]) or not len(ep[ep.variant == r]):
            continue
        full = contrast_stats(ep, steps, t, r, endpoint, plan, pair[(t, r)])
        seeds = sorted(set(ep[ep.variant == t].seed) | set(ep[ep.variant == r].seed))
        est = []
        for s in seeds:
            p = pair[(t, r)]
            drop = Pairing(p.paired, tuple(x for x in p.seeds if x != s), p.reason)
            est.append(contrast_stats(ep[ep.seed != s], steps, t, r, endpoint, plan, drop)["difference"])
        est = np.asarray(est, dtype=float)
        ok = est[np.isfinite(est)]
        rows.append(dict(treatment=t, reference=r, endpoint=endpoint, difference=full["difference"],
                         loso_min=float(ok.min()) if ok.size else math.nan,
                         loso_max=float(ok.max()) if ok.size else math.nan,
                         loso_min_seed=seeds[int(np.nanargmin(est))] if ok.size else None, n_ways=len(seeds),
                         loso_max_seed=seeds[int(np.nanargmax(est))] if ok.size else None))  # fmt: skip
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------- dose-response


def fixed_effects_slope(x: Sequence[float], y: Sequence[float], group: Sequence, margin: float,
                        alpha: float = 0.05) -> dict:  # fmt: skip
    """OLS y = beta x + alpha_group: the within-group slope, its 95% and 90% t intervals with
    n - groups - 1 degrees of freedom, and whether it is significant / flat within +-margin."""
    d = pd.DataFrame({"x": np.asarray(x, dtype=float), "y": np.asarray(y, dtype=float), "g": list(group)})
    d = d[np.isfinite(d.x) & np.isfinite(d.y)]
    n, k = len(d), int(d.g.nunique())
    out = dict(slope=math.nan, se=math.nan, df=n - k - 1, n=n, seeds=k, ci95_low=math.nan, ci95_high=math.nan,
               ci90_low=math.nan, ci90_high=math.nan, p=math.nan, significant=False, flat=False)  # fmt: skip
    if n - k - 1 < 1:
        return out
    xt = d.x - d.groupby("g").x.transform("mean")
    yt = d.y - d.groupby("g").y.transform("mean")
    sxx = float((xt**2).sum())
    if sxx == 0:
        return out
    beta = float((xt * yt).sum() / sxx)
    resid = yt - beta * xt
    dof = n - k - 1
    se = math.sqrt(float((resid**2).sum()) / dof / sxx)
    stat = TStat(beta, se, float(dof), n, "ols")
    lo95, hi95 = stat.interval(1 - alpha)
    lo90, hi90 = stat.interval(1 - 2 * alpha)
    out.update(slope=beta, se=se, ci95_low=lo95, ci95_high=hi95, ci90_low=lo90, ci90_high=hi90, p=stat.p(),
               significant=bool(lo95 > 0 or hi95 < 0), flat=bool(lo90 > -margin and hi90 < margin))  # fmt: skip
    return out


def dose_data(ep: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """The runs of the dose-response variants with their designed skip fraction."""
    by_variant = {v: x for x, v in plan.dose.items()}
    d = ep[ep.variant.isin(list(by_variant))].copy()
    d["designed_skip"] = d.variant.map(by_variant)
    return d


def dose_response(ep: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """Plan section 6: each endpoint on the designed skip fraction (primary: late PESQ) and on the applied skip
    rate (sensitivity 3), seed fixed effects; slope per 100% skipped."""
    d = dose_data(ep, plan)
    rows = []
    for x in ("designed_skip", "skip_rate"):
        for e in plan.endpoints:
            r = fixed_effects_slope(d[x], d[e], d.seed, plan.margin, plan.alpha) if len(d) else {}
            rows.append(dict(endpoint=e, x=x, **r))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------ collapse


def ar1_curves(n: int, phi: float, draws: int, rng: np.random.Generator) -> np.ndarray:
    """`draws` stationary AR(1) curves of length n with unit innovations (phi 0: white noise)."""
    e = rng.standard_normal((draws, n))
    x = np.empty_like(e)
    x[:, 0] = e[:, 0] / math.sqrt(1 - phi**2)
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x


def ar1_null(n: int, phi: float, draws: int, quantile: float, seed: int = 0) -> tuple[float, float]:
    """(quantile of the smoothed drops, pooled residual SD) of unit-scale flat AR(1) curves of length n. The
    smoothed drop scales linearly with the curve, so a run's threshold is this quantile x (its residual SD / the
    pooled residual SD): the null scaled so that its residual SD equals the run's own."""
    x = ar1_curves(n, phi, draws, np.random.default_rng(seed))
    resid = x - smoothed_rows(x)
    pooled = float(np.sqrt(np.mean(resid.var(axis=1, ddof=1))))
    return float(np.quantile(smoothed_drops(x), quantile)), pooled


def collapse_runs(epochs: pd.DataFrame, phis: Sequence[float], draws: int, quantile: float,
                  seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """Per run and phi: the smoothed drop, the run's residual SD, the null's threshold and collapse yes/no
    (drop above the threshold). Runs under 10 finite epochs: not measured."""
    rows, nulls = [], {}
    for run, e in epochs.sort_values("epoch").groupby("run", sort=True):
        v = e.val_pesq.to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        drop, _ = smoothed_drop(np.arange(v.size), v)
        sd = residual_sd(v)
        for phi in phis:
            thr = math.nan
            if np.isfinite(drop):
                key = (v.size, float(phi))
                if key not in nulls:
                    nulls[key] = ar1_null(v.size, float(phi), draws, quantile, seed)
                q, pooled = nulls[key]
                thr = q * sd / pooled
            rows.append(dict(run=run, variant=e.variant.iloc[0], seed=int(e.seed.iloc[0]), phi=float(phi),
                             drop_smoothed=drop, residual_sd=sd, threshold=thr,
                             collapsed=bool(drop > thr) if np.isfinite(thr) else None))  # fmt: skip
    return pd.DataFrame(rows)


def collapse_counts(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per variant and phi: k of n seeds collapse, Wilson 95% interval (exploratory: no adjustment)."""
    rows = []
    for (variant, phi), g in per_run.groupby(["variant", "phi"], sort=False):
        m = g[g.collapsed.notna()]
        r = wilson(int(m.collapsed.astype(bool).sum()), len(m))
        rows.append(dict(variant=variant, phi=phi, k=r.k, n=r.n, rate=r.p, low=r.low, high=r.high))
    return pd.DataFrame(rows)


# -------------------------------------------------------------------------------------------- early-stopping replay


def replay_rule(values: Sequence[float], mode: str, patience: int, min_delta: float) -> tuple[int, int, bool]:
    """(stop epoch, kept epoch, stopped) of the trainer's patience rule (`train.EarlyStopping`) over a logged
    curve (epochs from 1): the kept epoch is the last new best on the monitor up to the stop."""
    best, best_epoch, counter = math.nan, 0, 0
    v = [float(x) for x in values]
    for i, x in enumerate(v, start=1):
        up, down = mode == "max" and x > best + min_delta, mode == "min" and x < best - min_delta
        better = math.isnan(best) or up or down
        if not math.isnan(x) and better:
            best, best_epoch, counter = x, i, 0
        else:
            counter += 1
        if counter >= patience:
            return i, best_epoch, True
    return len(v), best_epoch, False


def replay(epochs: pd.DataFrame, rules: Mapping[str, tuple[str, int, float]]) -> pd.DataFrame:
    """Plan section 8, per run and rule: stop epoch, kept epoch, the validation PESQ of the kept epoch against
    training to the end (late PESQ) and against the best epoch, and the compute saved (epochs not trained / all)."""
    rows = []
    for run, e in epochs.sort_values("epoch").groupby("run", sort=True):
        v = e.val_pesq.to_numpy(dtype=float)
        late, best = tail_mean(v, SMOOTH_WINDOW), float(np.nanmax(v)) if np.isfinite(v).any() else math.nan
        n = len(e)
        for rule, (monitor, patience, min_delta) in rules.items():
            mode = "max" if monitor == "val_pesq" else "min"
            if monitor not in e:
                continue
            stop, kept, stopped = replay_rule(e[monitor].to_numpy(dtype=float), mode, patience, min_delta)
            kept_pesq = float(v[kept - 1]) if kept else math.nan
            rows.append(dict(rule=rule, monitor=monitor, patience=patience, min_delta=min_delta, run=run,
                             variant=e.variant.iloc[0], seed=int(e.seed.iloc[0]), epochs=n, stopped=stopped,
                             stop_epoch=stop, kept_epoch=kept, kept_val_pesq=kept_pesq, late_val_pesq=late,
                             best_val_pesq=best, kept_minus_late=kept_pesq - late, kept_minus_best=kept_pesq - best,
                             saved=(n - stop) / n))  # fmt: skip
    return pd.DataFrame(rows)


def replay_summary(per_run: pd.DataFrame, by_variant: bool = True) -> pd.DataFrame:
    """Per rule (and variant, then all runs): runs, how many stopped, mean stop and kept epoch, kept - late and
    kept - best with 95% t intervals over runs (paired by run), and the mean compute saved."""
    rows = []
    groups = [("all runs", per_run)]
    if by_variant:
        groups = [(v, g) for v, g in per_run.groupby("variant", sort=False)] + groups
    for name, g0 in groups:
        for rule, g in g0.groupby("rule", sort=False):
            kl, kb = mean_interval(g.kept_minus_late), mean_interval(g.kept_minus_best)
            rows.append(dict(rule=rule, variant=name, runs=len(g), stopped=int(g.stopped.sum()),
                             stop_epoch=float(g.stop_epoch.mean()), kept_epoch=float(g.kept_epoch.mean()),
                             kept_minus_late=kl.mean, kept_minus_late_low=kl.low, kept_minus_late_high=kl.high,
                             kept_minus_best=kb.mean, kept_minus_best_low=kb.low, kept_minus_best_high=kb.high,
                             saved=float(g.saved.mean())))  # fmt: skip
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------- clipping


def clipping(runs: Runs) -> pd.DataFrame:
    """Per clipped run: the share of steps whose pre-clip norm exceeded the clip, for G and for D
    (`training_analysis.run_summary`'s clip_exceeded_*; D's skipped updates have no norm and are not counted)."""
    cols = ["run", "variant", "seed", "grad_clip_norm", "clip_exceeded_g", "clip_checked_g", "clip_exceeded_g_frac",
            "clip_exceeded_d", "clip_checked_d", "clip_exceeded_d_frac"]  # fmt: skip
    if not len(runs.epochs) or not len(runs.steps):
        return pd.DataFrame(columns=cols)
    s = run_summary(runs.epochs, runs.steps, runs.configs)
    s = s[pd.to_numeric(s.grad_clip_norm, errors="coerce").fillna(0) > 0]
    return s[[c for c in cols if c in s]].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------------ the analysis


@dataclass
class Analysis:
    """Everything the confirmatory report shows for one run root."""

    label: str
    plan: Plan
    runs: Runs
    endpoints: pd.DataFrame
    families: pd.DataFrame  # family F on each endpoint (Holm), Welch beside
    exploratory: pd.DataFrame  # plan section 4's exploratory contrasts, unadjusted
    dose: pd.DataFrame
    collapse_runs: pd.DataFrame
    collapse: pd.DataFrame
    loso: pd.DataFrame
    replay_runs: pd.DataFrame
    replay: pd.DataFrame
    clipping: pd.DataFrame
    planned_seeds: tuple[int, ...] = ()
    excluded_seeds: tuple[int, ...] = ()

    @property
    def seeds_done(self) -> dict[str, int]:
        """Finished seeds per variant (of the plan's variants when a plan of seeds is given)."""
        counts = self.endpoints.groupby("variant").seed.nunique().to_dict()
        names = self.plan.variants if self.planned_seeds else list(counts)
        return {v: int(counts.get(v, 0)) for v in names}

    @property
    def interim(self) -> bool:
        """Fewer than the planned seeds finished for some variant of the plan."""
        return bool(self.planned_seeds) and any(n < len(self.planned_seeds) for n in self.seeds_done.values())

    def contrast(self, treatment: str, reference: str, endpoint: str | None = None) -> pd.Series | None:
        f = self.families
        if not len(f):
            return None
        m = f[(f.treatment == treatment) & (f.reference == reference) & (f.endpoint == (endpoint or self.plan.primary))]
        return m.iloc[0] if len(m) else None


def analyse(run_root: str | os.PathLike, plan: Plan, label: str = "", exclude_seeds: Sequence[int] = (),
            planned_seeds: Sequence[int] | None = None, collapse_seed: int = 0) -> Analysis | None:  # fmt: skip
    """The whole plan on the finished runs under `run_root`; None when none has finished."""
    runs = load_finished(run_root, exclude_seeds)
    if not len(runs.epochs):
        return None
    ep = endpoints(runs.epochs, runs.steps)
    fam = families(ep, runs.steps, plan)
    expl = families(ep, runs.steps, plan, EXPLORATORY_CONTRASTS, adjust=False)
    cr = collapse_runs(runs.epochs, plan.phis, plan.draws, plan.quantile, collapse_seed)
    rp = replay(runs.epochs, plan.replay_rules)
    return Analysis(label or str(run_root), plan, runs, ep, fam, expl, dose_response(ep, plan), cr,
                    collapse_counts(cr) if len(cr) else pd.DataFrame(), leave_one_seed_out(ep, runs.steps, plan),
                    rp, replay_summary(rp) if len(rp) else pd.DataFrame(), clipping(runs),
                    tuple(planned_seeds or ()), tuple(exclude_seeds))  # fmt: skip


def reread(roots: Mapping[str, str | os.PathLike], plan: Plan, drop_seed: int = 0) -> pd.DataFrame:
    """Sensitivity 5: the exploration re-read with this plan's analysis, with and without `drop_seed`, each run
    root's family tables stacked with `data` and `seeds` columns. Exploratory: never evidence."""
    tables = []
    for name, root in roots.items():
        for excl in ((), (drop_seed,)):
            a = analyse(root, plan, name, excl)
            if a is None or not len(a.families):
                continue
            seeds = ",".join(str(s) for s in sorted(a.endpoints.seed.unique()))
            tables.append(a.families.assign(data=name, seeds=seeds, without=",".join(map(str, excl)) or "-"))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def planned_seed_count(run_root: str | os.PathLike) -> float:
    """How many seeds the grid that trained RUN_ROOT plans: `seeds` of the grid.yaml `cmgan ablate` writes beside
    it (OUT/grid.yaml for OUT/runs); NaN when there is none (logs kept without it)."""
    path = Path(run_root).parent / "grid.yaml"
    try:
        seeds = (yaml.safe_load(path.read_text()) or {}).get("seeds")
    except (OSError, yaml.YAMLError, AttributeError):
        return math.nan
    return float(len(seeds)) if isinstance(seeds, list) else math.nan


def replication_family(roots: Mapping[str, str | os.PathLike], plan: Plan) -> pd.DataFrame:
    """Family R (plan section 2): in each replication root, the contrasts of family F whose two variants it ran,
    paired within the root, on the primary endpoint; Holm over all of them together. `seeds`: the seeds finished
    in both variants of the contrast; `planned_seeds`: its grid's (`planned_seed_count`), so a reader tells a
    replication still running from a finished one."""
    rows = []
    for name, root in roots.items():
        runs = load_finished(root)
        if not len(runs.epochs):
            continue
        ep = endpoints(runs.epochs, runs.steps)
        present = set(ep.variant)
        planned = planned_seed_count(root)
        for t, r in plan.contrasts:
            if t in present and r in present:
                row = contrast_stats(ep, runs.steps, t, r, plan.primary, plan)
                both = set(ep[ep.variant == t].seed) & set(ep[ep.variant == r].seed)  # the seeds it pairs
                rows.append(dict(row, replication=name, seeds=len(both), planned_seeds=planned))
    if not rows:
        return pd.DataFrame()
    return _adjusted(pd.DataFrame(rows), plan)


def speaker_of(name: str) -> str:
    """Voice Bank's speaker of a file name: p232_003.wav -> p232."""
    return Path(str(name)).name.split("_")[0]


def test_scores(run_root: str | os.PathLike) -> pd.DataFrame:
    """Per finished run and speaker: mean test PESQ of the run's own test scores (TEST_SCORES, its best checkpoint
    on the test split, scored as it finished) over the files that could be scored, and their number."""
    cols = ["run", "variant", "seed", "speaker", "test_pesq", "files"]
    rows = []
    for d in finished_runs(run_root):
        if not (d / TEST_SCORES).is_file():
            continue
        df = pd.read_csv(d / TEST_SCORES)
        df = df[df["reason"].isna()] if "reason" in df else df
        for speaker, g in df.groupby(df["name"].map(speaker_of), sort=True):
            rows.append(dict(run=g.run.iloc[0], variant=g.variant.iloc[0], seed=int(g.seed.iloc[0]),
                             speaker=speaker, test_pesq=float(g.pesq.mean()), files=len(g)))  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def per_speaker_family(run_root: str | os.PathLike, plan: Plan) -> pd.DataFrame:
    """R-vb per speaker (plan section 4: exploratory, no adjustment): the family-F contrasts whose two variants the
    root ran, on each speaker's mean test PESQ, paired by seed (the pairing checked on the step logs as for
    every contrast). p257 is a speaker (and a gender) no run trained on."""
    scores = test_scores(run_root) if Path(run_root).is_dir() else pd.DataFrame()
    if not len(scores):
        return pd.DataFrame()
    runs = load_finished(run_root)
    wide = scores.pivot_table(index=["run", "variant", "seed"], columns="speaker", values="test_pesq")
    ep = wide.add_prefix("test_pesq_").reset_index()
    tables = []
    for speaker in wide.columns:
        fam = family_table(ep, runs.steps, plan.contrasts, f"test_pesq_{speaker}", plan, adjust=False)
        if len(fam):
            files = scores[scores.speaker == speaker].files
            tables.append(fam.assign(speaker=speaker, files=f"{files.min()}-{files.max()}" if files.nunique() > 1
                                     else str(files.iloc[0])))  # fmt: skip
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
