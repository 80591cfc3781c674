"""Notebook 02 (training runs, baseline against the fixes): the headline table, the sentences and the generated
verdict of the failure-injection ablation (issue 11), and the tables it writes. Presentation only: the numbers are
`training_analysis`'s, the figures `report_02_figures`'s, the runs are read by `runs`.

Epochs are numbered from 1 in every table and figure, as the trainer's console prints them ("epoch 1/3");
the CSV logs count from 0 and `runs.load_runs` converts once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cmgan_lib.core.paths import run_config, shown_path
from cmgan_lib.reports.plotting import left_aligned
from cmgan_lib.training.runs import find_runs, load_runs
from cmgan_lib.analysis.stats import plus_minus
from cmgan_lib.analysis.training_analysis import (
    ALONG_COS,
    MIN_SMOOTH_EPOCHS,
    MIXED,
    REFERENCE,
    SPREAD_QUANTITIES,
    STEER_RATIO,
    TINY,
    compare_variants,
    config_value,
    default_comparisons,
    is_number,
    load_run_configs,
    pooled_sd,
    run_summary,
    variant_summary,
)

PER_SEED_CSV = "training_per_seed.csv"
PER_VARIANT_CSV = "training_per_variant.csv"
COMPARISONS_CSV = "training_comparisons.csv"


def _config_text(value, absent: str, unit: float = 1.0) -> str:
    """A config value for a table cell: the number, 'mixed' when the seeds disagree, `absent` when no run has it."""
    if isinstance(value, str) and value == MIXED:
        return MIXED
    return f"{value / unit:g}" if is_number(value) else absent


def _seed_mean(r, q: str, digits: int = 2) -> str:
    """A seed mean ± half-width, saying how many seeds it is over when some had no value (e.g. NaN validation)."""
    mean, low, high = getattr(r, q), getattr(r, f"{q}_low"), getattr(r, f"{q}_high")
    text = plus_minus(mean, (high - low) / 2, digits) if np.isfinite(mean) else ""
    n = getattr(r, f"{q}_n", r.n_seeds)
    return f"{text} ({int(n)} of {r.n_seeds} seeds)" if text and is_number(n) and n < r.n_seeds else text


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
        clip = clip_acts_sentence(per_variant, variant)
        if clip:
            lines.append(f"- {clip}")
        lines.append("")
    lines.append("Each difference is a mean over seeds with a 95% interval: **paired** by seed (t over the per-seed "
                 "differences) where both variants ran the same seeds from the same start (identical step-1 losses "
                 "where the step logs have them), **Welch** otherwise, the reason given after each verdict; "
                 "`training_comparisons.csv` keeps Welch's interval beside every paired one. An early-stopping "
                 "variant whose logs are its reference's until it stops is a **replay** of it: its final is the "
                 "checkpoint it kept, compared paired with the reference's final; its drop is not compared. A "
                 "difference is called higher or lower only when its interval excludes zero "
                 "(`cmgan_lib.analysis.stats.effect_verdict`); otherwise it is undecided, not 'no effect'. A positive drop "
                 "means validation PESQ fell further after its peak; best - final is positive even for a flat noisy "
                 "curve (the maximum of the noise), the smoothed drop (peak of the centred 5-epoch rolling mean - "
                 "mean of the last 5 epochs) much less so (`collapse_table` measures the rest).")  # fmt: skip
    return "\n".join(lines)


def clip_acts_sentence(per_variant: pd.DataFrame, variant: str) -> str:
    """How often a clipping variant's clip acted, on G and on D (pre-clip norm above the clip value, Wilson 95%
    over all its seeds' steps); '' for a variant without clipping."""
    from cmgan_lib.analysis.stats import format_rate, wilson

    r = per_variant[per_variant.variant == variant]
    if r.empty or not is_number(r.iloc[0].get("grad_clip_norm")) or r.iloc[0].get("grad_clip_norm") <= 0:
        return ""
    r = r.iloc[0]
    parts = []
    for net, name, unit in (("g", "generator", "steps"), ("d", "discriminator", "updates")):
        k, n = r.get(f"clip_exceeded_{net}_total", np.nan), r.get(f"clip_checked_{net}_total", np.nan)
        parts.append(f"on the {name} on {format_rate(wilson(int(k), int(n)))} {unit}" if is_number(n) and n > 0
                     else f"on the {name}: not logged")  # fmt: skip
    return f"Clipping at {r.grad_clip_norm:g} acted (pre-clip norm above it) {'; '.join(parts)}."


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
        clip = config_value(g.grad_clip_norm) if "grad_clip_norm" in g else np.nan
        gmax, dmax = (g[c].max() if c in g else np.nan for c in ("grad_norm_g_max", "grad_norm_d_max"))
        if isinstance(clip, str) and clip == MIXED:
            per_seed_clip = ", ".join(f"{r}: {_config_text(c, 'no key')}" for r, c in zip(g.run, g.grad_clip_norm,
                                                                                        strict=True))  # fmt: skip
            lines.append(f"- `{variant}`: clip value mixed across seeds ({per_seed_clip}); not summarised; largest "
                         f"pre-clip norms: generator {gmax:.3g}, discriminator {dmax:.3g}.")  # fmt: skip
            continue
        if not is_number(clip) or clip <= 0:
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
            tmp = out / f".{name}.tmp"  # then renamed: notebook 01, run beside this one, never reads half a table
            df.to_csv(tmp, index=False, float_format="%.6g")
            os.replace(tmp, out / name)
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
                          compare_variants(per_seed, comparisons, steps, epochs))  # fmt: skip


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


# ------------------------------------------------------------------- issue 18: collapse, overfitting, mechanism


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


def seed_spread_markdown(spread: pd.DataFrame) -> str:
    """The seed-to-seed spread in words: its SD, and what it means for a comparison of one seed per variant.
    Why not "a comparison must exceed the range": a difference of means over n seeds varies far less than two
    single runs do (and a paired one less again); those comparisons are judged by their own intervals."""
    multi = spread[spread.n_seeds >= 2] if len(spread) else spread
    if multi.empty or not np.isfinite(multi.final_val_pesq_sd).any():
        return "**Seed spread: not measured** (no variant has two seeds)."
    sd = pooled_sd(multi, "final_val_pesq")
    worst = multi.loc[multi.final_val_pesq_sd.idxmax()]
    one = math.sqrt(2) * sd
    lines = [f"**Seed spread**: seeds of the same variant have an SD of {sd:.3f} in final validation PESQ (pooled "
             f"over {len(multi)} variant{'s' if len(multi) != 1 else ''}; the largest, `{worst.variant}`, "
             f"{worst.final_val_pesq_sd:.3f}). For a **single-seed comparison** (one run of each variant, unpaired) "
             f"this means a difference varies by chance with an SD of about {one:.3f} (√2 × {sd:.3f}): one seed "
             f"cannot tell apart variants closer than about {1.96 * one:.3f}. It is no threshold for the "
             "comparisons over seeds in the verdict below: a mean over n seeds varies √n times less, a paired "
             "difference by the spread of the per-seed differences, and each verdict's own interval decides.",
             ""]  # fmt: skip
    for r in multi.itertuples():
        parts = [f"{words} SD {getattr(r, f'{q}_sd'):.3f}, range {getattr(r, f'{q}_range'):.3f}"
                 for q, words in SPREAD_QUANTITIES.items() if np.isfinite(getattr(r, f"{q}_sd"))]  # fmt: skip
        gap = ""
        if np.isfinite(r.curve_gap_mean):
            gap = (f"; two seeds' validation curves differ by {r.curve_gap_mean:.3f} per epoch on average (up to "
                   f"{r.curve_gap_max:.3f} for the most different pair)")  # fmt: skip
        lines.append(f"- `{r.variant}` ({r.n_seeds} seeds): {'; '.join(parts)}{gap}.")
    return "\n".join(lines)


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


def _given(x) -> bool:
    """A config value that is there (not None, not NaN: a key the run's config lacks)."""
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def regime_parts(c: pd.Series) -> list[str]:
    """The config half of a run's regime, in words; a missing key leaves its part out."""
    parts = []
    if _given(c.get("data_dir")):
        parts.append("the data folder's training clips")
    elif _given(c.get("synthetic_n_train")):
        n = int(c["synthetic_n_train"])
        parts.append(f"{n} synthetic training clip{'s' if n != 1 else ''}")
    crop = f"{float(c['cut_len']) / 16000:g} s " if is_number(c.get("cut_len")) else ""
    fixed = c.get("fixed_crops")
    fixed = fixed.lower() in ("true", "1", "yes") if isinstance(fixed, str) else bool(fixed) if _given(fixed) else False
    parts.append(f"one fixed {crop}crop each" if fixed else f"a new random {crop}crop each visit")
    if is_number(c.get("train_repeat")) and int(c["train_repeat"]) > 1:
        parts.append(f"each clip visited {int(c['train_repeat'])} times an epoch")
    if is_number(c.get("batch_size")):
        parts.append(f"batch {int(c['batch_size'])}")
    return parts


def model_parts(c: pd.Series) -> list[str]:
    parts = []
    if is_number(c.get("num_channel")):
        blocks = c.get("num_tscb")  # said only when it is not the paper's 4
        depth = f", {int(blocks)}-TSCB" if is_number(blocks) and int(blocks) != 4 else ""
        parts.append(f"a {int(c['num_channel'])}-channel{depth} model")
    if is_number(c.get("lr_g")):
        parts.append(f"lr_g {float(c['lr_g']):g}")
    v = c.get("val_max_files")
    parts.append(f"{int(v)} validation files" if is_number(v) else "all validation files")
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
        key = ", ".join(regime_parts(c)) + " | " + ", ".join(model_parts(c))
        groups.setdefault(key, []).append(c["run"])
        planned.setdefault(key, []).append(float(c["epochs"]) if is_number(c.get("epochs")) else math.nan)
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
