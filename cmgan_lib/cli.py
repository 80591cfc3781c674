"""The `cmgan` command: thin argument parsing over cmgan_lib functions (no library code reads `args`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_enhance(a: argparse.Namespace) -> int:
    from cmgan_lib.scoring.enhance import enhance_files
    from cmgan_lib.training.runs import resolve_checkpoint

    checkpoint = Path(a.checkpoint)
    if checkpoint.is_dir():  # a run folder: its best.pt (else last.pt)
        checkpoint = resolve_checkpoint(checkpoint)
        print(f"checkpoint: {checkpoint}", file=sys.stderr)
    result = enhance_files(checkpoint, a.input, a.output, device=a.device, cut_len=a.cut_len,
                           trust_checkpoint=a.trust_checkpoint, max_chunk_seconds=a.max_chunk_seconds,
                           resample=a.resample)  # fmt: skip
    return 0 if not result.failed else 1


def _cmd_make_synthetic(a: argparse.Namespace) -> int:
    from cmgan_lib.data.synthetic import make_dataset

    manifest = make_dataset(a.out, n_train=a.n_train, n_test=a.n_test, n_valid=a.n_valid, seed=a.seed,
                            hard_fraction=a.hard_fraction, use_espeak=a.espeak, overwrite=a.overwrite)  # fmt: skip
    print(f"wrote {len(manifest)} clips to {a.out} (manifest: {a.out}/manifest.csv)")
    return 0


def _cmd_make_vb_regime(a: argparse.Namespace) -> int:
    from cmgan_lib.data.vb_regime import make_vb_regime

    table = make_vb_regime(a.source, a.out, arm=a.arm, overwrite=a.overwrite)
    counts = ", ".join(f"{s}: {n}" for s, n in table.groupby("split", sort=False).size().items())
    crops = ", ".join(f"{r.file} from {int(r.crop_start)}" for r in table[table.split == "train"].itertuples())
    print(f"wrote arm {a.arm!r} to {a.out} ({counts}; crops {crops}; manifest: {a.out}/manifest.csv)")
    return 0


def _cmd_validate_data(a: argparse.Namespace) -> int:
    from cmgan_lib.data.validate import DataValidationError, validate_dataset

    if a.reference:
        return _validate_against_reference(a)
    try:
        report = validate_dataset(a.data_dir, resample=a.resample)
    except DataValidationError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(report)  # "DIR: OK (train: N pairs, test: M pairs)"
    return 0


def _validate_against_reference(a: argparse.Namespace) -> int:
    from cmgan_lib.scoring.reference_check import check_against_reference

    try:
        tolerance = {} if a.tolerance is None else {"tolerance": a.tolerance}
        report = check_against_reference(a.data_dir, n_jobs=a.jobs, **tolerance)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.out:
        report.table.to_csv(a.out, float_format="%.4f")
    print(report, file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 2


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from cmgan_lib.analysis.evaluate import evaluate

    result = evaluate(checkpoint=a.checkpoint, test_dir=a.test_dir, out_dir=a.out, device=a.device,
                      enhanced_dir=a.enhanced_dir, legacy_float_scale=a.legacy_float_scale, n_jobs=a.jobs,
                      trust_checkpoint=a.trust_checkpoint, max_chunk_seconds=a.max_chunk_seconds)  # fmt: skip
    if result is None:
        return 1
    excluded = int(result["n_excluded"].max()) if len(result) else 0
    if excluded:  # as enhance does: a file that could not be scored is a failure, even if the rest were
        print(f"error: {excluded} file(s) could not be scored; see reason/detail in {a.out}/metrics_per_file.csv",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _cmd_train(argv: list[str]) -> int:
    from cmgan_lib.training.train import main as train_main

    return train_main(argv)


def _cmd_ablate(a: argparse.Namespace) -> int:
    from cmgan_lib.study import load_grid, run_ablation

    if a.status:
        from cmgan_lib.cluster import format_status, grid_status

        print(format_status(grid_status(a.status), a.status))
        return 0
    if not a.grid or not a.out:
        raise ValueError("cmgan ablate needs --grid FILE and --out DIR (or --status DIR alone)")
    grid = load_grid(a.grid)
    if a.seeds:
        grid.seeds = a.seeds
    if a.executor != "local" or a.emit_sbatch:
        return _ablate_on_cluster(a, grid)
    run_ablation(grid, a.out, notebooks=not a.no_notebooks, runs_per_gpu=a.runs_per_gpu, audit=a.audit,
                 cpu_runs=a.cpu_runs, train=not a.no_train, time_limit=a.time_limit,
                 run_seconds=a.run_seconds)  # fmt: skip
    return 0


def _ablate_on_cluster(a: argparse.Namespace, grid) -> int:
    """--emit-sbatch FILE, or --executor slurm / submitit-local: submit the array and return at once."""
    from cmgan_lib import cluster

    cli = dict(partition=a.partition, gpus_per_run=a.gpus_per_run, cpus_per_run=a.cpus_per_run, mem_gb=a.mem_gb,
               time_min=a.slurm_time, array_parallelism=a.array_parallelism, extra=a.sbatch_extra or [],
               signal_delay_s=a.signal_delay)  # fmt: skip
    options = cluster.slurm_options(grid.slurm, cli)
    if a.emit_sbatch:
        path = cluster.write_sbatch(grid, a.out, options, a.emit_sbatch)
        print(f"wrote {path}: {len(grid.jobs())} array tasks ({cluster.options_summary(options)}); `sbatch {path}`, "
              f"then `cmgan ablate --status {a.out}`")  # fmt: skip
        return 0
    try:
        jobs = cluster.submit_grid(grid, a.out, options, executor=a.executor)
    except cluster.MissingExtraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(jobs):
        print(f"submitted {len(jobs)} task(s) ({a.executor}; {cluster.options_summary(options)}): job ids in "
              f"{Path(a.out) / cluster.JOBS_CSV}; progress: `cmgan ablate --status {a.out}`")  # fmt: skip
    return 0


def _seed_list(text: str) -> list[int]:
    """--seeds 0,1,2 -> [0, 1, 2]; anything else is a usage error (argparse prints it in one line)."""
    try:
        seeds = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated non-negative integers, got {text!r}") from None
    if any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be non-negative, got {text!r}")
    return seeds


def _cmd_share_report(a: argparse.Namespace) -> int:
    from cmgan_lib.study import share_report

    if a.note and not Path(a.note).is_file():
        raise FileNotFoundError(f"{a.note}: --note file does not exist")
    note = Path(a.note).read_text() if a.note else ""
    dest = share_report(a.src, a.dest, a.command, a.device, a.wall_minutes * 60 if a.wall_minutes else None, note,
                        overwrite=a.overwrite)  # fmt: skip
    print(f"shared report written to {dest}")
    return 0


def _cmd_audit(a: argparse.Namespace) -> int:
    from cmgan_lib.analysis.folder_audit import audit_folder, folder_audit_summary, write_folder_audit

    result = audit_folder(a.data_dir, int(round(a.cut_len * 16000)), a.batch_size, a.crops_per_clip, a.seed,
                          a.workers, progress=True)  # fmt: skip
    paths = write_folder_audit(result, a.out)
    print(folder_audit_summary(result))
    print(f"\nCSV: {', '.join(p.name for p in paths)} in {a.out}")
    return 0


def _cmd_study(a: argparse.Namespace) -> int:
    from cmgan_lib.study import run_study

    run_study(a.out)
    return 0


CHUNK_HELP = ("longest piece of a recording enhanced at once, in seconds (default: from the device's free memory; "
              "longer files are enhanced in overlapping pieces)")  # fmt: skip
TRUST_HELP = "load a checkpoint that needs unpickling (can run arbitrary code: only for files you trust)"


def _cmd_tb_export(a: argparse.Namespace) -> int:
    from cmgan_lib.training.tensorboard_log import INSTALL_HINT, available, export_runs

    if not available():
        print(f"error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    written = export_runs(a.run_root, out=a.out)
    print(f"wrote TensorBoard events of {len(written)} run(s); view: tensorboard --logdir {a.out or a.run_root}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cmgan", description="CMGAN reproducibility study tools.")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("enhance", help="enhance WAV files with a CMGAN generator checkpoint")
    e.add_argument(
        "--checkpoint",
        required=True,
        help="official raw state dict, this project's last.pt/best.pt, or a run folder (its best.pt)",
    )
    e.add_argument(
        "--resample",
        action="store_true",
        help="accept inputs at other sample rates (converted to 16 kHz on load; the output is 16 kHz)",
    )
    e.add_argument("--input", required=True, help="a WAV file or a folder of WAV files")
    e.add_argument("--output", required=True, help="folder for the enhanced WAV files")
    e.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    e.add_argument("--cut-len", type=int, default=16000 * 16, help="chunk length in samples (published: 16 s)")
    e.add_argument("--max-chunk-seconds", type=float, default=None, help=CHUNK_HELP)
    e.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    e.set_defaults(func=_cmd_enhance)

    s = sub.add_parser("make-synthetic", help="write the embedded synthetic noisy-speech corpus")
    s.add_argument("out", help="output folder (CMGAN layout: train/{clean,noisy}, test/{clean,noisy})")
    s.add_argument("--n-train", type=int, default=160)
    s.add_argument("--n-test", type=int, default=40)
    s.add_argument("--n-valid", type=int, default=20, help="clips of held-out speakers in valid/ (0: none)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--hard-fraction", type=float, default=0.1, help="fraction of hard clips for the audit")
    s.add_argument("--espeak", action="store_true", help="use espeak-ng speech when the binary is on PATH")
    s.add_argument("--overwrite", action="store_true", help="replace a corpus already in OUT (its WAVs and manifest)")
    s.set_defaults(func=_cmd_make_synthetic)

    vb = sub.add_parser("make-vb-regime", help="lay out the real-speech regime (analysis plan R-vb) from the "
                        "Voice Bank + DEMAND samples")  # fmt: skip
    vb.add_argument("--source", required=True, help="folder with clean/ and noisy/ (../shared/data/"
                    "voicebank_demand_samples)")  # fmt: skip
    vb.add_argument("--out", required=True, help="output corpus, e.g. runs/vb_regime/speech")
    vb.add_argument("--arm", choices=("speech", "lead"), default="speech",
                    help="speech: both training crops at the highest clean energy; lead: p232_003's crop from the "
                         "file's start (its leading silence)")  # fmt: skip
    vb.add_argument("--overwrite", action="store_true", help="replace a corpus already in OUT")
    vb.set_defaults(func=_cmd_make_vb_regime)

    v = sub.add_parser("validate-data", help="check a Voice Bank + DEMAND style folder before training")
    v.add_argument("data_dir")
    v.add_argument("--resample", action="store_true", help="accept other sample rates (resampled on load)")
    v.add_argument(
        "--reference",
        action="store_true",
        help="score every noisy test file against its clean one and compare with the published per-track "
        "values of the Voice Bank + DEMAND noisy test set (DIR: clean/ + noisy/, or a data folder)",
    )
    v.add_argument("--jobs", type=int, default=-1, help="--reference: processes scoring files (-1: every core)")
    v.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="--reference: allowed |ours - published| per metric (default 1e-3: twice the log's rounding)",
    )
    v.add_argument("--out", default=None, help="--reference: also write the per-file table to this CSV")
    v.set_defaults(func=_cmd_validate_data)

    ev = sub.add_parser("evaluate", help="enhance a test set and compute PESQ, CSIG, CBAK, COVL, SSNR, STOI")
    ev.add_argument("--checkpoint", default=None)
    ev.add_argument("--test-dir", required=True, help="folder with clean/ and noisy/")
    ev.add_argument("--out", required=True)
    ev.add_argument("--device", default=None)
    ev.add_argument("--enhanced-dir", default=None, help="evaluate already-enhanced audio instead of a checkpoint")
    ev.add_argument("--legacy-float-scale", action="store_true", help="reproduce the published inflated composites")
    ev.add_argument("--jobs", type=int, default=None, help="parallel metric workers (default: all CPUs)")
    ev.add_argument("--max-chunk-seconds", type=float, default=None, help=CHUNK_HELP)
    ev.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    ev.set_defaults(func=_cmd_evaluate)

    t = sub.add_parser("train", help="train CMGAN: --config FILE [key=value ...] or --resume RUN_DIR", add_help=False)
    t.set_defaults(func=None)

    ab = sub.add_parser("ablate", help="run every variant x seed of an ablation grid, then evaluate")
    ab.add_argument("--grid", help="grid YAML (configs/ablation*.yaml); required unless --status")
    ab.add_argument("--out", help="output folder (runs in OUT/runs); required unless --status")
    ab.add_argument("--runs-per-gpu", type=int, default=1,
                    help="runs sharing one GPU at a time (default 1; measure before raising it)")  # fmt: skip
    ab.add_argument("--cpu-runs", type=int, default=1,
                    help="on a CPU machine: runs trained at once, the cores split among them")  # fmt: skip
    ab.add_argument("--audit", action="store_true", help="also run notebook 01 (PESQ-failure audit) on the runs")
    ab.add_argument("--seeds", type=_seed_list, default=None,
                    help="comma-separated seeds to run instead of the grid's, e.g. 0,1")  # fmt: skip
    ab.add_argument("--no-notebooks", action="store_true",
                    help="train and write summary.csv only (e.g. on a GPU machine without papermill); the same "
                         "command without it later renders the reports, skipping the finished runs")  # fmt: skip
    ab.add_argument("--no-train", action="store_true",
                    help="train nothing: render the reports and summary.csv from the runs already in OUT/runs "
                         "(logs from a GPU machine, say); notebook 03 only if a run kept a checkpoint")  # fmt: skip
    ab.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                    help="start a run only if it should end within SECONDS from now (judged by the longest run "
                         "finished so far); the others are recorded as not started")  # fmt: skip
    ab.add_argument("--run-seconds", type=float, default=0.0, metavar="SECONDS",
                    help="with --time-limit: what one run is expected to take until a run of OUT has finished "
                         "(say, the last grid's longest); without it the first runs start regardless")  # fmt: skip
    cl = ab.add_argument_group("cluster (docs/cluster.md); options also from the grid YAML's `slurm:` mapping")
    cl.add_argument("--executor", choices=["local", "slurm", "submitit-local"], default="local",
                    help="local (default): train here; slurm: one job array through submitit, returns at once "
                         "(pip install -e '.[cluster]'); submitit-local: the same tasks on this machine")  # fmt: skip
    cl.add_argument("--status", metavar="OUT", help="per run of OUT: queued/running/done/failed, epochs done, Slurm "
                    "state and the last log line; nothing trains")  # fmt: skip
    cl.add_argument("--emit-sbatch", metavar="FILE", help="write a plain sbatch array script for the grid (no "
                    "submitit needed); submit it with sbatch FILE")  # fmt: skip
    cl.add_argument("--partition", default=None)
    cl.add_argument("--gpus-per-run", type=int, default=None, help="GPUs of one run (> 1: torchrun, DDP; default 1)")
    cl.add_argument("--cpus-per-run", type=int, default=None, help="default 8")
    cl.add_argument("--mem-gb", type=int, default=None, help="default 64")
    cl.add_argument("--slurm-time", type=int, default=None, metavar="MINUTES",
                    help="time limit of one task (default 1440); a longer run is requeued and resumes")  # fmt: skip
    cl.add_argument("--array-parallelism", type=int, default=None, help="tasks running at once (default: all)")
    cl.add_argument("--sbatch-extra", action="append", metavar="FLAG",
                    help="a further sbatch flag, e.g. --sbatch-extra=--account=abc (repeatable)")  # fmt: skip
    cl.add_argument("--signal-delay", type=int, default=None, metavar="SECONDS",
                    help="the stop-and-requeue signal comes this long before the time limit (default 120)")  # fmt: skip
    ab.set_defaults(func=_cmd_ablate)

    sr = sub.add_parser("share-report", help="copy an ablation's HTML reports, summary and logs into reports/")
    sr.add_argument("src", help="the --out folder of `cmgan ablate`")
    sr.add_argument("dest", help="e.g. reports/2026-11-25_injection_cpu")
    sr.add_argument("--command", required=True, help="the command that produced it")
    sr.add_argument("--device", required=True, help="the machine, e.g. '2-core CPU, no GPU'")
    sr.add_argument("--wall-minutes", type=float, default=None)
    sr.add_argument("--note", default=None, help="a markdown file appended to the README (the findings)")
    sr.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a DEST holding a report (its README is rewritten; notes added are lost)",
    )
    sr.set_defaults(func=_cmd_share_report)

    au = sub.add_parser("audit", help="PESQ failures of a folder's training crops: causes, batches affected, files")
    au.add_argument("data_dir", help="folder with clean/ and noisy/ (or train/clean and train/noisy)")
    au.add_argument("--cut-len", type=float, default=2.0, help="crop length in seconds (published: 2)")
    au.add_argument("--batch-size", type=int, default=4, help="training batch size (published: 4)")
    au.add_argument("--crops-per-clip", type=int, default=4, help="random crops per file")
    au.add_argument("--out", default="cmgan_audit", help="folder for the CSV tables")
    au.add_argument("--seed", type=int, default=0)
    au.add_argument("--workers", type=int, default=None, help="PESQ worker processes (default: all CPUs)")
    au.set_defaults(func=_cmd_audit)

    st = sub.add_parser("study", help="the whole study on the embedded synthetic default")
    st.add_argument("--out", default="runs/STUDY")
    st.set_defaults(func=_cmd_study)
    _add_tb_export(sub)
    return p


def _add_tb_export(sub: argparse._SubParsersAction) -> None:
    tb = sub.add_parser("tb-export", help="TensorBoard event files from existing runs' CSV logs (tb extra)")
    tb.add_argument("run_root", help="a folder of runs (e.g. runs/X/runs, reports/DATE_name/runs) or one run")
    tb.add_argument("--out", default=None, help="write OUT/<run>/ instead of RUN/tensorboard/ (read-only runs)")
    tb.set_defaults(func=_cmd_tb_export)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":  # the trainer owns its arguments (also run by torchrun)
        return _cmd_train(argv[1:])
    args = build_parser().parse_args(argv)
    from cmgan_lib.study import AblationInterrupted
    from cmgan_lib.training.runguard import DiskFullError

    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:  # bad files, folders or arguments
        print(f"error: {exc}", file=sys.stderr)  # one line, no traceback
        return 2
    except DiskFullError as exc:  # names the file and what was kept
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except AblationInterrupted as exc:  # Ctrl-C on ablate: trainers stopped cleanly, status.csv written
        print(exc, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C anywhere else: Python's traceback says nothing the user needs
        print(f"interrupted (Ctrl-C): cmgan {args.command} stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
