"""Notebook 02's numbers: per-run summaries of finished training runs (where validation PESQ peaked and how far it
fell, the skip rate applied, failures by cause, gradient norms against the clip), seed means with 95% intervals
per variant, variant comparisons by the study's one rule, and issue 18's collapse, overfitting, seed-spread and
gradient-share measures. Presentation is `report_02_training` and `report_02_figures`.

Epochs are numbered from 1, as `runs.load_runs` converts them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cmgan_lib.analysis.pairing import as_bool, check_pairing, check_truncation, kept_epoch
from cmgan_lib.analysis.stats import (
    Interval,
    difference_interval,
    effect_verdict,
    mean_interval,
    paired_difference_interval,
    wilson,
)
from cmgan_lib.core.paths import run_config
from cmgan_lib.training.log_columns import CAUSE_COLUMNS, INJECTED
from cmgan_lib.training.runs import run_dirs

REFERENCE = "official"


# step-log columns of labels lost to injection and to the data (every other cause), as the trainer names them
INJECTED_COLUMN = CAUSE_COLUMNS[INJECTED]


DATA_FAIL_COLUMNS = tuple(c for cause, c in CAUSE_COLUMNS.items() if cause != INJECTED)


CONFIG_KEYS = ("pesq_strategy", "pesq_fail_inject", "grad_clip_norm", "batch_size", "val_split", "cut_len",
               "reshuffle_each_epoch", "early_stopping")  # fmt: skip


# further config keys that name the regime a verdict holds under (issue 18: `regime_markdown`)
REGIME_KEYS = ("synthetic_n_train", "data_dir", "fixed_crops", "train_repeat", "epochs", "num_channel", "num_tscb",
               "lr_g", "val_max_files")  # fmt: skip
# what a run trained with when its config predates the key (the code then had only this value)
REGIME_DEFAULTS = {"num_tscb": 4}


MIXED = "mixed"  # a variant whose seeds ran with different values of a config key


# The quantities the verdict compares, with the words it uses for them.
COMPARED = {
    "best_val_pesq": "best validation PESQ",
    "final_val_pesq": "final validation PESQ",
    "drop_after_peak": "drop after the peak (best - final)",
    "drop_smoothed": "drop after the smoothed peak (peak of the 5-epoch mean - mean of the last 5 epochs)",
}


SMOOTH_WINDOW = 5  # epochs of the centred rolling mean and of the final mean (drop_smoothed, overfitting)


SMOOTH_MIN_PERIODS = 3


# fewer epochs than this: the smoothed peak (or minimum) and the final mean share most epochs, the measure is void
MIN_SMOOTH_EPOCHS = 2 * SMOOTH_WINDOW


TINY = 1e-9  # a smoothed rise or interval bound within this of 0 is 0 (float noise of a flat curve)


def load_run_configs(run_root_or_dirs) -> pd.DataFrame:
    """One row per run: the config keys the reports need (missing keys NaN: runs from before the key, unless
    REGIME_DEFAULTS says what they trained with)."""
    rows = []
    for d in run_dirs(run_root_or_dirs):
        cfg = run_config(d)
        keys = (*CONFIG_KEYS, *REGIME_KEYS)
        rows.append({"run": d.name, **{k: cfg.get(k, REGIME_DEFAULTS.get(k, np.nan)) for k in keys}})
    return pd.DataFrame(rows, columns=["run", *CONFIG_KEYS, *REGIME_KEYS])


def _col_sum(s: pd.DataFrame, col: str) -> float:
    return float(s[col].sum()) if col in s else math.nan


def _exceeded(norms: pd.Series, clip: float) -> tuple[int, int]:
    """(steps whose pre-clip norm exceeded the clip value, steps with a finite norm)."""
    v = norms.to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return int((v > clip).sum()), int(v.size)


def smoothed(values: pd.Series | np.ndarray, window: int = SMOOTH_WINDOW) -> np.ndarray:
    """Centred rolling mean (min_periods 3): a peak or minimum of it is not the extreme of one epoch's noise."""
    v = pd.Series(np.asarray(values, dtype=float))
    return v.rolling(window, center=True, min_periods=SMOOTH_MIN_PERIODS).mean().to_numpy()


def tail_mean(values: pd.Series | np.ndarray, window: int = SMOOTH_WINDOW) -> float:
    """Mean of the last `window` finite values: the final level of a curve, not its last epoch's noise."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)][-window:]
    return float(v.mean()) if v.size else math.nan


def smoothed_drop(epoch: np.ndarray, val_pesq: np.ndarray) -> tuple[float, float]:
    """(peak of the smoothed curve before the last 5 epochs - mean of the last 5 epochs, epoch of that peak).
    Why: best - final of a flat noisy curve is the maximum of the noise, positive by construction; this is much
    smaller there (`flat_null_drop` measures what remains), and a curve still rising gives a negative value
    because the peak is looked for before the final window. NaN with fewer than MIN_SMOOTH_EPOCHS finite epochs."""
    v = np.asarray(val_pesq, dtype=float)
    if np.isfinite(v).sum() < MIN_SMOOTH_EPOCHS:
        return math.nan, math.nan
    sm = smoothed(v)[: len(v) - SMOOTH_WINDOW]
    i = int(np.nanargmax(sm))
    return float(sm[i] - tail_mean(v)), float(np.asarray(epoch)[i])


def smoothed_rows(curves: np.ndarray) -> np.ndarray:
    """`smoothed` of every row (complete curves) at once: the centred 5-epoch mean, over 3 or more epochs at the
    ends (its min_periods), by cumulative sums (pandas' rolling, one curve at a time, took 140x longer)."""
    n, half = curves.shape[1], SMOOTH_WINDOW // 2
    c = np.concatenate([np.zeros((curves.shape[0], 1)), np.cumsum(curves, axis=1)], axis=1)
    lo = np.clip(np.arange(n) - half, 0, n)
    hi = np.clip(np.arange(n) + half + 1, 0, n)
    count = (hi - lo).astype(float)
    out = (c[:, hi] - c[:, lo]) / count
    out[:, count < SMOOTH_MIN_PERIODS] = np.nan
    return out


def smoothed_drops(curves: np.ndarray) -> np.ndarray:
    """`smoothed_drop` of every row (complete curves of equal length) at once."""
    n = curves.shape[1]
    sm = smoothed_rows(curves)[:, : n - SMOOTH_WINDOW]
    return np.nanmax(sm, axis=1) - curves[:, -SMOOTH_WINDOW:].mean(axis=1)


def residual_sd(values: Sequence[float]) -> float:
    """SD of a curve's residual around its centred 5-epoch mean."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(np.std(v - smoothed(v), ddof=1)) if v.size >= 2 else math.nan


def run_summary(epochs: pd.DataFrame, steps: pd.DataFrame, configs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per run (seed): where validation PESQ peaked and how far it fell after, the skip rate actually
    applied (Wilson 95%), failures by cause, disc_loss of updates that ran, pre-clip norms against the clip."""
    cfg = configs.set_index("run") if configs is not None and len(configs) else pd.DataFrame()
    rows = []
    for run, e in epochs.groupby("run", sort=True):
        e = e.sort_values("epoch")
        s = steps[steps.run == run] if len(steps) else pd.DataFrame()
        c = cfg.loc[run] if run in cfg.index else pd.Series(dtype=object)
        valid = e.val_pesq.notna().any()
        best = e.loc[e.val_pesq.idxmax()] if valid else None
        kept = kept_epoch(e)
        stops = as_bool(c.get("early_stopping"))
        # an early-stopping run ends with the checkpoint it kept (best.pt), not with its last epoch's weights
        final = float(e.loc[e.epoch == kept, "val_pesq"].iloc[0]) if stops else e.val_pesq.iloc[-1]
        drop_s, peak_s = smoothed_drop(e.epoch.to_numpy(), e.val_pesq.to_numpy())
        fired = e.loc[e.early_stop == 1, "epoch"] if "early_stop" in e else pd.Series(dtype=float)
        row = dict(run=run, variant=e.variant.iloc[0], seed=e.seed.iloc[0], epochs=len(e))
        row.update({k: c.get(k, np.nan) for k in CONFIG_KEYS})
        row.update(
            best_val_pesq=best.val_pesq if valid else np.nan, best_epoch=int(best.epoch) if valid else np.nan,
            final_val_pesq=final, drop_after_peak=best.val_pesq - final if valid else np.nan,
            drop_smoothed=drop_s, peak_epoch_smoothed=peak_s,
            final_val_stoi=e.val_stoi.iloc[-1] if "val_stoi" in e else np.nan,
            early_stop_epoch=int(fired.iloc[0]) if len(fired) else np.nan, kept_epoch=kept,
            stopped_early=bool(stops and len(fired) and int(fired.iloc[0]) == int(e.epoch.iloc[-1])),
            nonfinite_steps=int(e.nonfinite_steps.sum()) if "nonfinite_steps" in e else np.nan,
        )  # fmt: skip
        if len(s):
            skip = wilson(int(s.disc_skipped.sum()), len(s))
            ran = s[(s.disc_skipped == 0) & np.isfinite(s.disc_loss.astype(float))]
            row.update(steps=skip.n, skipped=skip.k, skip_rate=skip.p, skip_low=skip.low, skip_high=skip.high,
                       injected_failures=_col_sum(s, INJECTED_COLUMN),
                       data_failures=sum(_col_sum(s, c) for c in DATA_FAIL_COLUMNS),
                       disc_loss_median=ran.disc_loss.median() if len(ran) else np.nan,
                       grad_norm_g_max=s.grad_norm_g.max(), grad_norm_d_max=s.grad_norm_d.max())  # fmt: skip
            clip = float(row["grad_clip_norm"]) if pd.notna(row["grad_clip_norm"]) else 0.0
            for net in ("g", "d"):
                k, n = _exceeded(s[f"grad_norm_{net}"], clip) if clip > 0 else (np.nan, np.nan)
                row.update({f"clip_exceeded_{net}": k, f"clip_checked_{net}": n,
                            f"clip_exceeded_{net}_frac": k / n if clip > 0 and n else np.nan})  # fmt: skip
        else:  # a run without a step log: the epoch log's mean skip rate, no interval
            row.update(skip_rate=e.disc_skip_rate.mean() if "disc_skip_rate" in e else np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


SEED_MEAN_COLUMNS = ("best_val_pesq", "best_epoch", "final_val_pesq", "drop_after_peak", "drop_smoothed",
                     "peak_epoch_smoothed", "disc_loss_median", "grad_norm_g_max", "grad_norm_d_max",
                     "injected_failures", "clip_exceeded_d_frac")  # fmt: skip


def is_number(x) -> bool:
    """A finite number (numpy scalars included), not NaN, 'mixed' or None."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def config_value(values: pd.Series):
    """The variant's config value when its seeds agree; 'mixed' when they do not."""
    u = values.dropna().unique()
    return u[0] if len(u) == 1 else (np.nan if len(u) == 0 else MIXED)


def expected_skip_rate(p, batch_size, strategy) -> float:
    """Share of discriminator updates that injected failures at per-sample rate p alone would skip under
    `strategy`: the binomial weight of every count k of failed labels in a batch of B whose labels `make_labels`
    skips (skip: any failure, 1 - (1 - p)^B; masked: all B, p^B; batch_mean: never). Why the real label path:
    the expectation then follows the strategies as they are, not a formula kept beside them."""
    from cmgan_lib.training.pesq_labels import STRATEGIES, make_labels

    if not (is_number(p) and is_number(batch_size) and isinstance(strategy, str) and strategy in STRATEGIES):
        return math.nan
    b, p = int(batch_size), float(p)
    total = 0.0
    for k in range(b + 1):
        raw = np.r_[np.full(k, np.nan), np.full(b - k, 2.0)]
        if make_labels(raw, [INJECTED] * k + [None] * (b - k), strategy).skipped:
            total += math.comb(b, k) * p**k * (1.0 - p) ** (b - k)
    return total


def variant_summary(per_seed: pd.DataFrame) -> pd.DataFrame:
    """One row per variant: seed means with 95% t intervals (`<q>`, `<q>_low`, `<q>_high`, and `<q>_n`, the seeds
    with a value), and the skip rate applied over all its steps with a Wilson interval beside the rate the injected
    p alone would give under the variant's strategy (`expected_skip_rate`)."""
    rows = []
    for variant, g in per_seed.groupby("variant", sort=False):
        row = dict(variant=variant, n_seeds=int(g.seed.nunique()), seeds=",".join(str(int(x)) for x in
                   sorted(g.seed.dropna().unique())))  # fmt: skip
        row.update({k: config_value(g[k]) for k in CONFIG_KEYS if k in g})
        for q in SEED_MEAN_COLUMNS:
            if q in g:
                iv = mean_interval(g[q].to_numpy(dtype=float))
                row.update({q: iv.mean, f"{q}_low": iv.low, f"{q}_high": iv.high, f"{q}_n": iv.n})
        for total in ("injected_failures", "data_failures", *(f"clip_{w}_{net}" for w in ("exceeded", "checked")
                                                             for net in ("g", "d"))):  # fmt: skip
            if total in g:
                row[f"{total}_total"] = g[total].sum(min_count=1)
        if "steps" in g and g.steps.notna().any():
            skip = wilson(int(g.skipped.sum()), int(g.steps.sum()))
            row.update(skipped=skip.k, steps=skip.n, skip_rate=skip.p, skip_low=skip.low, skip_high=skip.high)
        row["skip_rate_from_injection"] = expected_skip_rate(row.get("pesq_fail_inject"), row.get("batch_size"),
                                                             row.get("pesq_strategy"))  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def default_comparisons(variants: Sequence[str], reference: str = REFERENCE) -> list[list[str]]:
    """Every variant against `reference` when the runs have it; none otherwise."""
    return [[v, reference] for v in variants if v != reference] if reference in variants else []


COMPARISON_COLUMNS = ["variant", "reference", "quantity", "difference", "ci95_low", "ci95_high", "n_variant",
                      "n_reference", "method", "pairing", "welch_low", "welch_high", "verdict"]  # fmt: skip


PAIRED, WELCH, REPLAY = "paired", "Welch", "replay"


REPLAY_QUANTITIES = ("best_val_pesq", "final_val_pesq")  # a truncation's drop is not a training outcome


def _paired_values(a: pd.DataFrame, b: pd.DataFrame, q: str) -> tuple[np.ndarray, np.ndarray]:
    """The two variants' values of `q`, matched by seed, over the seeds where both are finite."""
    m = a[["seed", q]].merge(b[["seed", q]], on="seed", suffixes=("_a", "_b"))
    m = m[np.isfinite(m[f"{q}_a"].astype(float)) & np.isfinite(m[f"{q}_b"].astype(float))]
    return m[f"{q}_a"].to_numpy(dtype=float), m[f"{q}_b"].to_numpy(dtype=float)


def _is_replay(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """The variant stops early and the reference does not (`early_stopping` in their configs)."""
    flag = "early_stopping"
    return (flag in a and flag in b and len(a) and len(b) and all(as_bool(x) for x in a[flag])
            and not any(as_bool(x) for x in b[flag]))  # fmt: skip


def compare_variants(per_seed: pd.DataFrame, comparisons: Sequence[Sequence[str]], steps: pd.DataFrame | None = None,
                     epochs: pd.DataFrame | None = None) -> pd.DataFrame:  # fmt: skip
    """For each (variant, reference): the difference of each COMPARED quantity over seeds with a 95% interval and
    its verdict by the study's one rule (`stats.effect_verdict`): no direction unless the interval excludes 0.

    The interval (`method`) is **paired** by seed when the pairing holds (`pairing.check_pairing`: the same seeds,
    identical step-1 losses where the step logs have them), **Welch** otherwise, with the reason in `pairing`;
    Welch's interval is kept beside it (`welch_low`, `welch_high`) so the effect of pairing shows. A variant that
    only stops early is a **replay** of its reference when its logs are the reference's until it stops
    (`pairing.check_truncation`): its final is the kept checkpoint's PESQ (`run_summary`), compared paired; its
    drops are not compared. n_variant / n_reference count the values each interval used."""
    rows = []
    for variant, reference in comparisons:
        a, b = per_seed[per_seed.variant == variant], per_seed[per_seed.variant == reference]
        pairing = check_pairing(per_seed, variant, reference, steps)
        replay = None
        if _is_replay(a, b) and epochs is not None and len(epochs):
            replay = check_truncation(per_seed, epochs, variant, reference)
            replay = replay if replay.holds else None
        for q, words in COMPARED.items():
            va, vb = a[q].to_numpy(dtype=float), b[q].to_numpy(dtype=float)
            welch: Interval = difference_interval(va, vb)
            what = f"{words}, {variant} - {reference}"
            method, reason = (PAIRED if pairing.holds else WELCH), pairing.reason
            if replay is not None:
                method, reason = REPLAY, replay.reason
                stops = ", ".join(f"{e:g}" for e in replay.stop_epochs)
                kept = ", ".join(f"{e:g}" for e in replay.kept_epochs)
                reason += f"; stopped at epoch(s) {stops}, kept the checkpoint of epoch(s) {kept}"
            if method == REPLAY and q not in REPLAY_QUANTITIES:
                diff = Interval(math.nan, math.nan, math.nan, 0)
                verdict = f"{what}: not compared ({variant} is {reference} cut short: a replay, no drop of its own)"
                n_a = n_b = 0
            elif method in (PAIRED, REPLAY):
                pa, pb = _paired_values(a, b, q)
                diff = paired_difference_interval(pa, pb)
                n_a = n_b = len(pa)
                verdict = effect_verdict(diff, what) + (f"; {reason}" if diff.n else "")  # says paired / replay
            else:
                diff, n_a, n_b = welch, int(np.isfinite(va).sum()), int(np.isfinite(vb).sum())
                verdict = effect_verdict(diff, what) + (f"; Welch: {reason}" if diff.n else "")
            rows.append(dict(variant=variant, reference=reference, quantity=q, difference=diff.mean,
                             ci95_low=diff.low, ci95_high=diff.high, n_variant=n_a, n_reference=n_b, method=method,
                             pairing=reason, welch_low=welch.low, welch_high=welch.high,
                             verdict=verdict))  # fmt: skip
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def variant_order(variants, reference: str = REFERENCE) -> list[str]:
    """The reference first, then the other variants sorted: one order in every table and figure."""
    vs = list(dict.fromkeys(variants))
    return ([reference] if reference in vs else []) + sorted(v for v in vs if v != reference)


def seed_band(df: pd.DataFrame, column: str, by: str = "epoch") -> pd.DataFrame:
    """Per `by` value: the mean of `column` over seeds (runs) and its band: the 95% t interval with 3 or more
    seeds, the range (min-max) with 2, none with 1 (a t interval over 2 values is too wide to read); n = seeds."""
    rows = []
    for key, g in df.groupby(by, sort=True):
        v = g[column].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if v.size >= 3:
            iv = mean_interval(v)
            low, high = iv.low, iv.high
        elif v.size == 2:
            low, high = float(v.min()), float(v.max())
        else:
            low = high = math.nan
        rows.append({by: key, "mean": float(v.mean()) if v.size else math.nan, "low": low, "high": high, "n": v.size})
    return pd.DataFrame(rows, columns=[by, "mean", "low", "high", "n"]).set_index(by)


GRAD_RATIO, GRAD_COS = "grad_ratio_adv_rest", "grad_cos_adv_rest"


STEER_RATIO = 0.1  # the adversarial gradient can steer the generator when it is at least a tenth of the rest's


ALONG_COS = 0.5  # |cosine| above this: mostly along (or against) the other terms' gradient; below: across it


def grad_share_per_run(steps: pd.DataFrame) -> pd.DataFrame:
    """Per run, over the steps where the share was measured: median ratio |g_adv| / |g_rest|, median cosine,
    and the number of measured steps. Medians: a few steps with a vanishing rest gradient must not dominate."""
    cols = ["run", "variant", "seed", "ratio", "cos", "measured_steps"]
    if not len(steps) or GRAD_RATIO not in steps:
        return pd.DataFrame(columns=cols)
    rows = []
    for run, s in steps.groupby("run", sort=True):
        m = s[np.isfinite(s[GRAD_RATIO].astype(float))]
        cos = m[GRAD_COS].astype(float) if GRAD_COS in m else pd.Series(dtype=float)
        rows.append(dict(run=run, variant=s.variant.iloc[0], seed=s.seed.iloc[0],
                         ratio=float(m[GRAD_RATIO].median()) if len(m) else math.nan,
                         cos=float(cos.median()) if cos.notna().any() else math.nan,
                         measured_steps=len(m)))  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def grad_share_table(steps: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """Per variant: the seed mean (95% t interval) of each run's median ratio adv/rest and median cosine, and the
    measured steps over all seeds: how large the metric discriminator's pull on the generator is (issue 18's
    mechanism). Empty when no run measured it (old runs, grad_share_every = 0)."""
    per_run = grad_share_per_run(steps)
    per_run = per_run[per_run.measured_steps > 0]
    cols = [
        "variant",
        "n_seeds",
        "measured_steps",
        *(f"{q}{s}" for q in ("ratio", "cos") for s in ("", "_low", "_high")),
    ]
    rows = []
    for variant in variant_order(per_run.variant, reference):
        g = per_run[per_run.variant == variant]
        row = dict(variant=variant, n_seeds=len(g), measured_steps=int(g.measured_steps.sum()))
        for q in ("ratio", "cos"):
            iv = mean_interval(g[q].to_numpy(dtype=float))
            row.update({q: iv.mean, f"{q}_low": iv.low, f"{q}_high": iv.high})
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


SPREAD_QUANTITIES = {"best_val_pesq": "best validation PESQ", "final_val_pesq": "final validation PESQ",
                     "drop_smoothed": "smoothed drop"}  # fmt: skip


def _curve_gaps(e: pd.DataFrame, column: str = "val_pesq") -> list[float]:
    """For every pair of runs: the mean over their common epochs of |curve a - curve b|."""
    wide = e.pivot_table(index="epoch", columns="run", values=column)
    runs = list(wide.columns)
    gaps = []
    for i, a in enumerate(runs):
        for b in runs[i + 1 :]:
            d = (wide[a] - wide[b]).abs().dropna()
            if len(d):
                gaps.append(float(d.mean()))
    return gaps


def seed_spread(per_seed: pd.DataFrame, epochs: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """Per variant: how far seeds of the same settings land apart (SD over seeds and the largest pairwise
    difference, i.e. max - min, of best/final validation PESQ and the smoothed drop) and the mean absolute gap
    between two seeds' validation curves per epoch (mean over pairs, and the largest pair): the noise floor any
    difference between variants must clear."""
    rows = []
    for variant in variant_order(per_seed.variant, reference):
        g = per_seed[per_seed.variant == variant]
        row = dict(variant=variant, n_seeds=len(g))
        for q in SPREAD_QUANTITIES:
            v = g[q].to_numpy(dtype=float) if q in g else np.array([])
            v = v[np.isfinite(v)]
            row[f"{q}_sd"] = float(v.std(ddof=1)) if v.size >= 2 else math.nan
            row[f"{q}_range"] = float(v.max() - v.min()) if v.size >= 2 else math.nan
        gaps = _curve_gaps(epochs[epochs.variant == variant])
        row.update(curve_gap_mean=float(np.mean(gaps)) if gaps else math.nan,
                   curve_gap_max=float(np.max(gaps)) if gaps else math.nan)  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def pooled_sd(spread: pd.DataFrame, q: str) -> float:
    """The seed SD of `q` pooled over the variants of `seed_spread` (variances weighted by seeds - 1)."""
    sd, n = spread[f"{q}_sd"].to_numpy(dtype=float), spread["n_seeds"].to_numpy(dtype=float)
    ok = np.isfinite(sd) & (n >= 2)
    return float(np.sqrt(np.sum((n[ok] - 1) * sd[ok] ** 2) / np.sum(n[ok] - 1))) if ok.any() else math.nan


LOSS_COLUMNS = ("loss", "val_loss")  # epoch log: training loss (mean over the epoch's steps), validation loss


def has_losses(epochs: pd.DataFrame) -> bool:
    """Both the training and the validation loss logged (runs from before issue 18 lack them)."""
    return all(c in epochs and np.isfinite(epochs[c].astype(float)).any() for c in LOSS_COLUMNS)


def overfitting_per_run(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per run: the validation loss's rise after its minimum and the training loss's change over the same epochs,
    raw (final - minimum, as a reader would read the log) and smoothed (mean of the last 5 epochs - minimum of the
    centred 5-epoch rolling mean: the raw rise is the noise's range even on a flat curve); `still_falling` when
    the smoothed minimum is the last epoch. Smoothed columns NaN for runs under MIN_SMOOTH_EPOCHS epochs."""
    cols = ["run", "variant", "seed", "epochs", "val_loss_min_epoch", "val_loss_rise", "train_loss_change",
            "val_loss_min_epoch_smoothed", "val_loss_rise_smoothed", "train_loss_change_smoothed",
            "still_falling"]  # fmt: skip
    if not has_losses(epochs):
        return pd.DataFrame(columns=cols)
    rows = []
    for run, e in epochs.groupby("run", sort=True):
        e = e.sort_values("epoch")
        val, train, ep = (e[c].to_numpy(dtype=float) for c in ("val_loss", "loss", "epoch"))
        row = dict(run=run, variant=e.variant.iloc[0], seed=e.seed.iloc[0], epochs=len(e))
        if np.isfinite(val).any():
            i = int(np.nanargmin(val))
            row.update(val_loss_min_epoch=ep[i], val_loss_rise=float(val[np.isfinite(val)][-1] - val[i]),
                       train_loss_change=float(train[-1] - train[i]))  # fmt: skip
        sv, st = smoothed(val), smoothed(train)
        if np.isfinite(val).sum() >= MIN_SMOOTH_EPOCHS:
            j = int(np.nanargmin(sv))
            row.update(val_loss_min_epoch_smoothed=ep[j], val_loss_rise_smoothed=tail_mean(val) - float(sv[j]),
                       train_loss_change_smoothed=tail_mean(train) - float(st[j]),
                       still_falling=bool(j == len(sv) - 1))  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def overfitting_table(epochs: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """Per variant: seed means with 95% t intervals of the validation-loss rise after its minimum and the
    training-loss change over the same epochs (raw and smoothed, see `overfitting_per_run`), the epoch of the
    minimum, and how many seeds' validation loss was still falling at the end. Empty without both losses."""
    per_run = overfitting_per_run(epochs)
    rows = []
    for variant in variant_order(per_run.variant, reference):
        g = per_run[per_run.variant == variant]
        falling = int(np.nansum(g.still_falling.to_numpy(dtype=float)))
        row = dict(variant=variant, n_seeds=len(g), epochs=int(g.epochs.max()), still_falling=falling)
        for q in ("val_loss_rise", "train_loss_change", "val_loss_rise_smoothed", "train_loss_change_smoothed",
                  "val_loss_min_epoch_smoothed"):  # fmt: skip
            iv = mean_interval(g[q].to_numpy(dtype=float))
            row.update({q: iv.mean, f"{q}_low": iv.low, f"{q}_high": iv.high})
        rows.append(row)
    return pd.DataFrame(rows)


NULL_DRAWS = 400  # simulated flat curves per run for the noise floor of drop_smoothed


def flat_null_drop(val_pesq: np.ndarray, draws: int = NULL_DRAWS, seed: int = 0) -> float:
    """The mean `drop_smoothed` of a curve with no collapse at all: `draws` flat curves of the run's length with
    the run's own epoch-to-epoch noise (SD of its residual around the 5-epoch rolling mean). Why: the smoothed drop
    still picks a maximum, so a flat noisy curve gives it a positive value; a collapse must exceed this floor."""
    v = np.asarray(val_pesq, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < MIN_SMOOTH_EPOCHS:
        return math.nan
    sd = residual_sd(v) / math.sqrt(1 - 1 / SMOOTH_WINDOW)  # residual of a mean of 5: 0.89 sd
    flat = np.random.default_rng(seed).normal(0.0, sd, (draws, v.size))  # as `draws` draws of one curve each
    return float(np.mean(smoothed_drops(flat)))


def collapse_table(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per variant: the smoothed peak epoch, the smoothed drop after it (seed mean, 95% t interval), the noise
    floor a flat curve would give (`flat_null_drop`, mean over seeds) and the verdict: `collapse` when the whole
    interval of (drop - floor) lies above 0, `no collapse` when it lies below, `undecided` otherwise."""
    rows = []
    for (variant, seed), e in epochs.sort_values("epoch").groupby(["variant", "seed"], sort=False, dropna=False):
        drop, peak = smoothed_drop(e.epoch.to_numpy(), e.val_pesq.to_numpy())
        rows.append(dict(variant=variant, seed=seed, epochs=len(e), drop_smoothed=drop, peak=peak,
                         floor=flat_null_drop(e.val_pesq.to_numpy())))  # fmt: skip
    per_run = pd.DataFrame(rows)
    out = []
    for variant, g in per_run.groupby("variant", sort=False):
        drop = mean_interval(g.drop_smoothed)
        excess = mean_interval(g.drop_smoothed - g.floor)
        verdict = ("not measured" if not np.isfinite(excess.mean) else "undecided" if not np.isfinite(excess.low)
                   else "collapse" if excess.low > 0 else "no collapse" if excess.high < 0
                   else "undecided")  # fmt: skip
        out.append(dict(variant=variant, n_seeds=int(g.drop_smoothed.notna().sum()), epochs=int(g.epochs.max()),
                        peak_epoch=float(g.peak.mean()), drop_smoothed=drop.mean, drop_low=drop.low,
                        drop_high=drop.high, floor=float(g.floor.mean()), excess=excess.mean,
                        excess_low=excess.low, excess_high=excess.high, verdict=verdict))  # fmt: skip
    return pd.DataFrame(out)
