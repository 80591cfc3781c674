"""cmgan_lib.paths.run_config: the one reader of a run's config.yaml."""

from __future__ import annotations

import pytest

from cmgan_lib.paths import run_config


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
