"""What `--resume` may continue (issue 32): the recipe last.pt was trained with, against RUN/config.yaml and the
command line, and whether the run is finished.

Why: `resume_config` compares the command line with config.yaml only, so a hand edit of config.yaml was applied
(or, for values the checkpoint restores, silently ignored) and the run mislabelled; and `--resume` of a finished
run rewrote its config (even to fewer epochs) and said nothing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cmgan_lib.training.config import RESUMABLE_KEYS, TrainConfig

Change = tuple[str, Any, Any]
NOT_COMPARED = frozenset({"run_dir"})  # where the folder is now (a moved run stays the same run)


def recorded_config(ck_config: dict[str, Any]) -> dict[str, Any]:
    """last.pt's config as the trainer reads a config (types cast); keys this version does not know are left
    out, and keys the checkpoint predates are absent (never compared)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    known = {k: v for k, v in ck_config.items() if k in names}
    try:
        return {k: v for k, v in TrainConfig(**known).to_dict().items() if k in known}
    except ValueError:  # a range this version tightened: compare the raw values
        return known


def check_resume(run_dir: Path, cfg: TrainConfig, changes: list[Change],
                 ck: dict[str, Any]) -> tuple[list[Change], str | None]:  # fmt: skip
    """(the changes to record, a one-line note when the run is finished and nothing is to be done).

    Refuses (ValueError, one line) a value outside RESUMABLE_KEYS that differs between last.pt's recorded config
    and the config now in force (config.yaml with the command line), and `epochs` below the epochs already
    trained. Changes are counted from what last.pt was trained with, so a hand edit of a resumable key is
    recorded too. `ck`: the run's last.pt (runs.read_checkpoint)."""
    old, new = recorded_config(ck["config"]), cfg.to_dict()
    differs = [(k, old[k], new[k]) for k in old if k not in NOT_COMPARED and old[k] != new[k]]
    refused = [f"{k} (last.pt {o!r}, config.yaml {n!r})" for k, o, n in differs if k not in RESUMABLE_KEYS]
    if refused:
        raise ValueError(
            f"{run_dir}: config.yaml differs from the recipe last.pt was trained with: {'; '.join(refused)}; "
            "--resume continues that recipe only: put config.yaml back, or start a new run (--config FILE "
            "run_dir=NEW_DIR)"
        )
    done = int(ck["epoch"]) + 1
    if cfg.epochs < done:
        raise ValueError(f"{run_dir}: has trained {done} epochs; --resume cannot shrink it to epochs={cfg.epochs} "
                         f"(epochs may only grow)")  # fmt: skip
    stopper = ck["early_stopping"]
    stopped = cfg.early_stopping and int(stopper["counter"]) >= cfg.es_patience
    if stopped:
        return [], (f"{run_dir}: finished: stopped early after epoch {done} (no improvement for {cfg.es_patience} "
                    "epochs); nothing to do, nothing changed")  # fmt: skip
    if done == cfg.epochs:
        return [], (f"{run_dir}: finished ({done} of {cfg.epochs} epochs); nothing to do, nothing changed; to train "
                    f"longer: cmgan train --resume {run_dir} epochs=N with N > {done}")  # fmt: skip
    seen = {k for k, _, _ in differs}
    return [*differs, *((k, o, n) for k, o, n in changes if k not in seen and k not in old)], None
