"""The ablation runner: a failing variant is recorded and the others go on; finished runs are skipped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_bad_inputs import short_validation

from cmgan_lib import study
from cmgan_lib.analysis.training_analysis import run_summary
from cmgan_lib.training.runs import load_runs, parse_run_name

ROOT = Path(__file__).resolve().parents[1]


def test_run_names_and_overrides():
    assert parse_run_name("seed_fixes_s12") == ("seed_fixes", 12)
    assert parse_run_name("whatever") == ("whatever", None)
    args = study.train_overrides("seed_fixes", 3, Path("r/seed_fixes_s3"), {"epochs": 2, "data_dir": None})
    assert "pesq_strategy=batch_mean" in args and "grad_clip_norm=5.0" in args and "early_stopping=true" in args
    assert "seed=3" in args and "epochs=2" in args and "data_dir=null" in args


def test_grids_name_known_variants(tmp_path):
    for name in ("ablation.yaml", "ablation_tiny.yaml"):
        grid = study.load_grid(ROOT / "configs" / name)
        assert set(grid.variants) <= set(study.VARIANTS)
    bad = tmp_path / "bad.yaml"
    bad.write_text("variants: [official, nope]\n")
    with pytest.raises(ValueError, match="nope"):
        study.load_grid(bad)


GRIDS = sorted(p.name for p in (ROOT / "configs").glob("*.yaml") if "variants" in (yaml.safe_load(p.read_text()) or {}))


@pytest.mark.parametrize("name", GRIDS)
def test_every_grid_in_configs_gives_valid_training_configs(name, tmp_path):
    """A grid is only run on a GPU machine: a typo in a key or a value out of range must show here, not there."""
    from cmgan_lib.training.config import load_config

    grid = study.load_grid(ROOT / "configs" / name)
    for variant in grid.variants:
        switches = grid.variant_overrides(variant)
        cfg = load_config(ROOT / grid.base_config, study.train_overrides(switches, 0, tmp_path / "r", grid.overrides))
        assert all(getattr(cfg, k) == v for k, v in {**grid.overrides, **switches}.items())


def test_the_precision_grid_compares_bf16_with_fp32_only_in_precision():
    grid = study.load_grid(ROOT / "configs" / "precision_gpu.yaml")
    assert grid.resolved_comparisons() == [["bf16", "fp32"]] and len(grid.seeds) >= 2  # a seed-to-seed spread
    assert grid.variant_overrides("bf16") == {"precision": "bf16"}
    assert grid.variant_overrides("fp32") == {"precision": "fp32"}


def test_grid_mappings_comparisons_and_the_data_every_notebook_gets(tmp_path):
    grid = study.load_grid(ROOT / "configs" / "ablation_injection.yaml")
    assert grid.variant_overrides("batch_mean_p186") == {"pesq_strategy": "batch_mean", "pesq_fail_inject": 0.186}
    assert grid.variant_overrides("official") == {}
    assert ["official_p186", "official"] in grid.resolved_comparisons()
    args = study.train_overrides(grid.variant_overrides("masked_p186"), 2, Path("r/x"), grid.overrides)
    assert "pesq_fail_inject=0.186" in args and "pesq_strategy=masked" in args and "seed=2" in args
    # a grid trained on other data: every notebook gets that data, never the embedded corpus
    other = study.Grid(base_config=str(ROOT / "configs" / "tiny_cpu.yaml"), overrides={"data_dir": str(tmp_path / "x")})
    params = study.notebook_parameters(other, tmp_path / "out")
    assert params["03_evaluate"]["test_dir"] == str((tmp_path / "x").resolve())
    assert params["01_pesq_failure_audit"]["data_dir"] == str((tmp_path / "x").resolve())
    assert params["02_train_baseline_vs_fixed"]["comparisons"] == [["masked", "official"], ["seed_fixes", "official"]]
    default = study.notebook_parameters(study.Grid(base_config=str(ROOT / "configs" / "tiny_cpu.yaml")), tmp_path)
    assert "runs/synthetic/n48_8_16_s0" in default["03_evaluate"]["test_dir"]
    with pytest.raises(ValueError, match="comparisons"):
        study.Grid(variants={"a": {}}, comparisons=[["a", "b"]])


def test_runs_per_gpu_never_puts_more_runs_on_a_gpu(monkeypatch, tmp_path):
    import threading
    import time

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    active: dict[str, int] = {}
    peak: dict[str, int] = {}
    lock = threading.Lock()

    def fake_run(base, variant, seed, root, overrides=None, gpu=None, switches=None, threads=None, trainers=None):
        with lock:
            active[gpu] = active.get(gpu, 0) + 1
            peak[gpu] = max(peak.get(gpu, 0), active[gpu])
        time.sleep(0.05)
        with lock:
            active[gpu] -= 1
        return dict(run=f"{variant}_s{seed}", variant=variant, seed=seed, run_dir="", status="done", seconds=0.0)

    monkeypatch.setattr(study, "train_run", fake_run)
    grid = study.Grid(variants=["official", "masked", "seed_fixes"], seeds=[0, 1, 2])
    status = study.run_grid(grid, tmp_path, progress=False, runs_per_gpu=2)
    assert len(status) == 9 and peak == {"0": 2, "1": 2}


def test_cpu_runs_train_that_many_at_once_with_the_cores_split(monkeypatch, tmp_path):
    import threading
    import time

    monkeypatch.setattr(study, "visible_gpus", lambda: [])
    monkeypatch.setattr(study.os, "cpu_count", lambda: 4)
    state = {"active": 0, "peak": 0, "threads": set()}
    lock = threading.Lock()

    def fake_run(base, variant, seed, root, overrides=None, gpu=None, switches=None, threads=None, trainers=None):
        with lock:
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
            state["threads"].add(threads)
        time.sleep(0.05)
        with lock:
            state["active"] -= 1
        return dict(run=f"{variant}_s{seed}", variant=variant, seed=seed, run_dir="", status="done", seconds=0.0)

    monkeypatch.setattr(study, "train_run", fake_run)
    grid = study.Grid(variants=["official", "masked"], seeds=[0, 1, 2])
    assert len(study.run_grid(grid, tmp_path, progress=False, cpu_runs=2)) == 6
    assert state["peak"] == 2 and state["threads"] == {2}
    state.update(peak=0, threads=set())
    study.run_grid(grid, tmp_path, progress=False)
    assert state["peak"] == 1 and state["threads"] == {None}  # the default: one run, the trainer's own threads


def test_make_study_trains_its_runs_at_once(monkeypatch, tmp_path):
    """On 2 cores the three tiny runs take 287 s at once against 376 s one after another (run_study's docstring)."""
    seen = {}

    def fake_grid(grid, run_root, progress=True, runs_per_gpu=1, cpu_runs=1, time_limit=None):
        seen["cpu_runs"], seen["jobs"] = cpu_runs, len(grid.jobs())
        return pd.DataFrame(columns=["run", "variant", "seed", "status"])

    monkeypatch.setattr(study, "run_grid", fake_grid)
    monkeypatch.setattr(study, "run_ablation", lambda *a, **k: None)
    monkeypatch.setattr(study.Grid, "data_dir", lambda self, build=False: tmp_path)
    monkeypatch.chdir(ROOT)  # run_study moves to the project root; monkeypatch puts the cwd back after
    study.run_study(tmp_path / "STUDY")
    assert seen["cpu_runs"] == seen["jobs"] == 3


def test_notebooks_run_at_once_and_a_failure_is_raised_after_the_others_end(monkeypatch, tmp_path):
    import threading
    import time

    state = {"active": 0, "peak": 0, "ended": [], "threads": set()}
    lock = threading.Lock()

    def fake_execute(name, out_dir, parameters):
        with lock:
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
            state["threads"].add((os.environ.get("OMP_NUM_THREADS"), os.environ.get("MKL_NUM_THREADS")))
        time.sleep(0.2 if name == "02" else 0.05)
        with lock:
            state["active"] -= 1
            state["ended"].append(name)
        if name == "01":
            raise RuntimeError("cell 3 failed")
        return Path(out_dir) / f"{name}.ipynb"

    monkeypatch.setattr(study, "execute_notebook", fake_execute)
    monkeypatch.setattr(study.os, "cpu_count", lambda: 4)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    names = ["01", "02", "03"]
    done = study.execute_notebooks(names[1:], tmp_path, {n: {} for n in names})
    assert done == [tmp_path / "02.ipynb", tmp_path / "03.ipynb"]
    assert state["peak"] == 2 and state["threads"] == {("2", "2")}  # each kernel its share of the 4 cores
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ  # as they were
    state.update(peak=0, ended=[], threads=set())
    with pytest.raises(RuntimeError, match="cell 3 failed"):
        study.execute_notebooks(names, tmp_path, {n: {} for n in names})
    assert state["peak"] == 3 and sorted(state["ended"]) == names  # 02, the slowest, ended before the raise
    assert state["threads"] == {("1", "1")} and os.environ["OMP_NUM_THREADS"] == "7"


@pytest.mark.slow
def test_failing_variant_is_recorded_and_finished_runs_are_skipped(tmp_path, monkeypatch):
    from cmgan_lib.data.synthetic import make_dataset

    corpus = tmp_path / "corpus"
    make_dataset(corpus, n_train=4, n_test=2, seed=0, hard_fraction=0.0, progress=False, n_valid=1)
    short_validation(corpus)  # 1 s validation files, as the other training tests
    monkeypatch.setitem(study.VARIANTS, "broken", {"pesq_strategy": "not_a_strategy"})
    grid = study.Grid(base_config=str(ROOT / "configs" / "tiny_cpu.yaml"), variants=["official", "broken"],
                      seeds=[0], overrides={"data_dir": str(corpus), "epochs": 1, "max_steps_per_epoch": 1,
                                            "val_max_files": 1, "batch_size": 2, "num_channel": 4,
                                            "num_tscb": 1})  # fmt: skip
    root = tmp_path / "runs"
    status = study.run_grid(grid, root, progress=False)
    assert list(status.status.str.split().str[0]) == ["done", "failed"]
    assert "pesq_strategy" in status.status.iloc[1]
    assert (root / "official_s0" / "done.json").is_file() and not (root / "broken_s0" / "done.json").exists()
    log = (root / "official_s0" / "train.log").read_bytes()  # bytes: read_text() would turn \r into \n
    assert b"\r" not in log and b"epoch 1/1: loss" in log  # whole lines, no progress-bar carriage returns
    again = study.run_grid(grid, root, progress=False)
    assert again.status.iloc[0] == "done (skipped)"
    summary = study.write_summary(root, tmp_path, again)
    assert list(summary.run) == ["official_s0", "broken_s0"]
    assert summary.loc[0, "epochs"] == 1 and pd.isna(summary.loc[1, "epochs"])
    epochs, steps = load_runs(root)
    row = run_summary(epochs, steps).iloc[0]
    assert row.variant == "official" and row.seed == 0 and 1.0 <= row.best_val_pesq <= 4.7


def test_share_report_copies_logs_and_html_never_checkpoints(tmp_path):
    out = tmp_path / "ablation"
    run = out / "runs" / "official_s0"
    run.mkdir(parents=True)
    for name in ("config.yaml", "training_step_log.csv", "training_epoch_log.csv"):
        (run / name).write_text("x\n")
    (run / "last.pt").write_bytes(b"0" * 1000)
    (out / "summary.csv").write_text("run\nofficial_s0\n")
    (out / "02_train_baseline_vs_fixed.html").write_text("<html></html>")
    (out / "training_per_seed.csv").write_text("run\nofficial_s0\n")  # notebook 02's HTML links to it
    (out / "04_confirmatory.html").write_text("<html></html>")  # the confirmatory report's notebook and tables
    (out / "analysis").mkdir()
    (out / "analysis" / "confirmatory_families.csv").write_text("contrast\nclip5 - official\n")
    dest = study.share_report(out, tmp_path / "reports" / "r", "cmgan ablate --grid g", "2-core CPU", 600.0, "Found.")
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert "runs/official_s0/training_step_log.csv" in files and "02_train_baseline_vs_fixed.html" in files
    assert "04_confirmatory.html" in files and "analysis/confirmatory_families.csv" in files
    assert "training_per_seed.csv" in files
    assert not any(f.endswith(".pt") for f in files)
    readme = (dest / "README.md").read_text()
    assert "2-core CPU" in readme and "cmgan ablate --grid g" in readme and "10.0 min" in readme and "Found." in readme
    assert "Bottom line" not in readme  # no notebook 04 bottom line written: nothing in its place
    (out / "analysis" / "bottom_line.md").write_text("## Bottom line for practitioners\n\n- **Clipping at 5**: it "
                                                     "does not matter.\n")  # fmt: skip
    readme = (study.share_report(out, dest, "c", "d", overwrite=True) / "README.md").read_text()
    assert readme.index("# r\n") < readme.index("- **Clipping at 5**: it does not matter.") < readme.index("- device")
    assert (dest / "analysis" / "bottom_line.md").is_file()
    with pytest.raises(FileNotFoundError, match="summary.csv"):
        study.share_report(tmp_path / "nothing", tmp_path / "r2", "c", "d")


def test_share_report_refuses_a_report_over_its_size_limit(tmp_path, monkeypatch):
    """The limit catches what does not belong in a shared report; no README is written for such a report."""
    out = tmp_path / "ablation"
    out.mkdir()
    (out / "summary.csv").write_text("run\nofficial_s0\n")
    (out / "02_train_baseline_vs_fixed.html").write_text("x" * 5000)
    monkeypatch.setattr(study, "REPORT_LIMIT_BYTES", 4000)
    with pytest.raises(ValueError, match="too large for a shared report"):
        study.share_report(out, tmp_path / "r", "c", "d")
    assert not (tmp_path / "r" / "README.md").exists()
    monkeypatch.setattr(study, "REPORT_LIMIT_BYTES", 8000)
    assert (study.share_report(out, tmp_path / "r2", "c", "d") / "README.md").is_file()


def test_ablate_command_passes_seeds_and_no_notebooks(monkeypatch, tmp_path):
    from cmgan_lib import cli

    calls = []
    monkeypatch.setattr(study, "run_ablation", lambda grid, out, **kw: calls.append((grid, out, kw)))
    grid = str(ROOT / "configs" / "precision_gpu.yaml")
    assert cli.main(["ablate", "--grid", grid, "--out", str(tmp_path), "--seeds", "0,1", "--no-notebooks"]) == 0
    assert cli.main(["ablate", "--grid", grid, "--out", str(tmp_path), "--runs-per-gpu", "3", "--audit"]) == 0
    (g1, _, kw1), (g2, _, kw2) = calls
    assert g1.seeds == [0, 1] and kw1["notebooks"] is False and kw1["audit"] is False
    assert g2.seeds == [0, 1, 2] and kw2["notebooks"] is True and kw2["runs_per_gpu"] == 3 and kw2["audit"] is True


def test_a_finished_run_trained_with_another_recipe_is_reported_not_skipped(tmp_path, monkeypatch):
    """A run folder with done.json whose config.yaml differs from what the grid now asks for (on the keys the grid
    sets) fails in status.csv, naming each difference; one that matches is skipped. Nothing trains here."""
    from cmgan_lib.training.config import load_config

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    base = str(ROOT / "configs" / "tiny_cpu.yaml")
    grid = study.Grid(base_config=base, variants=["official", "masked"], seeds=[0], overrides={"epochs": 1})
    root = tmp_path / "runs"
    for variant, trained in (("official", "official"), ("masked", "official")):  # masked_s0 trained as official
        run = study.run_dir_for(root, variant, 0)
        run.mkdir(parents=True)
        cfg = load_config(base, study.train_overrides(grid.variant_overrides(trained), 0, run, {"epochs": 2}))
        (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
        (run / "done.json").write_text("{}")
    status = study.run_grid(grid, root, progress=False).set_index("run").status
    assert status["masked_s0"] == ("failed: config differs from the grid (epochs: 2 -> 1, pesq_strategy: skip -> "
                                   "masked); use another --out or delete the run")  # fmt: skip
    assert status["official_s0"].startswith("failed: config differs from the grid (epochs: 2 -> 1)")
    assert pd.read_csv(root / "status.csv").set_index("run").status["masked_s0"] == status["masked_s0"]
    grid.overrides = {"epochs": 2}
    again = study.run_grid(grid, root, progress=False).set_index("run").status
    assert again["official_s0"] == "done (skipped)" and again["masked_s0"].startswith("failed: config differs")


def test_share_report_readme_states_the_data_order(tmp_path, fake_run):
    out = tmp_path / "ablation"
    fake_run(out / "runs", "official_s0", [2.0, 2.1], 0, config={"reshuffle_each_epoch": False})
    (out / "summary.csv").write_text("run\nofficial_s0\n")
    dest = study.share_report(out, tmp_path / "reports" / "r", "cmgan ablate --grid g", "2-core CPU")
    assert "same file order every epoch (published" in (dest / "README.md").read_text()


def test_a_time_limit_starts_only_the_runs_expected_to_end_in_time(monkeypatch, tmp_path):
    """GPU minutes are lent in minutes: with --time-limit a run starts only if the longest finished run says it
    ends in time; the rest (whole seeds, as jobs go seed by seed) are recorded as not started."""
    from types import SimpleNamespace

    clock = [0.0]
    monkeypatch.setattr(study, "time", SimpleNamespace(monotonic=lambda: clock[0]))  # each run takes 10 s here
    monkeypatch.setattr(study, "visible_gpus", lambda: [])
    started = []

    def fake_run(base, variant, seed, root, overrides=None, gpu=None, switches=None, threads=None, trainers=None):
        started.append((variant, seed))
        clock[0] += 10.0 + 2.0 * (variant == "masked")
        return dict(run=f"{variant}_s{seed}", variant=variant, seed=seed, run_dir="", status="done",
                    seconds=10.0 + 2.0 * (variant == "masked"))  # fmt: skip

    monkeypatch.setattr(study, "train_run", fake_run)
    grid = study.Grid(variants=["official", "masked"], seeds=[0, 1, 2])
    status = study.run_grid(grid, tmp_path, progress=False, time_limit=40.0)
    # 0 s: the first starts (nothing finished); 10 s + 10 <= 40; 22 s + 12 <= 40; 32 s + 12 > 40: no more
    assert started == [("official", 0), ("masked", 0), ("official", 1)]
    by_run = status.set_index("run").status
    assert list(by_run[:3]) == ["done"] * 3
    assert (by_run[3:] == "not started: time limit (40 s; longest run 12 s)").all() and len(by_run) == 6
    assert (pd.read_csv(tmp_path / "status.csv").status == status.status).all()
    started.clear()
    assert (study.run_grid(grid, tmp_path, progress=False).status == "done").all() and len(started) == 6


def test_a_time_limit_judges_the_first_runs_by_runs_finished_before_or_by_run_seconds(monkeypatch, tmp_path):
    """A new start knows no run length of its own: it takes the longest run finished earlier in the folder (its
    done.json, training plus test scoring; a restored run records none) or `run_seconds`, so that a grid started
    near a session's end does not start runs the end will cut."""
    from types import SimpleNamespace

    clock = [0.0]
    monkeypatch.setattr(study, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(study, "visible_gpus", lambda: [])
    started = []

    def fake_run(base, variant, seed, root, overrides=None, gpu=None, switches=None, threads=None, trainers=None):
        started.append(seed)
        clock[0] += 10.0
        return dict(run=f"{variant}_s{seed}", variant=variant, seed=seed, run_dir="", status="done", seconds=10.0)

    monkeypatch.setattr(study, "train_run", fake_run)
    grid = study.Grid(variants=["official"], seeds=[0, 1, 2])
    for name, done in (("a_s9", '{"seconds": 25.0, "test_seconds": 10.0}'), ("b_s9", '{"seconds": null}'),
                       ("c_s9", "not json"), ("d_s9", '{"seconds": 20.0}')):  # fmt: skip
        (tmp_path / "earlier" / name).mkdir(parents=True)
        (tmp_path / "earlier" / name / "done.json").write_text(done)
    assert study.longest_finished(tmp_path / "earlier") == 35.0
    assert study.longest_finished(tmp_path / "nothing_here") == 0.0
    status = study.run_grid(grid, tmp_path / "earlier", progress=False, time_limit=40.0)
    assert started == [0]  # 0 + 35 <= 40; 10 + 35 > 40
    assert list(status.status[1:]) == ["not started: time limit (40 s; longest run 35 s)"] * 2
    started.clear()
    clock[0] = 0.0
    status = study.run_grid(grid, tmp_path / "fresh", progress=False, time_limit=40.0, run_seconds=50.0)
    assert started == [] and status.status.str.startswith("not started: time limit").all()
    assert study.run_grid(grid, tmp_path / "fresh2", progress=False, time_limit=40.0).status.eq("done").sum() == 3


def test_no_train_reports_the_runs_that_came_back_and_trains_nothing(monkeypatch, tmp_path, fake_run):
    """Logs brought back from a GPU machine (no checkpoints): `cmgan ablate --no-train` renders notebook 02 and
    summary.csv from them, says which runs are missing or unfinished, and leaves notebook 03 out."""
    from cmgan_lib import cli

    out = tmp_path / "gpu"
    fake_run(out / "runs", "official_s0", [2.0, 2.1], 0)
    fake_run(out / "runs", "masked_s0", [2.0], 0, finished=False)
    grid = tmp_path / "g.yaml"
    grid.write_text(f"base_config: {ROOT / 'configs' / 'tiny_cpu.yaml'}\nvariants: [official, masked]\nseeds: [0, 1]\n")
    monkeypatch.setattr(study, "train_run", lambda *a, **k: pytest.fail("--no-train trained a run"))
    notebooks = []
    monkeypatch.setattr(study, "execute_notebook", lambda name, o, params: notebooks.append(name))
    assert cli.main(["ablate", "--grid", str(grid), "--out", str(out), "--no-train"]) == 0
    assert notebooks == ["02_train_baseline_vs_fixed"]
    summary = pd.read_csv(out / "summary.csv").set_index("run")
    assert summary.status.to_dict() == {"official_s0": "done (not retrained)", "masked_s0":
                                        "incomplete: 1 epoch(s) logged, never finished", "official_s1": "not trained",
                                        "masked_s1": "not trained"}  # fmt: skip
    assert summary.loc["official_s0", "epochs"] == 2
    (out / "runs" / "official_s0" / "best.pt").write_bytes(b"")
    notebooks.clear()
    cli.main(["ablate", "--grid", str(grid), "--out", str(out), "--no-train"])
    assert notebooks == ["02_train_baseline_vs_fixed", "03_evaluate"]


def test_ablate_builds_the_grids_corpus_once_before_runs_start_at_once(monkeypatch, tmp_path):
    """Runs started together would each build a missing synthetic corpus into the same folder; ablate builds it
    first, and `--no-train` builds nothing. --time-limit and --run-seconds reach the grid."""
    from cmgan_lib import cli

    calls = []
    monkeypatch.setattr(study.Grid, "data_dir", lambda self, build=False: calls.append(("data", build)) or tmp_path)
    done = pd.DataFrame({"run": ["official_s0"], "variant": ["official"], "seed": [0], "run_dir": [""],
                         "status": ["done"]})  # fmt: skip
    monkeypatch.setattr(study, "run_grid", lambda *a, **k: calls.append(("runs", k["time_limit"], k["run_seconds"]))
                        or done)  # fmt: skip
    monkeypatch.setattr(study, "write_summary", lambda *a, **k: None)
    grid = tmp_path / "g.yaml"
    grid.write_text("variants: [official]\nseeds: [0]\n")
    assert cli.main(["ablate", "--grid", str(grid), "--out", str(tmp_path / "out"), "--no-notebooks",
                     "--time-limit", "600", "--run-seconds", "700"]) == 0  # fmt: skip
    assert [c[0] for c in calls] == ["data", "runs", "data"] and calls[0] == ("data", True)  # then the notebooks'
    assert 599.0 < calls[1][1] <= 600.0 and calls[1][2] == 700.0  # the time limit counts from the command's start
    calls.clear()
    study.run_ablation(study.Grid(variants=["official"]), tmp_path / "out", notebooks=False, train=False)
    assert ("data", True) not in calls and not any(c[0] == "runs" for c in calls)


def test_the_html_report_shows_outputs_and_markdown_but_no_code(tmp_path):
    """render_html: what `nbconvert --to html --no-input` writes (the reader's report), in this process."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("secret_code_line = 6 * 7", execution_count=1)
    code.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "4242424242"}, execution_count=1)]
    nb.cells = [nbformat.v4.new_markdown_cell("# The heading a reader sees"), code]
    path = tmp_path / "my_report.ipynb"
    nbformat.write(nb, path)
    written = study.render_html(path)
    assert written == tmp_path / "my_report.html"
    html = written.read_text()
    assert "The heading a reader sees" in html and "4242424242" in html and "<title>my_report</title>" in html
    assert "secret_code_line" not in html and "In&nbsp;[1]" not in html and "Out[1]" not in html


def test_test_after_training_scores_each_finished_run_once_and_reports_a_failure(monkeypatch, tmp_path):
    """Each finished run with a checkpoint is scored once, in a process of its own, on the grid's test split into
    RUN/test/ (notebook 03's rows: a random 1-block generator on two 1 s files); a run with no checkpoint left
    (kept logs only) is not; an unreadable checkpoint is reported and scored again at the next start."""
    import numpy as np
    import soundfile as sf
    import torch

    from cmgan_lib.models.generator import TSCNet
    from cmgan_lib.training.runs import TEST_SCORES

    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    for i in range(2):
        clean = (0.3 * np.sin(2 * np.pi * (150 + 50 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
        for kind, audio in (("clean", clean), ("noisy", clean + 0.05 * rng.standard_normal(t.size))):
            (tmp_path / "vb" / "test" / kind).mkdir(parents=True, exist_ok=True)
            sf.write(tmp_path / "vb" / "test" / kind / f"p257_{i:03d}.wav", audio.astype(np.float32), 16000)

    def fake_train(base, variant, seed, root, overrides=None, gpu=None, switches=None, threads=None, trainers=None):
        run_dir = Path(root) / f"{variant}_s{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "done.json").write_text("{}")
        if variant == "official":
            torch.manual_seed(0)
            torch.save(TSCNet(num_channel=4, num_tscb=1).state_dict(), run_dir / "best.pt")
        elif variant == "masked":
            (run_dir / "best.pt").write_text("not a checkpoint")
        return dict(run=run_dir.name, variant=variant, seed=seed, run_dir=str(run_dir), status="done", seconds=1.0)

    monkeypatch.setattr(study, "train_run", fake_train)
    monkeypatch.setitem(study.VARIANTS, "kept_logs_only", {})
    grid = study.Grid(variants=["official", "masked", "kept_logs_only"], seeds=[0],
                      overrides={"data_dir": str(tmp_path / "vb")}, test_after_training=True)  # fmt: skip
    root = tmp_path / "runs"
    status = study.run_grid(grid, root, progress=False).set_index("run").status
    assert status["official_s0"] == "done" and status["kept_logs_only_s0"] == "done", status
    assert status["masked_s0"].startswith("failed: test scores (exit 1)"), status
    scores = pd.read_csv(root / "official_s0" / TEST_SCORES)
    assert list(scores.name) == ["p257_000", "p257_001"] and scores.pesq.between(1.0, 4.6).all()
    assert (scores.run == "official_s0").all() and (scores.seed == 0).all()
    assert not (root / "kept_logs_only_s0" / "test").exists()
    assert "test scores of best.pt" in (root / "official_s0" / "train.log").read_text()
    assert json.loads((root / "official_s0" / "done.json").read_text())["test_seconds"] > 0  # for a time limit
    assert "test_seconds" not in json.loads((root / "masked_s0" / "done.json").read_text())
    again = study.run_grid(grid, root, progress=False).set_index("run").status  # the failed one is tried again
    assert again["official_s0"] == "done" and again["masked_s0"].startswith("failed: test scores")
    assert (root / "masked_s0" / "train.log").read_text().count("test scores of best.pt") == 2
    assert (root / "official_s0" / "train.log").read_text().count("test scores of best.pt") == 1
    assert study.Grid(**yaml.safe_load(yaml.safe_dump(grid.to_dict()))).test_after_training
    assert "test_after_training" not in study.Grid().to_dict()  # other grids' grid.yaml unchanged
