"""Committed notebooks are clean (no outputs: strip with `make strip`) and papermill-parameterised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_study_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == [
        "01_pesq_failure_audit",
        "02_train_baseline_vs_fixed",
        "03_evaluate",
        "04_confirmatory",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped_and_parameterised(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    dirty = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count") is not None]
    assert not dirty, f"{path.name}: code cells {dirty} carry outputs; run `make strip`"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters' (papermill)"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
