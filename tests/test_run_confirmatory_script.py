"""scripts/run_confirmatory.sh's plumbing with `cmgan` replaced by a stub that records its calls: a fresh checkout
gets the interim report's finished runs back (so they are not trained again), `save` keeps the runs finished since,
and TIME_LIMIT reaches every grid."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "run_confirmatory.sh"


def _run(tmp_path: Path, **env: str) -> tuple[int, list[str], str]:
    log = tmp_path / "calls.txt"
    stub = tmp_path / "cmgan"
    stub.write_text(f'#!/bin/sh\necho "cmgan $*" >> {log}\nexit 0\n')
    stub.chmod(0o755)
    full = {**os.environ, "CMGAN": str(stub), "OUT": str(tmp_path / "out"), "VB_SOURCE": str(tmp_path / "none"),
            **env}  # fmt: skip
    proc = subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True)
    return proc.returncode, log.read_text().splitlines() if log.is_file() else [], proc.stdout


def _logs(run: Path, tag: str) -> None:
    run.mkdir(parents=True)
    for name in ("config.yaml", "training_epoch_log.csv", "training_step_log.csv"):
        (run / name).write_text(f"# {tag}\n")


def test_kept_runs_come_back_with_done_json_and_a_live_run_is_not_overwritten(tmp_path):
    interim = tmp_path / "interim"
    _logs(interim / "runs" / "official_s100", "official_s100")
    _logs(interim / "runs" / "no_disc_s100", "no_disc_s100")
    _logs(interim / "replications" / "REPLICATION_SYN1_CPU" / "official_s100", "syn1")
    live = tmp_path / "out" / "CONFIRMATORY_CPU" / "runs" / "no_disc_s100"
    live.mkdir(parents=True)
    (live / "last.pt").write_text("a live run's checkpoint")
    rc, calls, out = _run(tmp_path, INTERIM=str(interim))
    assert rc == 0, out
    back = tmp_path / "out" / "CONFIRMATORY_CPU" / "runs" / "official_s100"
    assert (back / "training_epoch_log.csv").read_text() == "# official_s100\n"
    assert json.loads((back / "done.json").read_text())["restored_from"].startswith(str(interim / "runs"))
    syn1 = tmp_path / "out" / "REPLICATION_SYN1_CPU" / "runs" / "official_s100"
    assert (syn1 / "config.yaml").read_text() == "# syn1\n" and (syn1 / "done.json").is_file()
    assert not (live / "done.json").exists() and not (live / "training_epoch_log.csv").exists()
    assert "restored CONFIRMATORY_CPU/official_s100" in out and "no_disc_s100 from" not in out
    assert calls and calls[0].startswith("cmgan ablate --grid configs/confirmatory_cpu.yaml")
    # RESTORE=0 puts nothing back
    rc, _, out = _run(tmp_path, INTERIM=str(interim), RESTORE="0", OUT=str(tmp_path / "fresh"))
    assert rc == 0 and "restored" not in out and not (tmp_path / "fresh" / "CONFIRMATORY_CPU").exists()


def test_save_keeps_finished_runs_logs_without_checkpoints_and_never_what_came_back(tmp_path):
    interim = tmp_path / "interim"
    out = tmp_path / "out"
    done = out / "REPLICATION_W32_CPU" / "runs" / "official_s0"
    _logs(done, "w32")
    (done / "done.json").write_text("{}")
    (done / "best.pt").write_text("checkpoint")
    (done / "test" / "official_s0" / "enhanced").mkdir(parents=True)
    (done / "test" / "metrics_per_file.csv").write_text("run,name,pesq\n")
    (done / "test" / "official_s0" / "enhanced" / "a.wav").write_text("audio")
    _logs(out / "CONFIRMATORY_CPU" / "runs" / "clip5_s105", "live")  # no done.json: still training
    back = out / "CONFIRMATORY_CPU" / "runs" / "official_s100"
    _logs(back, "restored")
    (back / "done.json").write_text('{"restored_from": "somewhere"}')
    rc = subprocess.run(["bash", str(SCRIPT), "save"], env={**os.environ, "OUT": str(out), "INTERIM": str(interim)},
                        capture_output=True, text=True).returncode  # fmt: skip
    assert rc == 0
    kept = interim / "replications" / "REPLICATION_W32_CPU" / "official_s0"
    assert sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file()) == [
        "config.yaml", "test/metrics_per_file.csv", "training_epoch_log.csv", "training_step_log.csv"]  # fmt: skip
    assert not (interim / "runs").exists()  # neither the live run nor the restored one


def test_time_limit_is_passed_on_and_once_spent_no_grid_starts(tmp_path):
    rc, calls, _ = _run(tmp_path, RESTORE="0", TIME_LIMIT="5000")
    ablate = [c for c in calls if c.startswith("cmgan ablate")]
    assert rc == 0 and len(ablate) >= 4  # the main grid and the synthetic and width replications
    limits = [float(c.split("--time-limit ")[1].split()[0]) for c in ablate]
    assert all(4900 < t <= 5000 for t in limits), limits
    assert all(c.endswith("--run-seconds 0") for c in ablate), ablate  # no run has finished yet
    rc, calls, out = _run(tmp_path, RESTORE="0", TIME_LIMIT="0")
    assert rc == 0 and len(calls) == len(ablate)  # nothing new was called
    assert "TIME_LIMIT reached, left out" in out


def test_a_new_grid_judges_its_first_runs_by_the_longest_run_finished_in_any_grid(tmp_path):
    """A new `ablate` knows no run length of its own: the script passes the longest finished run of all grids
    (training plus test scoring; a restored run, which records none, counts as 0)."""
    runs = tmp_path / "out" / "CONFIRMATORY_CPU" / "runs"
    for name, done in (("official_s100", '{"seconds": 657.9, "cmd": ["x"]}'), ("clip5_s100", '{"seconds": null}'),
                       ("no_disc_s100", '{"seconds": 500.2, "test_seconds": 300.5}')):  # fmt: skip
        (runs / name).mkdir(parents=True)
        (runs / name / "done.json").write_text(done)
    rc, calls, _ = _run(tmp_path, RESTORE="0", TIME_LIMIT="5000")
    assert rc == 0 and calls and all(c.endswith("--run-seconds 800") for c in calls), calls


def test_a_grid_cut_by_the_time_limit_keeps_the_later_grids_waiting(tmp_path):
    """The plan's order: a main grid left unfinished by TIME_LIMIT starts no replication run (a new `ablate` knows
    no run length yet, so its first runs would start regardless of the time left)."""
    log = tmp_path / "calls.txt"
    stub = tmp_path / "cmgan"
    stub.write_text(
        f'#!/bin/sh\necho "cmgan $*" >> {log}\n'
        'while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done\n'
        'mkdir -p "$out" && printf "run,status\\nofficial_s107,not started: time limit (9 s)\\n" > "$out/summary.csv"\n'
    )
    stub.chmod(0o755)
    env = {**os.environ, "CMGAN": str(stub), "OUT": str(tmp_path / "out"), "RESTORE": "0", "TIME_LIMIT": "5000"}
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    calls = log.read_text().splitlines()
    assert proc.returncode == 0 and len(calls) == 1 and "confirmatory_cpu.yaml" in calls[0], calls
    assert "runs left for the next start; the later grids wait" in proc.stdout
