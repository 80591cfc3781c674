"""The named variants of a grid: each a set of config overrides on top of the base config.

Why here, below the study: a variant is part of the recipe (which switches it turns), and the reports read it
too (claim (i)); `configs/masked.yaml` and `configs/seed_fixes.yaml` stay the one definition of their switches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def shipped_switches(name: str) -> dict[str, Any]:
    """The switches configs/NAME.yaml sets on top of its base (official.yaml): that file is the one definition
    of the variant, for `cmgan train --config` and for the grids alike."""
    data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()) or {}
    return {k: v for k, v in data.items() if k not in ("base", "run_dir")}


# Each variant is a set of config overrides on top of the base config; "official" changes nothing.
SEED_FIXES = shipped_switches("seed_fixes")  # the fix document's proposal; the *_only variants are its parts
VARIANTS: dict[str, dict[str, Any]] = {
    "official": {},
    "masked": shipped_switches("masked"),
    "seed_fixes": SEED_FIXES,
    "batch_mean_only": {k: SEED_FIXES[k] for k in ("pesq_strategy",)},
    "early_stopping_only": {k: SEED_FIXES[k] for k in ("early_stopping", "es_patience", "es_min_delta")},
    "clipping_only": {k: SEED_FIXES[k] for k in ("grad_clip_norm",)},
    "reshuffled": {"reshuffle_each_epoch": True},  # this trainer's old order: a new file order every epoch
    "mpsenet_labels": {"pesq_strategy": "mpsenet"},  # MP-SENet/SEMamba: only the fake term drops on a failure
    "no_gan": {"loss_weights": [0.1, 0.9, 0.2, 0.0]},  # claim (n): does the fall persist without the GAN term?
}
