"""The one figure style of the three notebooks, and the axis helpers every report figure uses.

Why one module: the reports are read side by side, so fonts, palette and epoch numbering must not drift
between notebooks. Epochs are numbered from 1 everywhere, as the trainer's console prints them ("epoch 1/3");
the CSV logs count from 0 and `runs.load_runs` converts.
"""

from __future__ import annotations

import matplotlib as mpl

EPOCH_LABEL = "epoch (numbered as the training log prints it)"
STEP_LABEL = "training step (batch)"


def use_style() -> None:
    """Seaborn whitegrid, notebook context, colourblind palette; call once at the top of each notebook."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", palette="colorblind")
    mpl.rcParams.update({"figure.dpi": 100, "savefig.bbox": "tight", "legend.frameon": False,
                         "axes.titlesize": 12, "axes.labelsize": 11})  # fmt: skip


def integer_ticks(ax, axis: str = "x") -> None:
    """Whole-number ticks (epochs, steps): never 0.25-epoch ticks."""
    from matplotlib.ticker import MaxNLocator

    getattr(ax, f"{axis}axis").set_major_locator(MaxNLocator(integer=True))


def legend_outside(ax, title: str | None = None, handles=None, labels=None) -> None:
    """Legend to the right of the axes, where it cannot cover data."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    if handles:
        ax.legend(handles, labels, title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def plain_log_ticks(ax, axis: str = "y") -> None:
    """Log-scale ticks written as plain numbers (0.3, 5, 10), not 3 x 10^-1."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    a = getattr(ax, f"{axis}axis")
    a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    a.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    a.set_minor_formatter(FuncFormatter(lambda x, _: ""))


def left_aligned(df):
    """A table for display with text (and numbers written as text) left-aligned, headers too; cells do not wrap
    (a "2.41 ± 0.05" split over two lines reads as two numbers)."""
    return df.style.set_properties(**{"text-align": "left", "white-space": "nowrap"}).set_table_styles(
        [{"selector": "th", "props": [("text-align", "left")]}]
    )
