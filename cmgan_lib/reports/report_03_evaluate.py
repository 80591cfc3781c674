"""Notebook 03 (evaluation per variant): its tables, figures, audio examples and generated verdict. Presentation
only: enhancing and scoring the test files is `cmgan_lib.analysis.evaluate`, finding the runs `cmgan_lib.training.runs`."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cmgan_lib.data.layout import split_dir
from cmgan_lib.analysis.evaluate import COMPOSITES, LEGACY_SUFFIX, evaluate_runs, score_noisy
from cmgan_lib.scoring.metrics import METRIC_NAMES
from cmgan_lib.core.paths import run_config, shown_path
from cmgan_lib.training.runs import find_finished_runs, run_identity
from cmgan_lib.analysis.stats import plus_minus, t_half_width

VARIANT_CSV = "metrics_by_variant.csv"


VARIANT_COLUMNS = [
    "variant", "seeds", "n_seeds", "metric", "mean", "std", "ci95", "ci95_low", "ci95_high", "ci_over",
    "n_files",
]  # fmt: skip


def variant_table(per_file: pd.DataFrame, confidence: float = 0.95, include_noisy: bool = True) -> pd.DataFrame:
    """Mean and 95% t-interval per (variant, metric); columns VARIANT_COLUMNS (metrics_by_variant.csv).

    With two or more seeds, the mean over files is taken per seed and the interval is over the seed means
    (ci_over="seeds"); with one seed, over the files (ci_over="files"). Files with a `reason` are left out.
    Metrics: METRIC_NAMES and `<composite>_legacy`. The "noisy" row scores the input on the same files.
    """
    kept = per_file[per_file["reason"].isna()] if "reason" in per_file else per_file
    metrics = [m for m in (*METRIC_NAMES, *(c + LEGACY_SUFFIX for c in COMPOSITES)) if m in kept]
    records = []

    def add(variant: str, df: pd.DataFrame, prefix: str, seed_col: str | None) -> None:
        seeds = sorted(int(s) for s in df[seed_col].dropna().unique()) if seed_col else []
        for metric in metrics:
            col = prefix + metric
            if col not in df or df[col].notna().sum() == 0:
                continue
            if len(seeds) >= 2:
                values = df.groupby(seed_col)[col].mean().dropna().to_numpy(dtype=float)
                over = "seeds"
            else:
                values = df[col].dropna().to_numpy(dtype=float)
                over = "files"
            mean = float(values.mean())
            half = t_half_width(values, confidence)
            records.append(dict(
                variant=variant, seeds=",".join(map(str, seeds)), n_seeds=len(seeds), metric=metric, mean=mean,
                std=float(values.std(ddof=1)) if values.size > 1 else math.nan, ci95=half,
                ci95_low=mean - half, ci95_high=mean + half, ci_over=over, n_files=int(df["name"].nunique()),
            ))  # fmt: skip

    if "variant" in kept:
        for variant, df in kept[kept["variant"].fillna("") != ""].groupby("variant", sort=True):
            add(str(variant), df, "", "seed")
    if include_noisy:
        from cmgan_lib.analysis.evaluate import NOISY_PREFIX

        add("noisy", kept.drop_duplicates("name"), NOISY_PREFIX, None)
    return pd.DataFrame(records, columns=VARIANT_COLUMNS)


def display_table(vtable: pd.DataFrame, synthetic: bool = False) -> pd.DataFrame:
    """Variants as rows ("mean ± ci95"), METRIC_NAMES as columns, beside the published CMGAN and Noisy rows.

    The published rows are Voice Bank + DEMAND; on the synthetic corpus their labels say it is another dataset.
    """
    from cmgan_lib.analysis.evaluate import published_table

    pub = published_table()
    other = ", Voice Bank + DEMAND: a different dataset" if synthetic else ""
    rows = {f"CMGAN (published{other})": {m.upper(): f"{pub.loc['CMGAN', m]:.2f}" for m in METRIC_NAMES}}
    body = vtable[vtable["metric"].isin(METRIC_NAMES)]
    for variant in [v for v in body["variant"].unique() if v != "noisy"] + ["noisy"]:
        sub = body[body["variant"] == variant].set_index("metric")
        if sub.empty:
            continue
        label = "Noisy (measured)" if variant == "noisy" else variant
        rows[label] = {m.upper(): plus_minus(sub.loc[m, "mean"], sub.loc[m, "ci95"]) if m in sub.index else ""
                       for m in METRIC_NAMES}  # fmt: skip
    rows[f"Noisy (published{other})"] = {m.upper(): f"{pub.loc['Noisy', m]:.2f}" for m in METRIC_NAMES}
    return pd.DataFrame(rows).T


def legacy_difference(vtable: pd.DataFrame) -> pd.DataFrame:
    """Per variant and composite: the correct (MATLAB) mean, the legacy float-scale mean, legacy - correct."""
    rows = []
    for variant, sub in vtable.groupby("variant", sort=False):
        means = sub.set_index("metric")["mean"]
        for key in COMPOSITES:
            if key in means and key + LEGACY_SUFFIX in means:
                rows.append(dict(variant=variant, metric=key, correct=means[key], legacy=means[key + LEGACY_SUFFIX],
                                 difference=means[key + LEGACY_SUFFIX] - means[key]))  # fmt: skip
    return pd.DataFrame(rows, columns=["variant", "metric", "correct", "legacy", "difference"])


def metric_vs_snr_long(per_file: pd.DataFrame, metric: str = "pesq") -> pd.DataFrame:
    """Long table (variant, name, input_snr_db, value) with the noisy input as variant "noisy"."""
    from cmgan_lib.analysis.evaluate import NOISY_PREFIX

    kept = per_file[per_file["reason"].isna()] if "reason" in per_file else per_file
    parts = []
    if metric in kept and kept[metric].notna().any():
        parts.append(kept[["variant", "name", "input_snr_db", metric]].rename(columns={metric: "value"}))
    noisy = kept.drop_duplicates("name")[["name", "input_snr_db", NOISY_PREFIX + metric]]
    parts.append(noisy.rename(columns={NOISY_PREFIX + metric: "value"}).assign(variant="noisy"))
    return pd.concat(parts, ignore_index=True).dropna(subset=["value"])


METRIC_LABELS = {
    "pesq": "PESQ (MOS-LQO, 1-4.5)", "csig": "CSIG (1-5)", "cbak": "CBAK (1-5)", "covl": "COVL (1-5)",
    "ssnr": "segmental SNR (dB)", "stoi": "STOI (0-1)",
}  # fmt: skip


def plot_metric_vs_snr(per_file: pd.DataFrame, metric: str = "pesq", ax=None):
    """Per-file metric against input SNR, one colour per variant (noisy input included); legend outside."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from cmgan_lib.reports.plotting import legend_outside

    long = metric_vs_snr_long(per_file, metric)
    ax = ax or plt.subplots(figsize=(9, 4.5))[1]
    order = ["noisy"] + sorted(v for v in long["variant"].unique() if v != "noisy")
    sns.scatterplot(data=long, x="input_snr_db", y="value", hue="variant", style="variant", hue_order=order,
                    style_order=order, ax=ax, s=45, alpha=0.8)  # fmt: skip
    source = per_file["snr_source"].dropna().unique() if "snr_source" in per_file else []
    where = {"manifest": "from the synthetic manifest", "measured": "measured from the files"}
    ax.set(xlabel=f"input SNR of the noisy file (dB, {', '.join(where.get(s, s) for s in source) or 'n/a'})",
           ylabel=METRIC_LABELS.get(metric, metric.upper()),
           title=f"{metric.upper()} per test file against input SNR: noisy input and each variant")  # fmt: skip
    legend_outside(ax, title="scored audio")
    ax.figure.tight_layout()
    return ax


def example_rows(per_file: pd.DataFrame, n: int = 2) -> pd.DataFrame:
    """`n` files (lowest, then highest input SNR, alternating) with noisy/clean/enhanced paths per run."""
    kept = per_file[per_file["reason"].isna()] if "reason" in per_file else per_file
    files = kept.drop_duplicates("name").sort_values("input_snr_db")
    order = []
    lo, hi = 0, len(files) - 1
    while lo <= hi and len(order) < n:
        order.append(lo)
        if lo != hi and len(order) < n:
            order.append(hi)
        lo, hi = lo + 1, hi - 1
    names = files.iloc[order]["name"].tolist()
    return kept[kept["name"].isin(names)].sort_values(["name", "run"])


def show_examples(per_file: pd.DataFrame, n: int = 2, one_seed_per_variant: bool = True) -> None:
    """IPython audio players: noisy, each run's enhanced, clean, for `n` example files (by default one run per
    variant, its lowest seed: a 15-run grid would otherwise list 15 players per file)."""
    from IPython.display import HTML, Audio, display

    from cmgan_lib.core.audio import read_wav

    rows = example_rows(per_file, n)
    if one_seed_per_variant and "seed" in rows and rows["seed"].notna().any():
        first = rows.groupby("variant")["seed"].transform("min")
        rows = rows[rows["seed"] == first]
    for name, group in rows.groupby("name", sort=False):
        first = group.iloc[0]
        display(HTML(f"<b>{name}</b> (input SNR {first['input_snr_db']:.1f} dB)"))
        items = [("noisy", first["noisy"])]
        items += [(f"enhanced: {r['run']}", r["enhanced"]) for _, r in group.iterrows() if r.get("enhanced")]
        items.append(("clean", first["clean"]))
        for label, path in items:
            display(HTML(label))
            display(Audio(read_wav(path), rate=16000))


def runs_test_dir(runs: Sequence[str | os.PathLike]) -> Path:
    """The test split of the corpus the runs trained on (their config.yaml's data_dir, or the synthetic corpus
    their config names), never built here: scoring another corpus than the training one would be a mistake."""
    import dataclasses

    from cmgan_lib.training.config import TrainConfig, synthetic_corpus_path

    default = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # what the trainer uses for a missing key
    dirs = set()
    for run in runs:
        cfg = {**default, **run_config(run)}
        if cfg.get("data_dir"):
            dirs.add(Path(cfg["data_dir"]))
        else:
            dirs.add(synthetic_corpus_path(int(cfg["synthetic_n_train"]), int(cfg["synthetic_n_test"]),
                                           int(cfg["synthetic_seed"]), int(cfg["synthetic_n_valid"])))  # fmt: skip
    if len(dirs) != 1:
        raise ValueError(f"the runs trained on {len(dirs)} corpora ({sorted(map(str, dirs))}): pass test_dir")
    return split_dir(dirs.pop(), "test")


def is_synthetic_corpus(test_dir: str | os.PathLike) -> bool:
    """True when the test files come from `make-synthetic` (its manifest.csv sits at the corpus root)."""
    from cmgan_lib.data.synthetic import MANIFEST_COLUMNS

    root = Path(test_dir).resolve()
    for folder in (root, *root.parents[:2]):
        man = folder / "manifest.csv"
        if man.is_file():
            header = pd.read_csv(man, nrows=0).columns
            return set(MANIFEST_COLUMNS) <= set(header)
    return False


def checkpoint_split_markdown(runs: Sequence[str | os.PathLike]) -> str:
    """Which split selected each run's checkpoint (its config's val_split; no key: the published test split)."""
    from cmgan_lib.reports.report_02_training import selection_split

    notes: dict[str, list[str]] = {}
    for run in runs:
        run = Path(run)
        folder = run.parent if run.is_file() else run
        cfg = run_config(folder)
        notes.setdefault(selection_split(cfg.get("val_split")), []).append(folder.name)
    parts = [f"**{note}** ({', '.join(f'`{r}`' for r in sorted(rs))})" for note, rs in notes.items()]
    return "Checkpoints (best validation PESQ) were selected on the " + "; ".join(parts) + " split. " + \
        _data_order_sentence(runs)  # fmt: skip


def _data_order_sentence(runs: Sequence[str | os.PathLike]) -> str:
    """The runs' data order (issue 20), as notebook 02 states it."""
    from cmgan_lib.reports.report_02_training import data_order_markdown

    folders = [Path(r).parent if Path(r).is_file() else Path(r) for r in runs]
    configs = pd.DataFrame([{"reshuffle_each_epoch": run_config(f).get("reshuffle_each_epoch", np.nan)}
                            for f in folders])  # fmt: skip
    return data_order_markdown(configs)


def improvement_table(per_file: pd.DataFrame) -> pd.DataFrame:
    """Enhanced minus noisy input per variant and metric, with a 95% t interval: over the seed means when the
    variant has two or more seeds, else paired over the files; `verdict` by the study's one rule."""
    from cmgan_lib.analysis.evaluate import NOISY_PREFIX
    from cmgan_lib.analysis.stats import effect_verdict, mean_interval, paired_difference_interval

    kept = per_file[per_file["reason"].isna()] if "reason" in per_file else per_file
    kept = kept[kept["variant"].fillna("") != ""] if "variant" in kept else kept.iloc[:0]
    rows = []
    for variant, df in kept.groupby("variant", sort=True):
        seeds = df["seed"].dropna().unique()
        for metric in METRIC_NAMES:
            pair = df[["seed", metric, NOISY_PREFIX + metric]].dropna(subset=[metric, NOISY_PREFIX + metric])
            if pair.empty:
                continue
            if len(seeds) >= 2:
                per_seed = pair.groupby("seed")[[metric, NOISY_PREFIX + metric]].mean()
                iv, over = mean_interval(per_seed[metric] - per_seed[NOISY_PREFIX + metric]), "seeds"
            else:
                iv, over = paired_difference_interval(pair[metric], pair[NOISY_PREFIX + metric]), "files"
            rows.append(dict(variant=variant, metric=metric, difference=iv.mean, ci95_low=iv.low, ci95_high=iv.high,
                             n=iv.n, ci_over=over,
                             verdict=effect_verdict(iv, f"{metric.upper()}, enhanced - noisy")))  # fmt: skip
    return pd.DataFrame(rows, columns=["variant", "metric", "difference", "ci95_low", "ci95_high", "n", "ci_over",
                                       "verdict"])  # fmt: skip


def improvement_display(improvement: pd.DataFrame) -> pd.DataFrame:
    """Variants as rows, metrics as columns: "+0.42 (0.30 to 0.55)"; the interval's basis in the last column."""
    if improvement.empty:
        return pd.DataFrame()

    def cell(r) -> str:
        if not np.isfinite(r.ci95_low):
            return f"{r.difference:+.2f} (no interval)"
        return f"{r.difference:+.2f} ({r.ci95_low:+.2f} to {r.ci95_high:+.2f})"

    table = improvement.assign(cell=[cell(r) for r in improvement.itertuples()]).pivot(
        index="variant", columns="metric", values="cell")  # fmt: skip
    table = table[[m for m in METRIC_NAMES if m in table.columns]].rename(columns=str.upper)
    table.columns.name = None
    basis = improvement.groupby("variant").apply(lambda g: f"{g.ci_over.iloc[0]} (n={g.n.max()})", include_groups=False)
    return table.assign(**{"interval over": basis})


def legacy_display(legacy: pd.DataFrame) -> pd.DataFrame:
    """The legacy-scale table in one short row per variant: "correct → legacy (+diff)" per composite."""
    if legacy.empty:
        return pd.DataFrame()
    cells = legacy.assign(cell=[f"{r.correct:.2f} → {r.legacy:.2f} ({r.difference:+.2f})" for r in legacy.itertuples()])
    table = cells.pivot(index="variant", columns="metric", values="cell")
    order = [v for v in legacy["variant"].unique()]
    table = table.loc[order, [c for c in COMPOSITES if c in table.columns]].rename(columns=str.upper)
    table.columns.name = None
    return table


def variant_differences(per_file: pd.DataFrame, metric: str = "pesq", reference: str = "official") -> pd.DataFrame:
    """Each variant minus `reference` on one metric: over seed means paired by seed when two or more seeds are in
    both (a seed gives every variant of a grid the same initial weights, data order and crops), Welch over seed
    means when both have two or more seeds but fewer in common, else paired over the files both scored; `verdict`
    by the study's one rule."""
    from cmgan_lib.analysis.stats import difference_interval, effect_verdict, paired_difference_interval

    kept = per_file[per_file["reason"].isna()] if "reason" in per_file else per_file
    rows = []
    if "variant" not in kept or reference not in set(kept["variant"]):
        return pd.DataFrame(columns=["variant", "reference", "metric", "difference", "ci95_low", "ci95_high", "n",
                                     "ci_over", "verdict"])  # fmt: skip
    ref = kept[kept["variant"] == reference]
    for variant, df in kept[~kept["variant"].isin([reference, ""])].groupby("variant", sort=True):
        a, b = df.groupby("seed")[metric].mean(), ref.groupby("seed")[metric].mean()
        common = a.index.intersection(b.index)
        if len(common) >= 2:
            iv, over = paired_difference_interval(a[common], b[common]), "seeds, paired"
        elif len(a) >= 2 and len(b) >= 2:
            iv, over = difference_interval(a, b), "seeds, Welch"
        else:
            both = df.groupby("name")[metric].mean().to_frame("a").join(ref.groupby("name")[metric].mean(), how="inner")
            iv, over = paired_difference_interval(both["a"], both[metric]), "files"
        what = f"test {metric.upper()}, {variant} - {reference} (over {over})"
        rows.append(dict(variant=variant, reference=reference, metric=metric, difference=iv.mean, ci95_low=iv.low,
                         ci95_high=iv.high, n=iv.n, ci_over=over, verdict=effect_verdict(iv, what)))  # fmt: skip
    return pd.DataFrame(rows)


def evaluation_verdict(
    improvement: pd.DataFrame,
    differences: pd.DataFrame,
    legacy_per_file: pd.DataFrame,
    synthetic: bool,
    split_markdown: str,
    n_files: int,
) -> str:
    """The verdict that ends notebook 03, generated from the tables above (it changes when the scores do)."""
    from cmgan_lib.analysis.evaluate import published_table
    from cmgan_lib.analysis.stats import effect_verdict, paired_difference_interval

    data = "the synthetic test split" if synthetic else "the test split"
    lines = ["## Verdict (generated from the scores above)", "",
             f"Scored on {data}, {n_files} files. {split_markdown}", ""]  # fmt: skip
    lines.append("**Does enhancement help?** Enhanced minus noisy input, 95% intervals:")
    if improvement.empty:
        lines.append("- not measured (no run enhanced these files)")
    for variant, g in improvement.groupby("variant", sort=False):
        up = [m.upper() for m, v in zip(g.metric, g.verdict, strict=True) if ": higher" in v]
        down = [m.upper() for m, v in zip(g.metric, g.verdict, strict=True) if ": lower" in v]
        none = [m.upper() for m, v in zip(g.metric, g.verdict, strict=True) if "no detectable" in v]
        few = [m.upper() for m, v in zip(g.metric, g.verdict, strict=True) if "no verdict" in v]
        parts = [f"higher on {', '.join(up)}" if up else "", f"lower on {', '.join(down)}" if down else "",
                 f"no detectable effect at this budget on {', '.join(none)}" if none else "",
                 f"too few values for an interval on {', '.join(few)}" if few else ""]  # fmt: skip
        pesq = g[g.metric == "pesq"].verdict
        lines.append(
            f"- `{variant}`: {'; '.join(p for p in parts if p)}." + (f" ({pesq.iloc[0]})" if len(pesq) else "")
        )
    lines += ["", "**Variants against `official`** on test PESQ:"]
    lines += [f"- {v}" for v in differences.verdict] if len(differences) else ["- no comparison (no `official` run)"]
    legacy_lines = []
    for key in COMPOSITES:
        cols = [key, key + LEGACY_SUFFIX]
        if set(cols) <= set(legacy_per_file.columns):
            d = legacy_per_file[cols].dropna()
            if len(d):
                iv = paired_difference_interval(d[key + LEGACY_SUFFIX], d[key])
                legacy_lines.append(f"- {effect_verdict(iv, f'{key.upper()}, legacy scale - correct')}")
    if legacy_lines:
        lines += ["", "**The published evaluation's float-scale bug** (paired over all scored files and runs):"]
        lines += legacy_lines
    lines.append("")
    pub = published_table()
    if synthetic:
        cmgan, noisy = pub.loc["CMGAN", "pesq"], pub.loc["Noisy", "pesq"]
        lines.append(f"The published rows (CMGAN {cmgan:.2f} PESQ, noisy {noisy:.2f}) are Voice Bank + DEMAND"
                     ", a different dataset: they are shown for orientation and compared with "
                     "nothing here.")  # fmt: skip
    else:
        lines.append("The published rows are the paper's Voice Bank + DEMAND test set (824 files); compare only when "
                     "these files are that test set and the training was the published one.")  # fmt: skip
    lines.append("A difference is called higher or lower only when its 95% interval excludes zero "
                 "(`cmgan_lib.analysis.stats.effect_verdict`).")  # fmt: skip
    return "\n".join(lines)


@dataclass
class EvaluationInputs:
    """What notebook 03 scores: the finished runs, the test split, whether it is synthetic, and a sentence
    saying so (or what to do when there is nothing to score)."""

    runs: list[Path]
    test_dir: Path | None
    synthetic: bool
    markdown: str


def evaluation_inputs(
    run_dirs: Sequence[str | os.PathLike],
    run_root: str | os.PathLike,
    test_dir: str | os.PathLike | None = None,
    max_files: int | None = None,
) -> EvaluationInputs:
    """The runs (given, or every finished run under `run_root`) and the test split: `test_dir`, else the test
    split of the corpus the runs trained on. No runs and no test_dir: nothing to score, and the sentence says why."""
    runs = [Path(p) for p in run_dirs] if run_dirs else find_finished_runs(run_root)
    where = shown_path(run_root)  # never this machine's absolute path: the report is shared (issue 23)
    if not runs and test_dir is None:
        why = (f"**No finished runs under `{where}`**: run `make study` (or `cmgan ablate`), or set `run_root`, "
               "`run_dirs` or `test_dir`. Nothing below is shown.")  # fmt: skip
        return EvaluationInputs([], None, False, why)
    test = split_dir(test_dir, "test") if test_dir is not None else runs_test_dir(runs)
    synthetic = is_synthetic_corpus(test)
    files = "every file" if max_files is None else f"the first {max_files} files"
    kind = "synthetic corpus (`cmgan make-synthetic`)" if synthetic else "corpus"
    lines = [f"Test split of the {kind}: `{shown_path(test)}` ({files}); the test split is used for nothing else here."]
    if runs:
        lines.append(f"{len(runs)} runs: {', '.join(f'`{run_identity(r)[0]}`' for r in runs)}. "
                     + checkpoint_split_markdown(runs))  # fmt: skip
    else:
        lines.append(f"No finished runs under `{where}`: only the noisy input is scored, beside the published rows.")
    return EvaluationInputs(runs, test, synthetic, "\n\n".join(lines))


def score_for_report(inputs: EvaluationInputs, out_dir: str | os.PathLike, max_files: int | None = None,
                     device: str | None = "cpu") -> pd.DataFrame:  # fmt: skip
    """Notebook 03's scores: each run's enhancement of the test files (or the noisy input alone when there are
    no runs), written to OUT/metrics_per_file.csv with paths relative to OUT."""
    from cmgan_lib.analysis.evaluate import PER_FILE_CSV, relative_paths

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if inputs.runs:
        return evaluate_runs(inputs.runs, inputs.test_dir, out, max_files=max_files, device=device, progress=False)
    per_file = score_noisy(inputs.test_dir, max_files, progress=False)
    relative_paths(per_file, out).to_csv(out / PER_FILE_CSV, index=False, float_format="%.6f")
    return per_file
