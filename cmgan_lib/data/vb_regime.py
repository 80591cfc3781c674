"""The real-speech replication of the collapse regime (docs/analysis_plan.md, section 2, R-vb): a corpus in the
project's layout built from the 25 Voice Bank + DEMAND pairs in ../shared, by a rule fixed before any run.

Why a fixed rule: the regime trains on two 0.5 s crops, so which 0.5 s is the whole training set. The rule:
- training: the first two files of the training speaker by name (p232_003, p232_005), each cut to one 0.5 s
  crop (8000 samples): the window with the highest clean energy on a 10 ms (160-sample) grid (arm `speech`);
  arm `lead` takes p232_003's crop from the start of the file instead, over its leading silence, so that any
  skipped discriminator update there is a natural PESQ failure rather than an injected one;
- validation: the three shortest remaining files of each speaker;
- test: every other file.
These are test-set utterances of Voice Bank + DEMAND (speakers p232, male, and p257, female): p257 is a held-out
speaker and so also a held-out gender. Nothing built here is comparable with published Voice Bank numbers.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from cmgan_lib.core.audio import read_wav, write_wav
from cmgan_lib.data.layout import SPLITS, natural_key

ARMS = ("speech", "lead")
CROP = 8000  # 0.5 s at 16 kHz: the regime's cut_len, so a training file is exactly one crop
GRID = 160  # 10 ms: candidate crop starts
TRAIN_SPEAKER = "p232"
N_TRAIN = 2
N_VALID_PER_SPEAKER = 3
LEAD_FILE = "p232_003.wav"  # arm `lead`: this file's crop starts at sample 0
NAME = re.compile(r"^(p\d{3})_\d{3}\.wav$")  # Voice Bank + DEMAND file names: speaker_utterance.wav
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ["file", "speaker", "split", "samples", "crop_start", "crop_end", "crop_rule", "arm"]
README_LINE = ("These are Voice Bank + DEMAND test-set utterances (speakers p232, male, and p257, female), laid out "
               "for the collapse regime's real-speech replication (docs/analysis_plan.md, R-vb); p257 is a held-out "
               "speaker and gender; nothing here is comparable with published Voice Bank numbers.")  # fmt: skip


class VbRegimeError(ValueError):
    """A source or output folder that the rule cannot use; the message is one line naming the folder."""


def max_energy_start(clean: np.ndarray, length: int = CROP, grid: int = GRID) -> int:
    """Start of the `length`-sample window with the highest clean energy among starts on a `grid`-sample grid
    (the earliest on a tie); the window always lies inside the signal."""
    x = np.asarray(clean, dtype=np.float64)
    if x.size < length:
        raise VbRegimeError(f"a clip of {x.size} samples is shorter than one crop ({length})")
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    starts = np.arange(0, x.size - length + 1, grid)
    energy = csum[starts + length] - csum[starts]
    return int(starts[int(np.argmax(energy))])


def source_pairs(source: str | os.PathLike) -> list[str]:
    """The file names of `source`'s clean/noisy pairs, natural-sorted; one-line VbRegimeError for a missing
    folder, anything beside clean/ and noisy/, a file that is not a Voice Bank WAV, or an unpaired file."""
    src = Path(source)
    if not src.is_dir():
        raise VbRegimeError(f"{src}: source folder not found (expected the Voice Bank + DEMAND samples: clean/, "
                            "noisy/)")  # fmt: skip
    other = sorted(p.name for p in src.iterdir() if p.name not in ("clean", "noisy") and not p.name.startswith("."))
    missing = [d for d in ("clean", "noisy") if not (src / d).is_dir()]
    if missing or other:
        what = f"no {' or '.join(f'{d}/' for d in missing)} folder" if missing else f"other entries: {', '.join(other)}"
        raise VbRegimeError(f"{src}: expected only clean/ and noisy/ folders of WAV pairs ({what})")
    names = {}
    for d in ("clean", "noisy"):
        files = sorted((p for p in (src / d).iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
        bad = [p.name for p in files if not (p.is_file() and NAME.match(p.name))]
        if bad:
            raise VbRegimeError(f"{src / d}: other files than Voice Bank WAVs (pNNN_NNN.wav): {', '.join(bad[:5])}")
        names[d] = {p.name for p in files}
    if names["clean"] != names["noisy"]:
        odd = sorted(names["clean"] ^ names["noisy"], key=natural_key)
        raise VbRegimeError(f"{src}: clean/ and noisy/ do not pair (only in one: {', '.join(odd[:5])})")
    return sorted(names["clean"], key=natural_key)


def plan(source: str | os.PathLike, arm: str = "speech") -> pd.DataFrame:
    """The manifest the rule gives for `source`: every file's split and, for the training files, the crop."""
    if arm not in ARMS:
        raise VbRegimeError(f"arm must be one of {', '.join(ARMS)}, got {arm!r}")
    src = Path(source)
    names = source_pairs(src)
    clean = {n: read_wav(src / "clean" / n) for n in names}
    speakers = sorted({NAME.match(n).group(1) for n in names})
    train = [n for n in names if n.startswith(f"{TRAIN_SPEAKER}_")][:N_TRAIN]
    if len(train) < N_TRAIN:
        raise VbRegimeError(f"{src}: needs {N_TRAIN} {TRAIN_SPEAKER} files for training, found {len(train)}")
    rows = []
    for n in train:
        lead = arm == "lead" and n == LEAD_FILE
        start = 0 if lead else max_energy_start(clean[n])
        rule = "file start (leading silence)" if lead else "max clean energy, 10 ms grid"
        rows.append(dict(file=n, split="train", crop_start=start, crop_end=start + CROP, crop_rule=rule))
    rest = [n for n in names if n not in train]
    for spk in speakers:
        own = [n for n in rest if n.startswith(f"{spk}_")]
        if len(own) <= N_VALID_PER_SPEAKER:
            raise VbRegimeError(f"{src}: speaker {spk} has {len(own)} files beside training; needs more than "
                                f"{N_VALID_PER_SPEAKER} (validation and test)")  # fmt: skip
        valid = sorted(own, key=lambda n: (clean[n].size, natural_key(n)))[:N_VALID_PER_SPEAKER]
        rows += [dict(file=n, split="valid" if n in valid else "test") for n in own]
    table = pd.DataFrame(rows)
    table["speaker"] = table.file.str.slice(0, 4)
    table["samples"] = table.file.map(lambda n: clean[n].size)
    table["arm"] = arm
    table[["crop_start", "crop_end"]] = table[["crop_start", "crop_end"]].astype("Int64")  # blank off training
    rank = {(s, n): (i, natural_key(n)) for i, s in enumerate(SPLITS) for n in names}
    table = table.iloc[sorted(range(len(table)), key=lambda i: rank[(table.split[i], table.file[i])])]
    return table.reset_index(drop=True).reindex(columns=MANIFEST_COLUMNS)


def make_vb_regime(source: str | os.PathLike, out_dir: str | os.PathLike, arm: str = "speech",
                   overwrite: bool = False) -> pd.DataFrame:  # fmt: skip
    """Write the corpus of `plan` under `out_dir` (train/, valid/, test/, each clean/ and noisy/; training files
    cut to their crop, the others copied byte for byte), OUT/manifest.csv and OUT/README.md; return the manifest.
    A non-empty `out_dir` is refused unless `overwrite`, which removes the split folders, manifest and README."""
    src, out = Path(source), Path(out_dir)
    table = plan(src, arm)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise VbRegimeError(f"{out}: not empty; pass --overwrite to replace the corpus there")
        for name in (*SPLITS, MANIFEST, "README.md"):
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    for r in table.itertuples():
        for d in ("clean", "noisy"):
            dest = out / r.split / d / r.file
            if r.split == "train":  # PCM_16 in, PCM_16 out: the crop's samples are the file's samples
                write_wav(dest, read_wav(src / d / r.file)[int(r.crop_start) : int(r.crop_end)])
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / d / r.file, dest)
    table.to_csv(out / MANIFEST, index=False)
    counts = table.groupby("split", sort=False).size()
    (out / "README.md").write_text(
        f"# Voice Bank + DEMAND regime, arm `{arm}`\n\n{README_LINE}\n\n"
        + ", ".join(f"{s}: {int(counts.get(s, 0))} files" for s in SPLITS)
        + f". Training crops: {CROP} samples (0.5 s); the rule and the crop starts are in `{MANIFEST}`.\n"
    )
    return table
