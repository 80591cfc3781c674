"""cmgan_lib.core.paths.run_config: the one reader of a run's config.yaml."""

from __future__ import annotations

import pytest

from cmgan_lib.core.paths import run_config


def test_run_config_reads_the_folder_or_a_file_in_it(tmp_path):
    (tmp_path / "config.yaml").write_text("cut_len: 8000\nval_split: valid\n")
    (tmp_path / "best.pt").write_bytes(b"")
    assert run_config(tmp_path) == {"cut_len": 8000, "val_split": "valid"}
    assert run_config(tmp_path / "best.pt") == {"cut_len": 8000, "val_split": "valid"}


def test_run_config_is_empty_without_a_config_and_refuses_a_non_mapping(tmp_path):
    assert run_config(tmp_path) == {}
    (tmp_path / "config.yaml").write_text("")
    assert run_config(tmp_path) == {}
    (tmp_path / "config.yaml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="config.yaml: expected a mapping"):
        run_config(tmp_path)


def test_shown_path_is_relative_to_the_project_or_a_run_root_never_absolute(tmp_path):
    from cmgan_lib.core.paths import repo_root, shown_path

    root = repo_root()
    assert shown_path(root / "runs" / "STUDY" / "runs") == "runs/STUDY/runs"
    assert shown_path("runs/STUDY/runs") == "runs/STUDY/runs"  # as given: already relative
    assert shown_path(root.parent / "shared" / "data") == "../shared/data"  # beside the checkout
    assert shown_path(tmp_path / "out" / "evaluate", tmp_path / "out") == "evaluate"  # inside the run root
    outside = shown_path(tmp_path / "corpus" / "test")
    assert outside == "…/corpus/test" and str(tmp_path) not in outside  # also from a clone in /tmp
    assert shown_path(None) == ""
