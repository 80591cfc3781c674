"""The layers of cmgan_lib hold (import-linter's contracts in pyproject.toml), and the check notices a break."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (pip install -e '.[dev]')")


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def copy_tree(tmp_path: Path) -> Path:
    dst = tmp_path / "repo"
    shutil.copytree(ROOT / "cmgan_lib", dst / "cmgan_lib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


def test_the_layers_hold_today():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "upward"),
    [
        ("core/paths.py", "from cmgan_lib.training.config import TrainConfig"),  # core reaching up to training
        ("training/losses.py", "from cmgan_lib.analysis.stats import wilson"),  # the math reading analysis
        ("analysis/stats.py", "from cmgan_lib.reports.plotting import legend_outside"),  # numbers needing words
        ("reports/plotting.py", "from cmgan_lib import study"),  # a report reaching the runner
        ("models/generator.py", "from cmgan_lib.data.crops import crop_pair"),  # siblings must not know each other
        ("training/train.py", "from cmgan_lib.pesq_labels import batch_pesq"),  # the users' alias, inside
    ],
)
def test_an_upward_import_breaks_the_check(tmp_path, module, upward):
    repo = copy_tree(tmp_path)
    path = repo / "cmgan_lib" / module
    path.write_text(path.read_text() + f"\n\ndef _upward():\n    {upward}\n")
    result = lint(repo)
    assert result.returncode != 0, f"{upward} in {module} was not caught:\n{result.stdout}"
    assert "BROKEN" in result.stdout or "broken" in result.stdout


def test_the_documented_entry_points_still_work():
    """README's drop-in and the torchrun module keep working after the move (thin aliases)."""
    from cmgan_lib.pesq_labels import batch_pesq
    from cmgan_lib.training import pesq_labels

    assert batch_pesq is pesq_labels.batch_pesq
    out = subprocess.run([sys.executable, "-m", "cmgan_lib.train", "--help"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0 and "--resume" in out.stdout
