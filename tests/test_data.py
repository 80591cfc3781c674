"""The dataset: folder layouts, pairing, the published crop/tiling, and seeded reproducibility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cmgan_lib.data.dataset import CMGANDataset, find_split, list_pairs

SR = 16000


def write_pair(root: Path, split: str, name: str, n: int, layout: str = "cmgan") -> None:
    """A clean ramp (so crop offsets are readable from the values) and noisy = clean + 1 LSB."""
    clean = (np.arange(n) % 30000 / 32768.0).astype(np.float32)
    noisy = clean + np.float32(1 / 32768)
    if layout == "cmgan":
        cdir, ndir = root / split / "clean", root / split / "noisy"
    else:
        names = {
            "train": ("clean_trainset_28spk_wav", "noisy_trainset_28spk_wav"),
            "test": ("clean_testset_wav", "noisy_testset_wav"),
        }[split]
        cdir, ndir = root / names[0], root / names[1]
    cdir.mkdir(parents=True, exist_ok=True)
    ndir.mkdir(parents=True, exist_ok=True)
    sf.write(cdir / name, clean, SR, subtype="PCM_16")
    sf.write(ndir / name, noisy, SR, subtype="PCM_16")


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    for i, n in enumerate([40000, 12000, 32000, 50000, 7000, 33000]):
        write_pair(tmp_path, "train", f"p1_{i + 1}.wav", n)
    write_pair(tmp_path, "test", "p2_1.wav", 20000)
    return tmp_path


def test_find_split_cmgan_and_archive_layouts(tmp_path: Path, corpus: Path) -> None:
    assert find_split(corpus, "train") == (corpus / "train" / "clean", corpus / "train" / "noisy")
    arch = tmp_path / "archive"
    write_pair(arch, "train", "p226_001.wav", 1000, layout="archive")
    write_pair(arch, "test", "p232_001.wav", 1000, layout="archive")
    assert find_split(arch, "train") == (arch / "clean_trainset_28spk_wav", arch / "noisy_trainset_28spk_wav")
    assert find_split(arch, "test") == (arch / "clean_testset_wav", arch / "noisy_testset_wav")
    assert [p[0] for p in list_pairs(arch, "test")] == ["p232_001.wav"]
    with pytest.raises(FileNotFoundError, match="no test split"):
        find_split(tmp_path / "nowhere", "test")
    with pytest.raises(ValueError):
        find_split(corpus, "dev")
    with pytest.raises(FileNotFoundError, match="no valid split"):  # valid exists only in the CMGAN layout
        find_split(arch, "valid")


def test_list_pairs_natural_order_and_unpaired(corpus: Path) -> None:
    for i in (10, 2):
        write_pair(corpus, "train", f"p1_{i}0.wav", 100)
    names = [name for name, _, _ in list_pairs(corpus, "train")]
    assert names == [
        "p1_1.wav",
        "p1_2.wav",
        "p1_3.wav",
        "p1_4.wav",
        "p1_5.wav",
        "p1_6.wav",
        "p1_20.wav",
        "p1_100.wav",
    ]
    (corpus / "train" / "noisy" / "p1_3.wav").unlink()
    with pytest.raises(ValueError, match="p1_3.wav"):
        list_pairs(corpus, "train")


def test_one_pair_finder_serves_training_audit_and_evaluation(corpus: Path) -> None:
    """`match_wavs` is the pair finder behind list_pairs, audit.load_folder_pairs and evaluate.pair_files: the
    same natural order for all three; evaluation also keeps names found in only some folders."""
    from cmgan_lib.analysis.audit import load_folder_pairs
    from cmgan_lib.analysis.evaluate import pair_files
    from cmgan_lib.data.layout import match_wavs

    write_pair(corpus, "train", "p1_10.wav", 100)
    clean, noisy = corpus / "train" / "clean", corpus / "train" / "noisy"
    names = [name for name, _, _ in list_pairs(corpus, "train")]
    assert (
        names[-1] == "p1_10.wav" and [p.name + ".wav" for p in load_folder_pairs(corpus / "train", lazy=True)] == names
    )
    (noisy / "p1_3.wav").unlink()
    pairs = pair_files(clean, noisy)
    assert [p.name + ".wav" for p in pairs] == names and pairs[2].noisy is None
    assert [(n, paths[1]) for n, paths in match_wavs(clean, None)][:2] == [("p1_1.wav", None), ("p1_2.wav", None)]


def test_items_are_aligned_crops_of_cut_len(corpus: Path) -> None:
    ds = CMGANDataset(corpus, "train", cut_len=16000, seed=3)
    assert len(ds) == 6
    for idx in range(len(ds)):
        clean, noisy, length = ds[idx]
        assert clean.dtype == torch.float32 and clean.shape == (16000,) and noisy.shape == (16000,)
        assert torch.allclose(noisy - clean, torch.full_like(clean, 1 / 32768), atol=1e-7)  # same crop
        assert length == [40000, 12000, 32000, 50000, 7000, 33000][idx]
        ramp = (clean * 32768).round().numpy().astype(int)
        if length >= 16000:  # a contiguous window of the ramp
            start = ramp[0]
            assert 0 <= start <= length - 16000
            np.testing.assert_array_equal(ramp, (start + np.arange(16000)) % 30000)


def test_short_clips_are_tiled_whole_repeats_plus_partial(corpus: Path) -> None:
    ds = CMGANDataset(corpus, "train", cut_len=16000)
    clean, _, length = ds[4]  # 7000 samples -> 2 whole repeats + the first 2000 samples
    assert length == 7000
    ramp = (clean * 32768).round().numpy().astype(int)
    np.testing.assert_array_equal(ramp, np.concatenate([np.arange(7000), np.arange(7000), np.arange(2000)]))
    ds = CMGANDataset(corpus, "train", cut_len=32000)
    ramp = (ds[2][0] * 32768).round().numpy().astype(int)  # exactly cut_len: the whole clip
    np.testing.assert_array_equal(ramp, np.arange(32000) % 30000)


def crops(ds: CMGANDataset) -> list[np.ndarray]:
    return [ds[i][0].numpy() for i in range(len(ds))]


def test_set_epoch_changes_crops_and_same_seed_epoch_reproduces(corpus: Path) -> None:
    a = CMGANDataset(corpus, "train", cut_len=8000, seed=1)
    b = CMGANDataset(corpus, "train", cut_len=8000, seed=1)
    first = crops(a)
    a.set_epoch(1)
    second = crops(a)
    long_items = [0, 3]  # 40000 and 50000 samples: many possible starts
    assert any(not np.array_equal(first[i], second[i]) for i in long_items)
    b.set_epoch(1)
    for x, y in zip(second, crops(b), strict=True):
        np.testing.assert_array_equal(x, y)
    a.set_epoch(0)
    for x, y in zip(first, crops(a), strict=True):
        np.testing.assert_array_equal(x, y)
    c = CMGANDataset(corpus, "train", cut_len=8000, seed=2)
    assert any(not np.array_equal(x, y) for x, y in zip(first, crops(c), strict=True))


def test_items_do_not_depend_on_access_order_or_cache(corpus: Path) -> None:
    a = CMGANDataset(corpus, "train", cut_len=8000, seed=5)
    b = CMGANDataset(corpus, "train", cut_len=8000, seed=5, cache_mb=0)
    forward = crops(a)
    backward = [b[i][0].numpy() for i in reversed(range(len(b)))][::-1]
    for x, y in zip(forward, backward, strict=True):
        np.testing.assert_array_equal(x, y)
    assert a._cache and not b._cache


def test_whole_clips_with_cut_len_none(corpus: Path) -> None:
    clean, noisy, length = CMGANDataset(corpus, "test", cut_len=None)[0]
    assert clean.shape == (20000,) and length == 20000


def test_same_batches_with_workers_and_distributed_sampler(corpus: Path) -> None:
    """Two 'ranks' of a DistributedSampler with 2 persistent workers see the items a plain loop sees."""
    ds = CMGANDataset(corpus, "train", cut_len=4000, seed=7)
    truth = CMGANDataset(corpus, "train", cut_len=4000, seed=7)
    seen = []
    for rank in range(2):
        sampler = torch.utils.data.distributed.DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True)
        loader = torch.utils.data.DataLoader(ds, batch_size=1, sampler=sampler, num_workers=2, persistent_workers=True)
        for epoch in (0, 2):  # the epoch set in the parent reaches already-running workers
            sampler.set_epoch(epoch)
            ds.set_epoch(epoch)
            truth.set_epoch(epoch)
            for idx, (clean, _, _) in zip(list(sampler), loader, strict=True):
                torch.testing.assert_close(clean[0], truth[idx][0], rtol=0, atol=0)
                seen.append(idx)
    assert set(seen) == set(range(6))


def test_bad_arguments(corpus: Path) -> None:
    with pytest.raises(ValueError):
        CMGANDataset(corpus, cut_len=0)
    ds = CMGANDataset(corpus)
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(ValueError):
        ds.set_epoch(-1)


def test_training_pairs_hold_out_speakers_or_use_valid(tmp_path: Path) -> None:
    from cmgan_lib.data.layout import training_pairs

    for spk in ("p226", "p227", "p287"):
        for k in (1, 2):
            write_pair(tmp_path, "train", f"{spk}_00{k}.wav", 8000)
    write_pair(tmp_path, "test", "p232_001.wav", 8000)
    held = ["p226", "p287"]
    valid = [p[0] for p in training_pairs(tmp_path, "valid", held)]
    train = [p[0] for p in training_pairs(tmp_path, "train", held)]
    assert valid == ["p226_001.wav", "p226_002.wav", "p287_001.wav", "p287_002.wav"]
    assert train == ["p227_001.wav", "p227_002.wav"]
    assert [p[0] for p in training_pairs(tmp_path, "test", held)] == ["p232_001.wav"]
    assert len(training_pairs(tmp_path, "train", [])) == 6
    with pytest.raises(ValueError, match="val_speakers"):
        training_pairs(tmp_path, "valid", [])
    with pytest.raises(ValueError, match="p999"):
        training_pairs(tmp_path, "valid", ["p226", "p999"])
    write_pair(tmp_path, "valid", "p300_001.wav", 8000)  # a valid/ folder: train keeps every speaker
    assert [p[0] for p in training_pairs(tmp_path, "valid", [])] == ["p300_001.wav"]
    assert len(training_pairs(tmp_path, "train", [])) == 6
    for split in ("valid", "train"):  # held-out speakers beside valid/: ambiguous, never silently ignored
        with pytest.raises(ValueError, match="valid/ split and val_speakers"):
            training_pairs(tmp_path, split, held)


def test_repeat_lists_every_clip_again_with_crops_of_their_own(corpus: Path) -> None:
    once = CMGANDataset(corpus, "train", cut_len=4000, seed=0)
    thrice = CMGANDataset(corpus, "train", cut_len=4000, seed=0, repeat=3)
    n = len(once)
    assert len(thrice) == 3 * n
    assert [thrice.name(i) for i in range(3 * n)] == once.names * 3
    for i in range(n):
        assert thrice[i][2] == thrice[i + n][2] == once[i][2]  # the same clip (its length) ...
        assert torch.equal(thrice[i][0], once[i][0])  # ... the first visit is the unrepeated crop ...
    starts = [float(thrice[i + k * n][0][0]) for i in (0, 3) for k in range(3)]
    assert len(set(starts)) > 2  # ... and later visits of long clips start elsewhere
    with pytest.raises(ValueError, match="repeat"):
        CMGANDataset(corpus, "train", cut_len=4000, repeat=0)


def test_fixed_crops_keep_one_crop_per_clip_across_visits_and_epochs(corpus: Path) -> None:
    fixed = CMGANDataset(corpus, "train", cut_len=4000, seed=0, repeat=3, fixed_crops=True)
    free = CMGANDataset(corpus, "train", cut_len=4000, seed=0, repeat=3)
    n = len(fixed.pairs)
    first = [fixed[i][0] for i in range(n)]
    for epoch in (0, 5):
        fixed.set_epoch(epoch)
        for i in range(3 * n):
            assert torch.equal(fixed[i][0], first[i % n])  # every visit, every epoch: the same crop
    free.set_epoch(5)
    assert any(not torch.equal(free[i][0], first[i % n]) for i in range(3 * n))  # unlike the default
    for seed in (1, 7):  # the crops are part of the data: every seed trains on the same examples ...
        other_seed = CMGANDataset(corpus, "train", cut_len=4000, seed=seed, fixed_crops=True)
        assert all(torch.equal(other_seed[i][0], first[i]) for i in range(n))
    assert any(not torch.equal(CMGANDataset(corpus, "train", cut_len=4000, seed=1)[i][0], first[i])
               for i in range(n))  # ... while random crops follow the seed  # fmt: skip
