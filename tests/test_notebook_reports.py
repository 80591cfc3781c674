"""The rendered reports (issue 13): each notebook runs with small parameters (papermill), renders to HTML
without its code cells, and carries no stderr output or error; with its defaults and no runs (a fresh clone,
as nbval runs it in CI) it runs cleanly and says what to do. Figure labels are checked on the functions
themselves (tests/test_report_02_training.py, tests/test_report_01_audit.py, tests/test_report_03_evaluate.py: the
`check_figure` fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmgan_lib import study
from cmgan_lib.core.paths import repo_root

ROOT = repo_root()


def _render(name: str, out: Path, params: dict) -> tuple[dict, str]:
    target = study.execute_notebook(name, out, params)
    return json.loads(target.read_text()), target.with_suffix(".html").read_text()


def _noise(nb: dict) -> list[str]:
    """stderr streams and errors in the executed notebook (the red boxes of an HTML report)."""
    found = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out["output_type"] == "error" or (out["output_type"] == "stream" and out["name"] == "stderr"):
                found.append("".join(out.get("text", "")) or out.get("ename", "error"))
    return found


def _assert_clean_report(nb: dict, html: str) -> None:
    assert not _noise(nb), _noise(nb)
    markdown_cells = sum(c["cell_type"] == "markdown" for c in nb["cells"])
    assert html.count('class="jp-InputArea') == markdown_cells, "the HTML report shows code cells"
    assert ".ipynb</a>" in html or '.ipynb"' in html, "no link to the notebook with the code"


def _assert_says_what_to_do(nb: dict, html: str, says: str, out_dir: Path) -> None:
    _assert_clean_report(nb, html)
    assert says in html and "make study" in html
    assert not out_dir.exists()  # nothing written when there is nothing to report


def test_notebook_02_without_runs_says_what_to_do(tmp_path):
    """(Notebook 03 without runs: in the shared-report test below, which renders it so.)"""
    nb, html = _render("02_train_baseline_vs_fixed", tmp_path, {"run_root": str(tmp_path / "nothing"),
                                                                "out_dir": str(tmp_path / "o")})  # fmt: skip
    _assert_says_what_to_do(nb, html, "No runs under", tmp_path / "o")


def _issue18_columns(seed: int, adv: float) -> dict:
    """Step columns of the gradient share (measured every other step) and epoch losses that part (overfitting)."""
    measured = np.arange(12) % 2 == 1
    share = {"grad_norm_g_adv": np.where(measured, adv, np.nan), "grad_norm_g_rest": np.where(measured, 2.0, np.nan),
             "grad_ratio_adv_rest": np.where(measured, adv / 2.0 + seed / 100, np.nan),
             "grad_cos_adv_rest": np.where(measured, 0.1, np.nan)}  # fmt: skip
    return {"step_columns": share, "epoch_columns": {"loss": [0.9, 0.7, 0.5], "val_loss": [0.8, 0.6 + seed / 100, 0.7]}}


def test_notebook_02_renders_the_injection_ablation_with_a_verdict(tmp_path, fake_run):
    """The injection ablation with issue 18's sections: `official` and `official_p186` runs log the gradient share
    and losses; `masked_p186` runs are old runs without the share (their sections degrade, never fail)."""
    runs = tmp_path / "runs"
    regime = {"synthetic_n_train": 2, "fixed_crops": True, "cut_len": 8000, "epochs": 3, "num_channel": 16}
    for seed in (0, 1, 2):
        fake_run(runs, f"official_s{seed}", [2.0, 2.4 + seed / 50, 2.35], 0, config=regime,
                 **_issue18_columns(seed, 1.2))  # fmt: skip
        fake_run(runs, f"official_p186_s{seed}", [1.8, 2.2 + seed / 50, 1.9], np.arange(12) % 2,
                 injected=np.ones(12, dtype=int), config={"pesq_fail_inject": 0.186, **regime},
                 **_issue18_columns(seed, 0.1))  # fmt: skip
        fake_run(runs, f"masked_p186_s{seed}", [2.0, 2.4, 2.3 + seed / 50], 0,
                 config={"pesq_fail_inject": 0.186, "pesq_strategy": "masked"})  # fmt: skip
    params = {"run_root": str(runs), "out_dir": str(tmp_path),
              "comparisons": [["official_p186", "official"], ["masked_p186", "official_p186"]]}  # fmt: skip
    nb, html = _render("02_train_baseline_vs_fixed", tmp_path, params)
    _assert_clean_report(nb, html)
    assert "official_p186 against official" in html and "masked_p186 against official_p186" in html
    assert "final validation PESQ, official_p186 - official: lower by" in html
    assert html.count("<img") >= 6
    assert all((tmp_path / f).is_file() for f in ("training_per_seed.csv", "training_comparisons.csv"))
    for heading in ("Every variant on one axis", "Training and validation loss", "Seed spread",
                    "The adversarial term&#39;s share of the generator&#39;s gradient"):  # fmt: skip
        assert heading in html or heading.replace("&#39;", "'") in html, heading
    assert "drop after the smoothed peak" in html and "Drop (smoothed)" in html
    assert "Regime: <strong>2 synthetic training clips, one fixed 0.5 s crop each, batch 4, 4 steps per epoch" in html
    assert html.count("Regime: ") == 2  # under the runs, and opening the verdict
    assert "gradient is 0.61x" in html and "it can steer the generator" in html  # official: 0.6 + 0.01 a seed
    assert "gradient is 0.06x" in html and "it cannot steer the generator" in html  # official_p186
    assert "too short for the smoothed measure (3 epochs; it needs 10)" in html  # 3-epoch runs: said, not faked
    assert "single-seed comparison" in html and "It is no threshold for the comparisons over seeds" in html


def _tiny_synthetic_corpus(root: Path) -> Path:
    """Two 1 s test pairs in the CMGAN layout with a make-synthetic manifest (make_dataset's clips are ~4 s,
    and enhancing those on 2 shared cores takes a minute)."""
    import pandas as pd

    from cmgan_lib.core.audio import write_wav
    from cmgan_lib.data.synthetic import MANIFEST_COLUMNS

    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    rows = []
    for i, (noise, snr) in enumerate(((0.02, 20.0), (0.2, 0.0))):
        clean = (0.3 * np.sin(2 * np.pi * 200 * t) * (1 + np.sin(2 * np.pi * 4 * t))).astype(np.float32)
        for sub, audio in (("clean", clean), ("noisy", clean + noise * rng.standard_normal(16000))):
            (root / "test" / sub).mkdir(parents=True, exist_ok=True)
            write_wav(root / "test" / sub / f"s00_{i:03d}.wav", audio, 16000)
        rows.append({"file": f"s00_{i:03d}.wav", "split": "test", "speaker": "s00", "snr_db": snr})
    pd.DataFrame(rows, columns=MANIFEST_COLUMNS).to_csv(root / "manifest.csv", index=False)
    return root


@pytest.mark.slow
def test_notebook_03_renders_on_a_tiny_synthetic_corpus(tmp_path):
    import torch
    import yaml

    from cmgan_lib import models

    corpus = _tiny_synthetic_corpus(tmp_path / "corpus")
    run = tmp_path / "runs" / "official_s0"
    run.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({"generator": models.TSCNet(num_channel=4, num_tscb=1).state_dict()}, run / "best.pt")  # depth read
    (run / "done.json").write_text("{}")
    (run / "config.yaml").write_text(yaml.safe_dump({"data_dir": str(corpus), "num_channel": 4, "seed": 0}))
    params = {"run_root": str(tmp_path / "runs"), "out_dir": str(tmp_path / "evaluate"), "n_examples": 1}
    nb, html = _render("03_evaluate", tmp_path, params)
    _assert_clean_report(nb, html)
    assert "Voice Bank + DEMAND: a different dataset" in html  # the corpus is synthetic
    assert "test (published behaviour)" in html  # no val_split key in this run's config
    assert "Enhanced minus noisy" in html and "Verdict" in html
    assert "Test split of the synthetic corpus (<code>cmgan make-synthetic</code>): <code>…/corpus/test</code>" in html
    assert str(tmp_path) not in html  # a shared report prints no machine's absolute path (issue 23)
    assert (tmp_path / "evaluate" / "improvement.csv").is_file()


@pytest.mark.slow
def test_notebook_01_renders_the_audit_with_a_written_verdict(tmp_path, fake_run):
    """Notebook 01 on a tiny corpus with a run's step logs: clean report, a generated verdict, the CSVs."""
    from test_audit import _speech_after_silence

    from cmgan_lib.core.audio import write_wav

    data = tmp_path / "data"
    for i in range(4):
        clean, noisy = _speech_after_silence(1.0, 1.5, seed=i)
        for sub, audio in (("clean", clean), ("noisy", noisy)):
            (data / "train" / sub).mkdir(parents=True, exist_ok=True)
            write_wav(data / "train" / sub / f"s01_{i:03d}.wav", audio)
    runs = tmp_path / "runs"
    # a 4-channel run, as every test run: its untrained generator enhances the crops of the estimate sweep (without
    # num_channel the official 64 channels, 80 of the test's 90 s)
    fake_run(runs, "official_s0", [1.2, 1.3, 1.25], np.arange(12) % 2,
             config={"cut_len": 8000, "batch_size": 4, "num_channel": 4})  # fmt: skip
    params = {"data_dir": str(data), "run_root": str(runs), "out_dir": str(tmp_path / "audit"), "vb_dir": None,
              "crop_lengths": [0.5, 2.0], "estimate_crop_lengths": [0.5], "crops_per_clip": 1,
              "matrix_max_clips": 2}  # fmt: skip
    nb, html = _render("01_pesq_failure_audit", tmp_path, params)
    _assert_clean_report(nb, html)
    assert "Verdict" in html and "56% of batches skip the discriminator update" in html
    assert "training crop 0.5 s" in html
    assert f"data: …/{tmp_path.name}/data (speech corpus)" in html
    assert str(tmp_path) not in html  # a shared report prints no machine's absolute path (issue 23)
    written = ("failure_sweep.csv", "claims.csv", "observed_rates.csv", "failure_matrix.csv",
               "failure_matrix_rates.csv")  # fmt: skip
    assert all((tmp_path / "audit" / f).is_file() for f in written)
    assert "PESQ failures come from very low SNR samples" in html  # issue 20: every claim (a)-(n)
    crops = pd.read_csv(tmp_path / "audit" / "crop_sweep.csv")
    lengths = crops.groupby("pair").crop_s.unique().map(sorted).to_dict()
    # the run's generator enhanced crops, at the estimate lengths only (0.5 s), PESQ on clean/noisy at both
    assert lengths == {"clean/noisy": [0.5, 2.0], "clean/estimate (official_s0)": [0.5]}, lengths


def _absolute_paths_in(folder: Path, absolute: str, *unless: str) -> list[str]:
    """Files of a shared report (HTML, CSV, README, notebook; not the `unless` suffixes) that print `absolute`,
    a machine's own path."""
    kinds = {".html", ".csv", ".md", ".ipynb", ".yaml"} - set(unless)
    return [str(p.relative_to(folder)) for p in sorted(folder.rglob("*"))
            if p.suffix in kinds and absolute in p.read_text(errors="replace")]  # fmt: skip


@pytest.mark.slow
def test_a_shared_report_carries_no_absolute_machine_path(tmp_path, fake_run):
    """Issue 23: notebook 02 and 03 rendered from a run root under a temporary folder, summary.csv with its
    test_set, and the folder `share-report` writes, show paths relative to the project or the run root."""
    out = tmp_path / "ablation"
    runs = out / "runs"
    for variant, strategy in (("official", "skip"), ("masked", "masked")):
        fake_run(
            runs,
            f"{variant}_s0",
            [2.0, 2.4, 2.3],
            0,
            config={"pesq_strategy": strategy, "run_dir": str(runs / f"{variant}_s0")},
        )  # as ablate writes it
    corpus = tmp_path / "corpus"
    _render("02_train_baseline_vs_fixed", out, {"run_root": str(runs), "out_dir": str(out)})
    nb, html = _render("03_evaluate", out, {"run_root": str(out / "none"), "out_dir": str(out / "evaluate")})
    _assert_says_what_to_do(nb, html, "No finished runs under", out / "evaluate")  # a fresh clone, as nbval runs it
    (out / "evaluate").mkdir()
    (out / "evaluate" / "metrics_per_file.csv").write_text(
        "run,name,pesq,csig,cbak,covl,ssnr,stoi\nofficial_s0,a.wav,2,3,2,2,5,0.8\nmasked_s0,a.wav,2,3,2,2,5,0.8\n"
    )
    summary = study.write_summary(runs, out, test_set=corpus / "test")
    assert summary["test_set"].iloc[0] == "…/corpus/test"
    dest = study.share_report(out, tmp_path / "reports" / "r", "cmgan ablate", "2-core CPU")
    assert "2 runs under <code>…/ablation/runs</code>" in (dest / "02_train_baseline_vs_fixed.html").read_text()
    # the run folder's own notebooks and configs keep the paths they ran with
    assert not _absolute_paths_in(out, str(tmp_path), ".ipynb", ".yaml"), _absolute_paths_in(out, str(tmp_path))
    # the shared copy of an executed notebook too (the run folder's own keeps the paths it ran with)
    shared = _absolute_paths_in(dest, str(tmp_path)) + _absolute_paths_in(dest, str(ROOT))
    assert not shared, shared
    assert '"run_root": "runs"' in (dest / "02_train_baseline_vs_fixed.ipynb").read_text()
    assert "run_dir: runs/official_s0\n" in (dest / "runs" / "official_s0" / "config.yaml").read_text()
