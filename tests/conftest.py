"""Shared fixtures: the ../shared folder (skipped with a reason when absent) and the slow-test switch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CMGAN_SHARED", ROOT.parent / "shared"))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("CMGAN_RUN_SLOW") == "1":
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow (make test does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present (a user's fresh clone has no ../shared)")
    return SHARED


@pytest.fixture(scope="session")
def vb_samples(shared_dir) -> Path:
    """The 25 real Voice Bank + DEMAND test utterances: <dir>/clean/*.wav and <dir>/noisy/*.wav."""
    path = shared_dir / "data" / "voicebank_demand_samples"
    if not (path / "clean").is_dir():
        pytest.skip(f"{path}/clean not present")
    return path


@pytest.fixture(scope="session")
def reference_dir(shared_dir) -> Path:
    path = shared_dir / "data" / "reference"
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path
