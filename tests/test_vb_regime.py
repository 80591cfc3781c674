"""The real-speech regime's corpus (analysis plan R-vb): the split rule, the crop rule, the lead arm, the errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cmgan_lib import cli
from cmgan_lib.core.audio import read_wav, write_wav
from cmgan_lib.data import vb_regime as vb
from cmgan_lib.data.layout import list_pairs


def test_crop_is_the_max_energy_window_on_the_10ms_grid():
    x = np.full(30000, 0.001, dtype=np.float32)
    x[10300:18300] = 0.5  # one loud 0.5 s stretch, off the grid: 10240 covers 7940 of its samples, 10400 only 7900
    assert vb.max_energy_start(x) == 10240
    x[:] = 0.001
    x[25000:] = 0.3  # loud only near the end: the last window that fits, on the grid (21920, not 22000)
    assert vb.max_energy_start(x) == (30000 - vb.CROP) // vb.GRID * vb.GRID
    with pytest.raises(vb.VbRegimeError, match="shorter than one crop"):
        vb.max_energy_start(np.ones(7999))


LENGTHS = {"p232_003": 30000, "p232_005": 26000, "p232_006": 12000, "p232_011": 25000, "p232_014": 11000,
           "p232_052": 28000, "p232_170": 13000, "p257_003": 9000, "p257_008": 21000, "p257_011": 8500,
           "p257_015": 22000, "p257_024": 9500}  # fmt: skip


def _source(root, lengths=LENGTHS):
    """A small Voice Bank-like folder: quiet noise with one loud stretch at a known place per file."""
    rng = np.random.default_rng(0)
    for stem, n in lengths.items():
        clean = 0.002 * rng.standard_normal(n)
        clean[n // 2 : n // 2 + 4000] += 0.3 * np.sin(np.arange(4000) / 5)
        write_wav(root / "clean" / f"{stem}.wav", clean)
        write_wav(root / "noisy" / f"{stem}.wav", clean + 0.01 * rng.standard_normal(n))
    return root


def test_split_rule_and_both_arms(tmp_path):
    src = _source(tmp_path / "src")
    speech = vb.make_vb_regime(src, tmp_path / "speech")
    by = speech.set_index("file")
    assert list(speech[speech.split == "train"].file) == ["p232_003.wav", "p232_005.wav"]
    valid = set(speech[speech.split == "valid"].file)
    assert valid == {"p232_014.wav", "p232_006.wav", "p232_170.wav", "p257_011.wav", "p257_003.wav", "p257_024.wav"}
    assert (speech.split == "test").sum() == len(LENGTHS) - 2 - 6
    for n, s in ((l_, by.at[f"{f}.wav", "crop_start"]) for f, l_ in LENGTHS.items() if f in ("p232_003", "p232_005")):
        assert s % vb.GRID == 0 and s <= n // 2 <= s + vb.CROP - 4000  # the loud stretch lies inside the crop
    for split, n in (("train", 2), ("valid", 6), ("test", 4)):
        assert len(list_pairs(tmp_path / "speech", split)) == n
    cut = read_wav(tmp_path / "speech" / "train" / "noisy" / "p232_005.wav")
    s = int(by.at["p232_005.wav", "crop_start"])
    assert cut.size == vb.CROP and np.array_equal(cut, read_wav(src / "noisy" / "p232_005.wav")[s : s + vb.CROP])
    assert (tmp_path / "speech" / "test" / "clean" / "p232_011.wav").read_bytes() == (
        src / "clean" / "p232_011.wav").read_bytes()  # fmt: skip
    assert "Voice Bank + DEMAND test-set utterances" in (tmp_path / "speech" / "README.md").read_text()
    assert pd.read_csv(tmp_path / "speech" / vb.MANIFEST).crop_start.dropna().tolist() == list(speech.crop_start[:2])
    lead = vb.make_vb_regime(src, tmp_path / "lead", arm="lead").set_index("file")
    assert lead.at["p232_003.wav", "crop_start"] == 0 and lead.at["p232_005.wav", "crop_start"] == s
    assert (lead.split == by.split).all()


def test_errors_are_one_line_and_name_the_folder(tmp_path, capsys):
    with pytest.raises(vb.VbRegimeError, match="source folder not found"):
        vb.source_pairs(tmp_path / "missing")
    src = _source(tmp_path / "src")
    (src / "notes.txt").write_text("x")
    with pytest.raises(vb.VbRegimeError, match=r"other entries: notes.txt"):
        vb.source_pairs(src)
    (src / "notes.txt").unlink()
    (src / "clean" / "readme.md").write_text("x")
    with pytest.raises(vb.VbRegimeError, match=r"other files than Voice Bank WAVs.*readme.md"):
        vb.source_pairs(src)
    (src / "clean" / "readme.md").unlink()
    (src / "noisy" / "p232_003.wav").unlink()
    with pytest.raises(vb.VbRegimeError, match=r"do not pair \(only in one: p232_003.wav\)"):
        vb.source_pairs(src)
    rc = cli.main(["make-vb-regime", "--source", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "\n" not in err and "source folder not found" in err and str(tmp_path / "missing") in err


def test_cli_builds_and_refuses_to_overwrite(tmp_path, capsys):
    src = _source(tmp_path / "src")
    args = ["make-vb-regime", "--source", str(src), "--out", str(tmp_path / "o"), "--arm", "lead"]
    assert cli.main(args) == 0 and "p232_003.wav from 0" in capsys.readouterr().out
    assert cli.main(args) != 0 and "not empty; pass --overwrite" in capsys.readouterr().err
    assert cli.main([*args, "--overwrite"]) == 0


def test_the_real_samples_give_the_plans_split(vb_samples, tmp_path):
    """The 25 pairs in ../shared: training p232_003 and p232_005 (one crop each), the 3 shortest other files of
    each speaker for validation, 17 for test; the lead arm differs only in p232_003's crop, which starts at 0."""
    speech = vb.plan(vb_samples)
    assert (speech.split.value_counts()[["train", "valid", "test"]] == [2, 6, 17]).all()
    assert set(speech[speech.split == "valid"].file) == {"p232_170.wav", "p232_052.wav", "p232_014.wav",
                                                         "p257_054.wav", "p257_143.wav", "p257_024.wav"}  # fmt: skip
    train = speech[speech.split == "train"].set_index("file")
    for f, r in train.iterrows():
        assert r.crop_start % vb.GRID == 0 and r.crop_start == vb.max_energy_start(read_wav(vb_samples / "clean" / f))
    lead = vb.plan(vb_samples, "lead").set_index("file")
    assert lead.at["p232_003.wav", "crop_start"] == 0 != train.at["p232_003.wav", "crop_start"]
    assert lead.at["p232_005.wav", "crop_start"] == train.at["p232_005.wav", "crop_start"]
