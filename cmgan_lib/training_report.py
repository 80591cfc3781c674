"""Notebook 02: reading finished training runs, summarising them per seed and per variant, the figures, and
the generated verdict of the failure-injection ablation (issue 11).

Epochs are numbered from 1 in every table and figure, as the trainer's console prints them ("epoch 1/3");
the CSV logs count from 0 and `load_runs` converts once, here.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cmgan_lib.paths import run_config, shown_path
from cmgan_lib.pesq_labels import CAUSE_COLUMNS, INJECTED
from cmgan_lib.plotting import EPOCH_LABEL, STEP_LABEL, integer_ticks, left_aligned, legend_outside, plain_log_ticks
from cmgan_lib.runs import find_runs, load_runs, run_dirs
from cmgan_lib.stats import Interval, difference_interval, effect_verdict, mean_interval, wilson

REFERENCE = "official"
# step-log columns of labels lost to injection and to the data (every other cause), as the trainer names them
INJECTED_COLUMN = CAUSE_COLUMNS[INJECTED]
DATA_FAIL_COLUMNS = tuple(c for cause, c in CAUSE_COLUMNS.items() if cause != INJECTED)
CONFIG_KEYS = ("pesq_strategy", "pesq_fail_inject", "grad_clip_norm", "batch_size", "val_split", "cut_len",
               "reshuffle_each_epoch")  # fmt: skip
# further config keys that name the regime a verdict holds under (issue 18: `regime_markdown`)
REGIME_KEYS = ("synthetic_n_train", "data_dir", "fixed_crops", "train_repeat", "epochs", "num_channel", "lr_g",
               "val_max_files")  # fmt: skip
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
PER_SEED_CSV = "training_per_seed.csv"
PER_VARIANT_CSV = "training_per_variant.csv"
COMPARISONS_CSV = "training_comparisons.csv"


def load_run_configs(run_root_or_dirs) -> pd.DataFrame:
    """One row per run: the config keys the reports need (missing keys NaN: runs from before the key)."""
    rows = []
    for d in run_dirs(run_root_or_dirs):
        cfg = run_config(d)
        rows.append({"run": d.name, **{k: cfg.get(k, np.nan) for k in (*CONFIG_KEYS, *REGIME_KEYS)}})
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
        final = e.val_pesq.iloc[-1]
        drop_s, peak_s = smoothed_drop(e.epoch.to_numpy(), e.val_pesq.to_numpy())
        fired = e.loc[e.early_stop == 1, "epoch"] if "early_stop" in e else pd.Series(dtype=float)
        row = dict(run=run, variant=e.variant.iloc[0], seed=e.seed.iloc[0], epochs=len(e))
        row.update({k: c.get(k, np.nan) for k in CONFIG_KEYS})
        row.update(
            best_val_pesq=best.val_pesq if valid else np.nan, best_epoch=int(best.epoch) if valid else np.nan,
            final_val_pesq=final, drop_after_peak=best.val_pesq - final if valid else np.nan,
            drop_smoothed=drop_s, peak_epoch_smoothed=peak_s,
            final_val_stoi=e.val_stoi.iloc[-1] if "val_stoi" in e else np.nan,
            early_stop_epoch=int(fired.iloc[0]) if len(fired) else np.nan,
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


def _number(x) -> bool:
    """A finite number (numpy scalars included), not NaN, 'mixed' or None."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _config_value(values: pd.Series):
    """The variant's config value when its seeds agree; 'mixed' when they do not."""
    u = values.dropna().unique()
    return u[0] if len(u) == 1 else (np.nan if len(u) == 0 else MIXED)


def _config_text(value, absent: str, unit: float = 1.0) -> str:
    """A config value for a table cell: the number, 'mixed' when the seeds disagree, `absent` when no run has it."""
    if isinstance(value, str) and value == MIXED:
        return MIXED
    return f"{value / unit:g}" if _number(value) else absent


def expected_skip_rate(p, batch_size, strategy) -> float:
    """Share of discriminator updates that injected failures at per-sample rate p alone would skip under
    `strategy`: the binomial weight of every count k of failed labels in a batch of B whose labels `make_labels`
    skips (skip: any failure, 1 - (1 - p)^B; masked: all B, p^B; batch_mean: never). Why the real label path:
    the expectation then follows the strategies as they are, not a formula kept beside them."""
    from cmgan_lib.pesq_labels import STRATEGIES, make_labels

    if not (_number(p) and _number(batch_size) and isinstance(strategy, str) and strategy in STRATEGIES):
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
        row.update({k: _config_value(g[k]) for k in CONFIG_KEYS if k in g})
        for q in SEED_MEAN_COLUMNS:
            if q in g:
                iv = mean_interval(g[q].to_numpy(dtype=float))
                row.update({q: iv.mean, f"{q}_low": iv.low, f"{q}_high": iv.high, f"{q}_n": iv.n})
        for total in ("injected_failures", "data_failures"):
            if total in g:
                row[f"{total}_total"] = g[total].sum(min_count=1)
        if "steps" in g and g.steps.notna().any():
            skip = wilson(int(g.skipped.sum()), int(g.steps.sum()))
            row.update(skipped=skip.k, steps=skip.n, skip_rate=skip.p, skip_low=skip.low, skip_high=skip.high)
        row["skip_rate_from_injection"] = expected_skip_rate(row.get("pesq_fail_inject"), row.get("batch_size"),
                                                             row.get("pesq_strategy"))  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def _pm(iv_mean: float, low: float, high: float, digits: int = 2) -> str:
    if not np.isfinite(iv_mean):
        return ""
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{iv_mean:.{digits}f}"
    return f"{iv_mean:.{digits}f} ± {(high - low) / 2:.{digits}f}"


def _seed_mean(r, q: str, digits: int = 2) -> str:
    """A seed mean ± half-width, saying how many seeds it is over when some had no value (e.g. NaN validation)."""
    text = _pm(getattr(r, q), getattr(r, f"{q}_low"), getattr(r, f"{q}_high"), digits)
    n = getattr(r, f"{q}_n", r.n_seeds)
    return f"{text} ({int(n)} of {r.n_seeds} seeds)" if text and _number(n) and n < r.n_seeds else text


def _pct_interval(p: float, low: float, high: float, k=None, n=None) -> str:
    if not np.isfinite(p):
        return ""
    counts = f"{int(k)} of {int(n)} = " if k is not None and n is not None and np.isfinite(n) else ""
    return f"{counts}{100 * p:.0f}% ({100 * low:.0f}-{100 * high:.0f}%)"


def headline_table(per_variant: pd.DataFrame) -> pd.DataFrame:
    """The short table notebook 02 shows (seed means ± 95% t half-width; skip rate with Wilson 95%; failed PESQ
    labels summed over seeds); the full numbers are in training_per_variant.csv."""
    out = pd.DataFrame({
        "variant": per_variant.variant,
        "seeds": per_variant.n_seeds,
        "PESQ labels": per_variant.get("pesq_strategy", ""),
        "injected p": per_variant.get("pesq_fail_inject", pd.Series(np.nan, index=per_variant.index)).map(
            lambda p: _config_text(p, "0 (no key)")),
        "crop (s)": per_variant.get("cut_len", pd.Series(np.nan, index=per_variant.index)).map(
            lambda c: _config_text(c, "n/a (no key)", 16000)),
        "best val PESQ": [_seed_mean(r, "best_val_pesq") for r in per_variant.itertuples()],
        "peak epoch": [_seed_mean(r, "best_epoch", 1 if r.n_seeds > 1 else 0) for r in per_variant.itertuples()],
        "final val PESQ": [_seed_mean(r, "final_val_pesq") for r in per_variant.itertuples()],
        "drop after peak": [_seed_mean(r, "drop_after_peak") for r in per_variant.itertuples()],
        "drop (smoothed)": [_seed_mean(r, "drop_smoothed") for r in per_variant.itertuples()]
        if "drop_smoothed" in per_variant else "",
        "smoothed peak epoch": [_seed_mean(r, "peak_epoch_smoothed", 1 if r.n_seeds > 1 else 0)
                                for r in per_variant.itertuples()] if "peak_epoch_smoothed" in per_variant else "",
        "failed labels: injected, from the data": [
            ", ".join("n/a" if not np.isfinite(x) else str(int(x)) for x in (r.injected_failures_total,
                                                                               r.data_failures_total))
            for r in per_variant.itertuples()] if "data_failures_total" in per_variant else "",
        "updates skipped (95% CI)": [_pct_interval(r.skip_rate, r.skip_low, r.skip_high, r.skipped, r.steps)
                                     for r in per_variant.itertuples()] if "skip_low" in per_variant else "",
    })  # fmt: skip
    return out.set_index("variant")


def show_headline(per_variant: pd.DataFrame):
    """The headline table as notebook 02 displays it (text left-aligned)."""
    return left_aligned(headline_table(per_variant))


def default_comparisons(variants: Sequence[str], reference: str = REFERENCE) -> list[list[str]]:
    """Every variant against `reference` when the runs have it; none otherwise."""
    return [[v, reference] for v in variants if v != reference] if reference in variants else []


def compare_variants(per_seed: pd.DataFrame, comparisons: Sequence[Sequence[str]]) -> pd.DataFrame:
    """For each (variant, reference): the difference of each COMPARED quantity over seeds (Welch 95%) and its
    verdict by the study's one rule (`stats.effect_verdict`): no direction unless the interval excludes 0.
    n_variant / n_reference count the seeds with a value (a final validation PESQ can be NaN), as the interval."""
    rows = []
    for variant, reference in comparisons:
        a, b = per_seed[per_seed.variant == variant], per_seed[per_seed.variant == reference]
        for q, words in COMPARED.items():
            diff: Interval = difference_interval(a[q].to_numpy(dtype=float), b[q].to_numpy(dtype=float))
            rows.append(dict(variant=variant, reference=reference, quantity=q, difference=diff.mean,
                             ci95_low=diff.low, ci95_high=diff.high, n_variant=int(np.isfinite(a[q]).sum()),
                             n_reference=int(np.isfinite(b[q]).sum()),
                             verdict=effect_verdict(diff, f"{words}, {variant} - {reference}")))  # fmt: skip
    return pd.DataFrame(rows, columns=["variant", "reference", "quantity", "difference", "ci95_low", "ci95_high",
                                       "n_variant", "n_reference", "verdict"])  # fmt: skip


def _describe(per_variant: pd.DataFrame, variant: str) -> str:
    r = per_variant[per_variant.variant == variant]
    if r.empty:
        return f"`{variant}`: no runs"
    r = r.iloc[0]
    p = _config_text(r.get("pesq_fail_inject"), "0")
    crop = _config_text(r.get("cut_len"), "", 16000)
    crop = f", crop {crop}{'' if crop == MIXED else ' s'}" if crop else ""
    skip = _pct_interval(r.get("skip_rate", np.nan), r.get("skip_low", np.nan), r.get("skip_high", np.nan),
                         r.get("skipped"), r.get("steps"))  # fmt: skip
    return (f"`{variant}` ({r.n_seeds} seed{'s' if r.n_seeds != 1 else ''}, labels `{r.get('pesq_strategy', '?')}`, "
            f"injected p = {p}{crop}, updates skipped {skip or 'n/a'})")  # fmt: skip


def verdict_markdown(comparisons: pd.DataFrame, per_variant: pd.DataFrame, reference: str = REFERENCE,
                     regime: str | None = None) -> str:  # fmt: skip
    """The verdict that ends notebook 02, generated from the comparison table (it changes when the runs do);
    `regime` (`regime_markdown`) opens it, so the verdict names the conditions it holds under."""
    lines = ["## Verdict (generated from the runs above)", ""] + ([regime, ""] if regime else [])
    if comparisons.empty:
        variants = list(per_variant.variant)
        if len(variants) < 2:
            lines.append(f"Only one variant ({', '.join(f'`{v}`' for v in variants)}): nothing to compare.")
        else:
            lines.append(f"No comparison to make: the runs hold no `{reference}` variant and no `comparisons` were "
                         "given.")  # fmt: skip
        return "\n".join(lines)
    for (variant, ref), g in comparisons.groupby(["variant", "reference"], sort=False):
        lines.append(f"**{variant} against {ref}**: {_describe(per_variant, variant)} against "
                     f"{_describe(per_variant, ref)}.")  # fmt: skip
        lines += [f"- {v}" for v in g.verdict]
        lines.append("")
    lines.append("Differences are means over seeds with Welch 95% intervals; a difference is called higher or lower "
                 "only when its interval excludes zero (`cmgan_lib.stats.effect_verdict`). A positive drop means "
                 "validation PESQ fell further after its peak; best - final is positive even for a flat noisy curve "
                 "(the maximum of the noise), the smoothed drop (peak of the centred 5-epoch rolling mean - mean of "
                 "the last 5 epochs) much less so (`collapse_table` measures the rest).")  # fmt: skip
    return "\n".join(lines)


def selection_split(val_split) -> str:
    """Which split a run validated on, so selected its best checkpoint (a config without the key predates it)."""
    if not isinstance(val_split, str) or not val_split:
        return "test (published behaviour)"
    return "test (published behaviour)" if val_split == "test" else f"{val_split} (held out from the test set)"


def splits_markdown(configs: pd.DataFrame) -> str:
    """One sentence naming the validation split(s) of the runs, i.e. what picked best.pt and early stopping."""
    split = configs.val_split if "val_split" in configs else pd.Series([np.nan] * len(configs))
    notes = split.map(selection_split).value_counts()
    return "Validation (best checkpoint, early stopping) used the " + "; ".join(
        f"**{note}** split ({n} run{'s' if n != 1 else ''})" for note, n in notes.items()) + "."  # fmt: skip


def data_order(reshuffle) -> str:
    """Which file order a run trained in (issue 20); a config without the key predates the switch and reshuffled."""
    if isinstance(reshuffle, str):
        reshuffle = reshuffle.lower() in ("true", "1", "yes")
    if reshuffle is None or (isinstance(reshuffle, float) and math.isnan(reshuffle)) or bool(reshuffle):
        return "a new file order every epoch (not the published order)"
    return "the same file order every epoch (published: DistributedSampler without set_epoch)"


def data_order_markdown(configs: pd.DataFrame) -> str:
    """One sentence naming the data order(s) of the runs: the published loader never reshuffles the file order."""
    order = configs.reshuffle_each_epoch if "reshuffle_each_epoch" in configs else pd.Series([np.nan] * len(configs))
    notes = order.map(data_order).value_counts()
    return "Data order: " + "; ".join(f"**{note}** ({n} run{'s' if n != 1 else ''})" for note, n in notes.items()) + "."


def runs_data_order(run_root: str | os.PathLike) -> str:
    """`data_order_markdown` of the runs under `run_root` (a shared report's README); unreadable configs left out."""
    values = []
    for d in find_runs(run_root):
        try:
            values.append(run_config(d).get("reshuffle_each_epoch", np.nan))
        except ValueError:
            continue
    if not values:
        return "Data order: no readable run config."
    return data_order_markdown(pd.DataFrame({"reshuffle_each_epoch": values}))


def clip_markdown(per_seed: pd.DataFrame) -> str:
    """How often the pre-clip gradient norms exceeded the configured clip value, per variant, in words."""
    lines = []
    for variant, g in per_seed.groupby("variant", sort=False):
        clip = _config_value(g.grad_clip_norm) if "grad_clip_norm" in g else np.nan
        gmax, dmax = (g[c].max() if c in g else np.nan for c in ("grad_norm_g_max", "grad_norm_d_max"))
        if isinstance(clip, str) and clip == MIXED:
            per_seed_clip = ", ".join(f"{r}: {_config_text(c, 'no key')}" for r, c in zip(g.run, g.grad_clip_norm,
                                                                                        strict=True))  # fmt: skip
            lines.append(f"- `{variant}`: clip value mixed across seeds ({per_seed_clip}); not summarised; largest "
                         f"pre-clip norms: generator {gmax:.3g}, discriminator {dmax:.3g}.")  # fmt: skip
            continue
        if not _number(clip) or clip <= 0:
            lines.append(f"- `{variant}`: no clipping configured; largest pre-clip norms: generator {gmax:.3g}, "
                         f"discriminator {dmax:.3g}.")  # fmt: skip
            continue
        parts = []
        for net, name, mx in (("g", "generator", gmax), ("d", "discriminator", dmax)):
            k, n = g[f"clip_exceeded_{net}"].sum(), g[f"clip_checked_{net}"].sum()
            parts.append(f"the {name}'s on {int(k)} of {int(n)} {'updates' if net == 'd' else 'steps'}"
                         f" ({100 * k / n:.0f}%, max {mx:.3g})" if n else f"the {name}'s: not logged")  # fmt: skip
        lines.append(f"- `{variant}`: the pre-clip norm exceeded the clip value {clip:g} — {'; '.join(parts)}.")
    return "\n".join(lines)


@dataclass
class TrainingReport:
    """Everything notebook 02 shows, computed from the run folders under one root."""

    run_root: Path
    epochs: pd.DataFrame
    steps: pd.DataFrame
    configs: pd.DataFrame
    per_seed: pd.DataFrame
    per_variant: pd.DataFrame
    comparisons: pd.DataFrame

    def write_csvs(self, out_dir: str | os.PathLike) -> list[Path]:
        """The full tables behind the headline table and the verdict, for readers who want every column."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, df in ((PER_SEED_CSV, self.per_seed), (PER_VARIANT_CSV, self.per_variant),
                         (COMPARISONS_CSV, self.comparisons)):  # fmt: skip
            df.to_csv(out / name, index=False, float_format="%.6g")
            paths.append(out / name)
        return paths


def build_report(run_root: str | os.PathLike, comparisons: Sequence[Sequence[str]] | None = None,
                 reference: str = REFERENCE) -> TrainingReport | None:  # fmt: skip
    """Load every run under `run_root` and compute the tables and comparisons; None when there are no runs."""
    epochs, steps = load_runs(run_root)
    if not len(epochs):
        return None
    configs = load_run_configs(run_root)
    configs = configs[configs.run.isin(epochs.run)].reset_index(drop=True)
    per_seed = run_summary(epochs, steps, configs)
    per_variant = variant_summary(per_seed)
    if comparisons is None:
        comparisons = default_comparisons(list(per_variant.variant), reference)
    return TrainingReport(Path(run_root), epochs, steps, configs, per_seed, per_variant,
                          compare_variants(per_seed, comparisons))  # fmt: skip


def runs_markdown(run_root: str | os.PathLike, rep: TrainingReport | None) -> str:
    """What the notebook found: the runs and their validation split, or what to do when there are none."""
    where = shown_path(run_root)  # never this machine's absolute path: the report is shared (issue 23)
    if rep is None:
        return (f"**No runs under `{where}`**: run `make study` (or `cmgan ablate --grid GRID --out DIR` and set "
                "`run_root` to `DIR/runs`), or set `train=True`. Nothing below is shown.")  # fmt: skip
    v = rep.per_variant
    seeds = ", ".join(f"`{r.variant}` ({r.n_seeds})" for r in v.itertuples())
    n = len(rep.per_seed)
    text = f"{n} run{'s' if n != 1 else ''} under `{where}`; variants (seeds): {seeds}. {splits_markdown(rep.configs)}"
    text += f" {data_order_markdown(rep.configs)}"
    unfinished = [r for r in rep.per_seed.run if not (Path(run_root) / r / "done.json").is_file()]
    if unfinished:
        names = ", ".join(f"`{r}`" for r in unfinished)
        text += f" **Not finished** (no `done.json`: still running, or failed): {names}; their curves stop early."
    return text


def csv_links_markdown(paths: Sequence[Path], html_dir: str | os.PathLike | None = None) -> str:
    """Links to the full tables, relative to where the HTML report lies (by default the CSVs' own folder)."""
    base = Path(html_dir) if html_dir is not None else None
    links = [f"[{p.name}]({os.path.relpath(p, base) if base else p.name})" for p in paths]
    return f"Full tables (every column, every seed): {', '.join(links)} in `{shown_path(Path(paths[0]).parent)}`."


# --------------------------------------------------------------------------------------------- figures


def _variant_order(variants, reference: str = REFERENCE) -> list[str]:
    vs = list(dict.fromkeys(variants))
    return ([reference] if reference in vs else []) + sorted(v for v in vs if v != reference)


def _finish_panels(axes: np.ndarray, used: int, xlabel: str, ylabel: str) -> dict:
    """A grid of per-variant panels: hide the unused ones, label the outer axes; the legend entries of all panels,
    each label once (one figure legend for the grid)."""
    for ax in axes.flat[used:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    handles: dict = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    return handles


def plot_val_pesq(epochs: pd.DataFrame, reference: str = REFERENCE, ncols: int = 3):
    """One panel per variant: validation PESQ per epoch (mean over seeds, band = range over seeds when there are
    several), its peak, and the reference variant's mean in grey; returns the Figure."""
    import matplotlib.pyplot as plt

    variants = _variant_order(epochs.variant.unique(), reference)
    ncols = max(1, min(ncols, len(variants)))
    nrows = math.ceil(len(variants) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 3.3 * nrows + 0.9), sharex=True, sharey=True,
                             squeeze=False)  # fmt: skip
    ref = epochs[epochs.variant == reference].groupby("epoch").val_pesq.mean()
    for ax, variant in zip(axes.flat, variants, strict=False):
        e = epochs[epochs.variant == variant]
        curve = e.groupby("epoch").val_pesq.agg(["mean", "min", "max"])
        n = int(e.seed.nunique()) if e.seed.notna().any() else 1
        if variant != reference and len(ref):
            ax.plot(ref.index, ref.to_numpy(), color="grey", ls="--", lw=1.2, label=f"{reference} (mean over seeds)")
        ax.plot(curve.index, curve["mean"], marker="o", lw=1.8, color="C0",
                label="mean over seeds" if n > 1 else "one seed")  # fmt: skip
        if n > 1:
            ax.fill_between(curve.index, curve["min"], curve["max"], color="C0", alpha=0.2,
                            label=f"band = range over {n} seeds")  # fmt: skip
        peak = curve["mean"].idxmax() if curve["mean"].notna().any() else None
        subtitle = ""
        if peak is not None:
            ax.plot([peak], [curve.loc[peak, "mean"]], marker="*", ms=14, color="C3", ls="none", label="peak")
            drop = curve.loc[peak, "mean"] - curve["mean"].iloc[-1]
            subtitle = f"\npeak at epoch {peak}, then {'down' if drop > 0 else 'no drop'}" + (
                f" by {drop:.3f}" if drop > 0 else "")  # fmt: skip
        fired = e[e.early_stop == 1].groupby("run").head(1) if "early_stop" in e else e.iloc[:0]
        if len(fired):
            ax.scatter(fired.epoch, fired.val_pesq, marker="x", s=70, color="black", zorder=5,
                       label="early stopping fired")  # fmt: skip
        ax.set_title(f"{variant} ({n} seed{'s' if n != 1 else ''}){subtitle}", fontsize=10)
        integer_ticks(ax)
        ax.set(xlabel="", ylabel="")
    handles = _finish_panels(axes, len(variants), EPOCH_LABEL if ncols == 1 else "epoch", "validation PESQ (MOS-LQO)")
    fig.suptitle(f"Validation PESQ per epoch, each variant against {reference}" if len(ref) and len(variants) > 1
                 else "Validation PESQ per epoch", fontsize=12)  # fmt: skip
    fig.tight_layout(rect=(0, 0.1 if nrows == 1 else 0.05, 1, 1))
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(4, len(handles)), frameon=False)
    return fig


def plot_skips_and_disc_loss(per_seed: pd.DataFrame, per_variant: pd.DataFrame, steps: pd.DataFrame,
                             reference: str = REFERENCE):  # fmt: skip
    """Left: the share of discriminator updates skipped, as applied (Wilson 95%), beside what the injected p
    alone would give under each variant's strategy (`expected_skip_rate`, the table's number). Right (when any
    update ran): the discriminator loss of the updates that ran."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    variants = _variant_order(per_variant.variant, reference)
    pv = per_variant.set_index("variant").loc[variants]
    ran = steps[(steps.disc_skipped == 0) & np.isfinite(steps.disc_loss.astype(float))] if len(steps) else steps
    two = len(ran) > 0
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(12 if two else 6.5, 0.6 * len(variants) + 2.4),
                             sharey=True, squeeze=False)  # fmt: skip
    ax = axes[0, 0]
    y = np.arange(len(variants))
    rate = 100 * pv.skip_rate.to_numpy(dtype=float)
    err = np.vstack([rate - 100 * pv.skip_low.to_numpy(dtype=float), 100 * pv.skip_high.to_numpy(dtype=float) - rate])
    ax.errorbar(rate, y, xerr=err, fmt="o", color="C0", capsize=4, label="applied (95% Wilson interval)")
    expected = 100 * pv.skip_rate_from_injection.to_numpy(dtype=float)
    if np.nanmax(np.nan_to_num(expected, nan=0.0)) > 0:
        ax.plot(expected, y, "x", color="C3", ms=9, label="expected from the injected p alone (skip: 1 - (1 - p)^B; "
                "masked: p^B; batch_mean: never)")  # fmt: skip
    ax.set_yticks(y, [f"{v}\n({int(r.skipped)} of {int(r.steps)} skipped)" if np.isfinite(r.steps) else v
                      for v, r in pv.iterrows()])  # fmt: skip
    ax.set(xlim=(-2, 102), xlabel="discriminator updates skipped (% of training steps)")
    ax.invert_yaxis()
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=1, fontsize=9)
    if two:
        ax = axes[0, 1]
        pos = {v: i for i, v in enumerate(variants)}
        r = ran.assign(y=ran.variant.map(pos))
        sns.boxplot(data=r, x="disc_loss", y="variant", order=variants, ax=ax, color="lightsteelblue",
                    fliersize=0, orient="h")  # fmt: skip
        sns.stripplot(data=r, x="disc_loss", y="variant", order=variants, ax=ax, color="C0", size=2.5, alpha=0.5,
                      orient="h")  # fmt: skip
        ax.set_xscale("log")
        plain_log_ticks(ax, "x")
        ax.set(xlabel="discriminator loss per update that ran (MSE, log scale)", ylabel="",
               title="Loss of the updates that ran (skipped ones have none)")  # fmt: skip
    axes[0, 0].set_ylabel("")
    fig.suptitle("Discriminator updates skipped, and the loss of those that ran" if two
                 else "Discriminator updates skipped (no update ran)")  # fmt: skip
    fig.tight_layout()
    return fig


def plot_grad_norms(steps: pd.DataFrame, per_seed: pd.DataFrame, reference: str = REFERENCE):
    """Pre-clip global gradient norms per step, generator and discriminator, median over seeds (band = range
    over seeds when there are several), with each configured clip value; returns the Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    variants = _variant_order(steps.variant.unique(), reference)
    n_seeds = int(steps.groupby("variant").seed.nunique().max()) if steps.seed.notna().any() else 1
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharex=True)
    clips = per_seed.groupby("grad_clip_norm").variant.unique() if "grad_clip_norm" in per_seed else {}
    for ax, net, name in ((axes[0], "grad_norm_g", "Generator"), (axes[1], "grad_norm_d", "Discriminator")):
        data = steps[["variant", "seed", "step", net]].dropna(subset=[net])
        sns.lineplot(data=data, x="step", y=net, hue="variant", hue_order=variants, estimator="median",
                     errorbar=("pi", 100) if n_seeds > 1 else None, ax=ax, lw=1.2)  # fmt: skip
        for clip, vs in clips.items() if len(clips) else []:
            if _number(clip) and clip > 0:
                ax.axhline(clip, color="black", ls="--", lw=1, label=f"clip value {clip:g} ({', '.join(vs)})")
        ax.set_yscale("log")
        plain_log_ticks(ax, "y")
        integer_ticks(ax)
        ax.set(xlabel=STEP_LABEL, ylabel="pre-clip gradient norm (L2, log scale)",
               title=f"{name}{' (updates that ran)' if net == 'grad_norm_d' else ''}")  # fmt: skip
    handles, labels = axes[1].get_legend_handles_labels()
    axes[0].get_legend().remove() if axes[0].get_legend() else None
    band = f"; band = range over {n_seeds} seeds" if n_seeds > 1 else ""
    legend_outside(axes[1], title=f"median over seeds{band}" if n_seeds > 1 else None, handles=handles, labels=labels)
    fig.suptitle("Pre-clip gradient norms per training step, by variant")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------- issue 18: collapse, overfitting, mechanism


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


def band_words(n: int) -> str:
    """What a seed band is, for a legend: it changes with the number of seeds."""
    return f"95% t interval over {n} seeds" if n >= 3 else (f"range over {n} seeds" if n == 2 else "one seed: no band")


def _n_seeds(df: pd.DataFrame) -> int:
    return int(df.run.nunique()) if "run" in df and len(df) else 0


def _variant_colours(variants: Sequence[str], reference: str = REFERENCE) -> dict:
    """One colour per variant, the same in every issue-18 figure; the reference in black."""
    import seaborn as sns

    others = [v for v in variants if v != reference]
    colours = dict(zip(others, sns.color_palette("colorblind", max(10, len(others))), strict=False))
    return {**colours, reference: "black"}


def plot_collapse_curves(epochs: pd.DataFrame, variants: Sequence[str] | None = None, reference: str = REFERENCE):
    """Every variant's mean validation PESQ per epoch on ONE axis, with its seed band and its peak marked: the
    collapse (rise, peak, fall) of each variant read against the others directly; returns the Figure."""
    import matplotlib.pyplot as plt

    order = _variant_order(epochs.variant.unique(), reference)
    variants = [v for v in order if variants is None or v in variants]
    colours = _variant_colours(variants, reference)
    fig, ax = plt.subplots(figsize=(11, 5.5))
    for variant in variants:
        e = epochs[epochs.variant == variant]
        curve = seed_band(e, "val_pesq")
        if not curve["mean"].notna().any():
            continue
        n, c = _n_seeds(e), colours[variant]
        ref = variant == reference
        ax.plot(curve.index, curve["mean"], color=c, lw=2.6 if ref else 1.6,
                label=f"{variant} ({n} seed{'s' if n != 1 else ''})")  # fmt: skip
        if n >= 2:
            ax.fill_between(curve.index, curve["low"], curve["high"], color=c, alpha=0.12, lw=0)
        peak = curve["mean"].idxmax()
        ax.plot([peak], [curve.loc[peak, "mean"]], marker="*", ms=14, color=c, ls="none", markeredgecolor="white",
                zorder=5)  # fmt: skip
    ax.plot([], [], marker="*", ms=13, color="grey", ls="none", label="peak of the mean curve")
    integer_ticks(ax)
    ax.set(xlabel=EPOCH_LABEL, ylabel="validation PESQ (MOS-LQO), mean over seeds",
           title="Validation PESQ per epoch, every variant on one axis")  # fmt: skip
    legend_outside(ax, title="mean over seeds; band: 95% t\ninterval (3+ seeds) or range (2)")
    fig.tight_layout()
    return fig


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
    for variant in _variant_order(per_run.variant, reference):
        g = per_run[per_run.variant == variant]
        row = dict(variant=variant, n_seeds=len(g), measured_steps=int(g.measured_steps.sum()))
        for q in ("ratio", "cos"):
            iv = mean_interval(g[q].to_numpy(dtype=float))
            row.update({q: iv.mean, f"{q}_low": iv.low, f"{q}_high": iv.high})
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def _ci(low: float, high: float, digits: int = 2, signed: bool = False, kind: str = "f") -> str:
    f = f"{'+' if signed else ''}.{digits}{kind}"
    return f"95% CI {low:{f}} to {high:{f}}" if np.isfinite(low) and np.isfinite(high) else "one seed: no interval"


def grad_share_markdown(table: pd.DataFrame) -> str:
    """The mechanism in words, per variant: can the adversarial term steer the generator at all in this regime?
    'can' needs the ratio's interval above STEER_RATIO, 'cannot' below it; otherwise undecided."""
    if table is None or table.empty:
        return ("**Gradient share: not measured** (the step logs have no `grad_ratio_adv_rest`: runs from before "
                "issue 18, or `grad_share_every: 0`).")  # fmt: skip
    lines = [f"**Gradient share** (median over measured steps, mean over seeds): the adversarial term can steer the "
             f"generator when its gradient is at least {STEER_RATIO:g}x the other terms' (the whole 95% interval "
             f"above {STEER_RATIO:g}), cannot when the whole interval is below; its cosine with them says whether it "
             f"pushes along them (> {ALONG_COS:g}), against them (< -{ALONG_COS:g}) or across them.", ""]  # fmt: skip
    for r in table.itertuples():
        one = not (np.isfinite(r.ratio_low) and np.isfinite(r.ratio_high))
        low, high = (r.ratio, r.ratio) if one else (r.ratio_low, r.ratio_high)
        if not np.isfinite(r.ratio):
            lines.append(f"- `{r.variant}`: not measured.")
            continue
        can = "can" if low >= STEER_RATIO else ("cannot" if high < STEER_RATIO else "may or may not (undecided)")
        if np.isfinite(r.cos):
            way = "along" if r.cos > ALONG_COS else ("against" if r.cos < -ALONG_COS else "across")
            cos = f"cosine {r.cos:+.2f} ({_ci(r.cos_low, r.cos_high, signed=True)}), mostly {way} the other terms"
        else:
            cos = "cosine undefined (no adversarial gradient)"
        seeds = f"{r.n_seeds} seed{'s' if r.n_seeds != 1 else ''}, {r.measured_steps} measured steps"
        ci = _ci(r.ratio_low, r.ratio_high, 2, kind="g")
        lines.append(f"- `{r.variant}`: in this regime the adversarial term's gradient is {r.ratio:.2g}x ({ci}; "
                     f"{seeds}) the size of the other terms', {cos}: it {can} steer the generator.")  # fmt: skip
    return "\n".join(lines)


def plot_grad_share(steps: pd.DataFrame, reference: str = REFERENCE, smooth: int = 5):
    """Left: the ratio |g_adv| / |g_rest| over training steps per variant (each run's measured steps smoothed by a
    centred rolling median of `smooth`, then the mean over seeds; log axis); right: the cosine the same way.
    None when nothing was measured. Ratios of 0 (no adversarial weight) cannot sit on a log axis: left out, said."""
    import matplotlib.pyplot as plt

    if not len(steps) or GRAD_RATIO not in steps or not np.isfinite(steps[GRAD_RATIO].astype(float)).any():
        return None
    m = steps[np.isfinite(steps[GRAD_RATIO].astype(float))].sort_values(["run", "step"])
    roll = m.groupby("run")[[GRAD_RATIO, GRAD_COS]].transform(
        lambda x: x.astype(float).rolling(smooth, center=True, min_periods=1).median()
    )
    m = m.assign(ratio=roll[GRAD_RATIO], cos=roll[GRAD_COS])
    variants = _variant_order(m.variant.unique(), reference)
    colours = _variant_colours(variants, reference)
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.6), sharex=True)
    zero = []
    for variant in variants:
        v = m[m.variant == variant]
        n = _n_seeds(v)
        label = f"{variant} ({n} seed{'s' if n != 1 else ''})"
        mean = v.groupby("step")[["ratio", "cos"]].mean()
        pos = mean.ratio[mean.ratio > 0]
        if len(pos):
            axes[0].plot(pos.index, pos.to_numpy(), color=colours[variant], lw=1.4, label=label)
        else:
            zero.append(variant)
        if mean.cos.notna().any():
            axes[1].plot(mean.index, mean.cos.to_numpy(), color=colours[variant], lw=1.4, label=label)
    axes[0].axhline(STEER_RATIO, color="black", ls="--", lw=1, label=f"{STEER_RATIO:g}: the threshold for steering")
    axes[0].set_yscale("log")
    plain_log_ticks(axes[0], "y")
    axes[0].set(xlabel=STEP_LABEL, ylabel="gradient norm ratio, adversarial / other terms (log)",
                title="Size of the adversarial gradient" + (f"\n(ratio 0, not drawn: {', '.join(zero)})" if zero
                                                           else ""))  # fmt: skip
    axes[1].axhline(0, color="black", lw=0.8)
    axes[1].set(xlabel=STEP_LABEL, ylabel="cosine, adversarial vs other terms", ylim=(-1.05, 1.05),
                title="Its direction against the other terms")  # fmt: skip
    for ax in axes:
        integer_ticks(ax)
    handles, labels = axes[0].get_legend_handles_labels()
    for h, lab in zip(*axes[1].get_legend_handles_labels(), strict=True):
        if lab not in labels:
            handles.append(h)
            labels.append(lab)
    legend_outside(axes[1], title=f"mean over seeds of a rolling\nmedian of {smooth} measured steps", handles=handles,
                   labels=labels)  # fmt: skip
    fig.suptitle("The adversarial term's gradient against the other loss terms', per measured training step")
    fig.tight_layout()
    return fig


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
    for variant in _variant_order(per_seed.variant, reference):
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


def seed_spread_markdown(spread: pd.DataFrame) -> str:
    """The seed-to-seed spread in words: the size a difference between variants has to exceed."""
    multi = spread[spread.n_seeds >= 2] if len(spread) else spread
    if multi.empty or not np.isfinite(multi.final_val_pesq_range).any():
        return "**Seed spread: not measured** (no variant has two seeds)."
    worst = multi.loc[multi.final_val_pesq_range.idxmax()]
    lines = [f"**Seed spread**: two seeds of the same variant differ by up to {worst.final_val_pesq_range:.3f} in "
             f"final validation PESQ (`{worst.variant}`): a comparison must exceed that.", ""]  # fmt: skip
    for r in multi.itertuples():
        parts = [f"{words} SD {getattr(r, f'{q}_sd'):.3f}, range {getattr(r, f'{q}_range'):.3f}"
                 for q, words in SPREAD_QUANTITIES.items() if np.isfinite(getattr(r, f"{q}_sd"))]  # fmt: skip
        gap = ""
        if np.isfinite(r.curve_gap_mean):
            gap = (f"; two seeds' validation curves differ by {r.curve_gap_mean:.3f} per epoch on average (up to "
                   f"{r.curve_gap_max:.3f} for the most different pair)")  # fmt: skip
        lines.append(f"- `{r.variant}` ({r.n_seeds} seeds): {'; '.join(parts)}{gap}.")
    return "\n".join(lines)


LOSS_COLUMNS = ("loss", "val_loss")  # epoch log: training loss (mean over the epoch's steps), validation loss


def _has_losses(epochs: pd.DataFrame) -> bool:
    return all(c in epochs and np.isfinite(epochs[c].astype(float)).any() for c in LOSS_COLUMNS)


def overfitting_per_run(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per run: the validation loss's rise after its minimum and the training loss's change over the same epochs,
    raw (final - minimum, as a reader would read the log) and smoothed (mean of the last 5 epochs - minimum of the
    centred 5-epoch rolling mean: the raw rise is the noise's range even on a flat curve); `still_falling` when
    the smoothed minimum is the last epoch. Smoothed columns NaN for runs under MIN_SMOOTH_EPOCHS epochs."""
    cols = ["run", "variant", "seed", "epochs", "val_loss_min_epoch", "val_loss_rise", "train_loss_change",
            "val_loss_min_epoch_smoothed", "val_loss_rise_smoothed", "train_loss_change_smoothed",
            "still_falling"]  # fmt: skip
    if not _has_losses(epochs):
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
    for variant in _variant_order(per_run.variant, reference):
        g = per_run[per_run.variant == variant]
        falling = int(np.nansum(g.still_falling.to_numpy(dtype=float)))
        row = dict(variant=variant, n_seeds=len(g), epochs=int(g.epochs.max()), still_falling=falling)
        for q in ("val_loss_rise", "train_loss_change", "val_loss_rise_smoothed", "train_loss_change_smoothed",
                  "val_loss_min_epoch_smoothed"):  # fmt: skip
            iv = mean_interval(g[q].to_numpy(dtype=float))
            row.update({q: iv.mean, f"{q}_low": iv.low, f"{q}_high": iv.high})
        rows.append(row)
    return pd.DataFrame(rows)


def overfitting_sentence(r) -> str:
    """One variant's row of `overfitting_table` in words (smoothed measures; direction only from an interval)."""
    if r.n_seeds and r.still_falling == r.n_seeds:
        return "validation loss still falling: not overfitting by this measure"
    rise, train = r.val_loss_rise_smoothed, r.train_loss_change_smoothed
    if not np.isfinite(rise):
        if r.epochs < MIN_SMOOTH_EPOCHS:
            return f"too short for the smoothed measure ({r.epochs} epochs; it needs {MIN_SMOOTH_EPOCHS})"
        return "validation loss not logged"
    ci = _ci(r.val_loss_rise_smoothed_low, r.val_loss_rise_smoothed_high, 3, signed=True)
    where = f"after its minimum at epoch {r.val_loss_min_epoch_smoothed:.0f}"
    if not np.isfinite(r.val_loss_rise_smoothed_low):
        return f"validation loss rose by {rise:.3f} {where} ({ci}, no verdict); training loss changed by {train:+.3f}"
    if r.val_loss_rise_smoothed_low <= TINY:
        return f"validation loss rose by {rise:.3f} {where} ({ci}): no detectable rise at this budget"
    train_fell = (
        (r.train_loss_change_smoothed_high < 0) if np.isfinite(r.train_loss_change_smoothed_high) else train < 0
    )
    if train_fell:
        return (
            f"overfitting: training loss fell by {-train:.3f} while validation loss rose by {rise:.3f} ({ci}) {where}"
        )
    return (f"validation loss rose by {rise:.3f} ({ci}) {where} while training loss did not fall (change "
            f"{train:+.3f}): not the overfitting pattern")  # fmt: skip


def overfitting_markdown(table: pd.DataFrame) -> str:
    """Per variant: does the training loss keep falling while the validation loss rises (overfitting)?"""
    if table is None or table.empty:
        return "**Overfitting: not measured** (the epoch logs lack `loss` or `val_loss`)."
    head = ("**Overfitting** (smoothed: the rise is the mean of the last 5 epochs minus the minimum of the centred "
            "5-epoch rolling mean, since final minus minimum is positive even for a flat noisy curve; intervals are "
            "95% t over seeds):")  # fmt: skip
    return "\n".join([head, ""] + [f"- `{r.variant}`: {overfitting_sentence(r)}." for r in table.itertuples()])


def plot_train_vs_val_loss(epochs: pd.DataFrame, reference: str = REFERENCE, ncols: int = 3):
    """One panel per variant (shared epoch axis): training and validation loss, seed means with bands, and the
    epoch of the mean validation loss's minimum; overfitting reads as the two curves parting. None without both."""
    import matplotlib.pyplot as plt

    if not _has_losses(epochs):
        return None
    variants = _variant_order(epochs.variant.unique(), reference)
    ncols = max(1, min(ncols, len(variants)))
    nrows = math.ceil(len(variants) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 3.2 * nrows + 0.9), sharex=True, squeeze=False)
    for ax, variant in zip(axes.flat, variants, strict=False):
        e = epochs[epochs.variant == variant]
        n = _n_seeds(e)
        for col, colour, words in (("loss", "C0", "training loss"), ("val_loss", "C1", "validation loss")):
            curve = seed_band(e, col)
            ax.plot(curve.index, curve["mean"], color=colour, lw=1.6, label=f"{words} (mean over seeds)")
            if n >= 2:
                ax.fill_between(curve.index, curve["low"], curve["high"], color=colour, alpha=0.2, lw=0,
                                label=f"band: {band_words(n)}")  # fmt: skip
            if col == "val_loss" and curve["mean"].notna().any():
                m = curve["mean"].idxmin()
                ax.axvline(m, color="C1", ls=":", lw=1)
                ax.plot([m], [curve.loc[m, "mean"]], marker="*", ms=12, color="C3", ls="none",
                        label="minimum of the validation loss")  # fmt: skip
                ax.set_title(f"{variant} ({n} seed{'s' if n != 1 else ''})\nvalidation minimum at epoch {m}",
                             fontsize=10)  # fmt: skip
        integer_ticks(ax)
    handles = _finish_panels(axes, len(variants), "epoch", "generator loss (weighted sum)")
    fig.suptitle("Training loss (mean over each epoch's steps) and validation loss (after each epoch)", fontsize=12)
    fig.tight_layout(rect=(0, 0.1 if nrows == 1 else 0.05, 1, 1))
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(4, len(handles)), frameon=False)
    return fig


def _given(x) -> bool:
    """A config value that is there (not None, not NaN: a key the run's config lacks)."""
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _regime_parts(c: pd.Series) -> list[str]:
    """The config half of a run's regime, in words; a missing key leaves its part out."""
    parts = []
    if _given(c.get("data_dir")):
        parts.append("the data folder's training clips")
    elif _given(c.get("synthetic_n_train")):
        n = int(c["synthetic_n_train"])
        parts.append(f"{n} synthetic training clip{'s' if n != 1 else ''}")
    crop = f"{float(c['cut_len']) / 16000:g} s " if _number(c.get("cut_len")) else ""
    fixed = c.get("fixed_crops")
    fixed = fixed.lower() in ("true", "1", "yes") if isinstance(fixed, str) else bool(fixed) if _given(fixed) else False
    parts.append(f"one fixed {crop}crop each" if fixed else f"a new random {crop}crop each visit")
    if _number(c.get("train_repeat")) and int(c["train_repeat"]) > 1:
        parts.append(f"each clip visited {int(c['train_repeat'])} times an epoch")
    if _number(c.get("batch_size")):
        parts.append(f"batch {int(c['batch_size'])}")
    return parts


def _model_parts(c: pd.Series) -> list[str]:
    parts = []
    if _number(c.get("num_channel")):
        parts.append(f"a {int(c['num_channel'])}-channel model")
    if _number(c.get("lr_g")):
        parts.append(f"lr_g {float(c['lr_g']):g}")
    v = c.get("val_max_files")
    parts.append(f"{int(v)} validation files" if _number(v) else "all validation files")
    return parts


def regime_markdown(configs: pd.DataFrame, epochs: pd.DataFrame, steps: pd.DataFrame | None = None) -> str:
    """One sentence naming the regime of the runs (training clips, crops, batch, steps and epochs, model size,
    learning rate, validation files), so every verdict says the conditions it holds under; runs that differ are
    listed as separate regimes with their counts, most runs first. Steps come from the step logs, epochs from the
    configs (from the logs when the configs lack the key)."""
    if configs is None or configs.empty:
        return "Regime: no readable run config."
    steps = steps if steps is not None and len(steps) else pd.DataFrame(columns=["run", "epoch"])
    groups: dict[str, list[str]] = {}
    planned: dict[str, list[float]] = {}
    for _, c in configs.iterrows():
        key = ", ".join(_regime_parts(c)) + " | " + ", ".join(_model_parts(c))
        groups.setdefault(key, []).append(c["run"])
        planned.setdefault(key, []).append(float(c["epochs"]) if _number(c.get("epochs")) else math.nan)
    texts = []
    for key, runs in sorted(groups.items(), key=lambda kv: -len(kv[1])):  # the most runs' regime first
        data, model = key.split(" | ")
        s = steps[steps.run.isin(runs)]
        per_run = s.groupby("run").size()
        per_epoch = s.groupby(["run", "epoch"]).size()
        logged = epochs[epochs.run.isin(runs)].groupby("run").epoch.max() if len(epochs) else pd.Series(dtype=float)
        n_ep = np.nanmax(planned[key]) if np.isfinite(planned[key]).any() else (logged.max() if len(logged) else None)
        when = f"{int(n_ep)} epochs" if n_ep is not None and np.isfinite(n_ep) else ""
        if len(per_epoch):
            when = (f"{int(per_epoch.median())} steps per epoch, {when + ' and ' if when else ''}up to "
                    f"{int(per_run.max())} steps per run (from the logs)")  # fmt: skip
        count = f"{len(runs)} run{'s' if len(runs) != 1 else ''}"
        texts.append(f"**{', '.join(p for p in (data, when, model) if p)}** ({count})")
    return "Regime: " + "; ".join(texts) + "."


NULL_DRAWS = 400  # simulated flat curves per run for the noise floor of drop_smoothed


def flat_null_drop(val_pesq: np.ndarray, draws: int = NULL_DRAWS, seed: int = 0) -> float:
    """The mean `drop_smoothed` of a curve with no collapse at all: `draws` flat curves of the run's length with
    the run's own epoch-to-epoch noise (SD of its residual around the 5-epoch rolling mean). Why: the smoothed drop
    still picks a maximum, so a flat noisy curve gives it a positive value; a collapse must exceed this floor."""
    v = np.asarray(val_pesq, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < MIN_SMOOTH_EPOCHS:
        return math.nan
    sd = float(np.std(v - smoothed(v), ddof=1)) / math.sqrt(1 - 1 / SMOOTH_WINDOW)  # residual of a mean of 5: 0.89 sd
    rng = np.random.default_rng(seed)
    epochs = np.arange(v.size)
    return float(np.mean([smoothed_drop(epochs, rng.normal(0.0, sd, v.size))[0] for _ in range(draws)]))


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


def collapse_markdown(table: pd.DataFrame) -> str:
    """Per variant, in words: did validation PESQ collapse after its peak, beyond what noise alone gives?"""
    if table is None or table.empty or not np.isfinite(table.drop_smoothed).any():
        return "**Collapse: not measured** (runs need at least 10 validated epochs)."
    lines = ["**Collapse** (smoothed: peak of the centred 5-epoch mean minus the mean of the last 5 epochs; the "
             "floor is what a flat curve with the run's own epoch-to-epoch noise gives; a collapse is a drop whose "
             "95% interval over seeds, minus the floor, lies above 0):", ""]  # fmt: skip
    for r in table.itertuples():
        if not np.isfinite(r.drop_smoothed):
            lines.append(f"- `{r.variant}`: too short for the smoothed measure ({r.epochs} epochs; it needs 10).")
            continue
        ci = (f" (95% CI {r.drop_low:+.3f} to {r.drop_high:+.3f})" if np.isfinite(r.drop_low)
              else " (one seed: no interval)")  # fmt: skip
        lines.append(f"- `{r.variant}` ({r.n_seeds} seed{'s' if r.n_seeds != 1 else ''}, {r.epochs} epochs): peak "
                     f"near epoch {r.peak_epoch:.0f}, then down by {r.drop_smoothed:.3f}{ci}; noise floor "
                     f"{r.floor:.3f}: **{r.verdict}**.")  # fmt: skip
    return "\n".join(lines)
