"""benchmarks/gpu_checks.sh and its summary: a lent GPU machine runs them once, for minutes, so their plumbing is
checked here (the whole script at tiny sizes: `GPU_CHECKS_DRY=1 bash benchmarks/gpu_checks.sh all`, ~1 min)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_summary  # noqa: E402

BENCH = """2026-12-01 x86_64 cpus=16 torch=2.13.0 load=0.10
NVIDIA H200
configs/official.yaml : 10 steps per side after 3 warm-up
precision device  published ms   ours ms ours/pub peak pub GiB peak ours GiB GFLOP/step pub   ours GFLOP/s pub   ours
fp32      cuda:0         313.0     150.0    0.479        20.60         21.00         100.00 100.00       319.5  666.7
tf32      cuda:0         300.0     160.0    0.533        20.60         21.00         100.00 100.00       333.3  625.0
bf16      cuda:0         250.0      90.0    0.360        11.70         11.90         100.00 100.00       400.0 1111.1
"""


def test_the_bench_table_is_read_against_issue_21s_targets():
    lines = gpu_summary.bench_lines(BENCH)
    assert lines[0].startswith("precision ") and len(lines) == 4
    assert lines[1].endswith("target <= 0.5x: met")  # 0.479
    assert "target" not in lines[2]  # tf32 has no target
    assert lines[3].endswith("target <= 0.35x and <= 10 GiB: missed")  # 0.360 and 11.9 GiB


def test_the_bf16_target_needs_both_the_ratio_and_the_memory():
    row = "bf16      cuda:0         250.0      85.0    {r}         9.00          {m}         1.00 1.00       4.0 11.1"
    header = BENCH.splitlines()[3]
    verdict = {(r, m): gpu_summary.bench_lines(f"{header}\n{row.format(r=r, m=m)}")[1].rsplit(": ", 1)[1]
               for r in ("0.340", "0.360") for m in ("9.50", "10.50")}  # fmt: skip
    assert verdict == {("0.340", "9.50"): "met", ("0.340", "10.50"): "missed", ("0.360", "9.50"): "missed",
                       ("0.360", "10.50"): "missed"}  # fmt: skip
    assert gpu_summary.bench_lines("nothing here") == ["bench: no table (see bench.txt)"]


def test_the_test_result_line_names_failures_and_a_cut():
    text = "....F..\nFAILED tests/test_train.py::test_x - AssertionError\n== 1 failed, 6 passed in 9.0s ==\n"
    failed = "FAILED tests/test_train.py::test_x - AssertionError"
    assert gpu_summary.tests_line(text).splitlines() == ["1 failed, 6 passed in 9.0s", failed]
    cut = "....\n!!!!!!! KeyboardInterrupt !!!!!!!\n== 4 passed in 180.0s ==\n"
    assert gpu_summary.tests_line(cut) == "4 passed in 180.0s (cut at the time limit)"


def test_the_causal_summary_gives_differences_with_intervals_over_finished_seeds(tmp_path):
    rows = [dict(run=f"{v}_s{s}", variant=v, seed=s, status="done", best_val_pesq=b + 0.01 * s,
                 final_val_pesq=b - 0.2 + 0.01 * s, drop_smoothed=0.2) for v, b in (("official", 2.5), ("no_disc", 2.3))
            for s in range(3)]  # fmt: skip
    rows.append(dict(run="official_s3", variant="official", seed=3, status="not started: time limit (300 s)"))
    pd.DataFrame(rows).to_csv(tmp_path / "summary.csv", index=False)
    (tmp_path / "grid.yaml").write_text("comparisons: [[no_disc, official]]\n")
    lines = gpu_summary.causal_lines(tmp_path)
    assert "6 run(s): done" in lines and "1 run(s): not started: time limit (300 s)" in lines
    assert any(ln.startswith("official: best_val_pesq 2.510 (95% CI") and "n=3" in ln for ln in lines)
    diff = next(ln for ln in lines if ln.startswith("no_disc - official"))
    assert "best_val_pesq -0.200 (95% CI -0.223 to -0.177, n=3)" in diff
    assert gpu_summary.causal_lines(tmp_path / "none")[0].startswith("causal: no summary.csv")


def test_the_script_parses_and_refuses_an_unknown_check():
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_checks.sh")]).returncode == 0
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_checks.sh"), "nope"], capture_output=True, text=True,
                       cwd=ROOT)  # fmt: skip
    assert r.returncode == 2 and "usage" in r.stderr


@pytest.mark.slow
def test_a_dry_run_comes_back_in_one_file_and_becomes_a_shared_report(tmp_path):
    """`GPU_CHECKS_DRY=1 ... bench` (the CPU stand-in, tiny sizes): $OUT holds only what the device returns (at most
    8 files, none in a folder), the archive carries the bench table, and `report` turns it into a shared report
    even though the causal stage never ran (~15 s)."""
    import os
    import re
    import tarfile

    env = {**os.environ, "GPU_CHECKS_DRY": "1", "OUT": str(tmp_path / "out"), "GPU_CHECKS_WORK": str(tmp_path / "w"),
           "PY": sys.executable}  # fmt: skip
    script = str(ROOT / "benchmarks" / "gpu_checks.sh")
    r = subprocess.run(["bash", script, "bench"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    back = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert back == ["gpu_checks.tgz", "summary.txt"] and all(p.is_file() for p in (tmp_path / "out").iterdir())
    with tarfile.open(tmp_path / "out" / "gpu_checks.tgz") as tar:
        names = set(tar.getnames())
        assert {"./bench.txt", "./date.txt", "./device.txt"} <= names and not any(n.endswith(".pt") for n in names)
    assert "fp32      cpu" in (tmp_path / "out" / "summary.txt").read_text()
    dest = tmp_path / "report"
    r = subprocess.run(["bash", script, "report", str(tmp_path / "out" / "gpu_checks.tgz"), "the command"], cwd=ROOT,
                       env={**env, "REPORT_DIR": str(dest)}, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    readme = (dest / "README.md").read_text()
    assert "CPU dry run" in readme and "`the command`" in readme
    assert re.search(r"wall time: \d+\.\d min", readme), readme  # read from the run (not "not recorded"); minutes vary
    assert (dest / "bench.txt").read_text() == (tmp_path / "w" / "bench.txt").read_text()
