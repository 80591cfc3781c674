"""What `benchmarks/gpu_checks.sh` prints at the end: device, the bench table against issue 21's targets, the
test suite's result on CUDA, and the causal grid per variant and per comparison (Welch 95% intervals over seeds).

    python benchmarks/gpu_summary.py runs/gpu_checks
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import yaml

from cmgan_lib.analysis.stats import difference_interval, mean_interval

TARGETS = {"fp32": 0.5, "bf16": 0.35}  # ours/published step time (issue 21); bf16 also <= 10 GiB peak
BF16_PEAK_GIB = 10.0
FACTS = ("best_val_pesq", "final_val_pesq", "drop_smoothed")


def bench_lines(text: str) -> list[str]:
    """The bench table (its header and one row per precision) with each target's verdict."""
    lines = []
    for line in text.splitlines():
        cells = line.split()
        if line.startswith("precision "):
            lines.append(line)
        elif cells and cells[0] in ("fp32", "tf32", "bf16") and len(cells) >= 7:
            ratio, peak = float(cells[4]), cells[6]
            verdict = ""
            if cells[0] in TARGETS:
                met = ratio <= TARGETS[cells[0]]
                if cells[0] == "bf16" and peak != "n/a":
                    met = met and float(peak) <= BF16_PEAK_GIB
                    verdict = f"  target <= {TARGETS['bf16']}x and <= {BF16_PEAK_GIB:g} GiB: "
                else:
                    verdict = f"  target <= {TARGETS[cells[0]]}x: "
                verdict += "met" if met else "missed"
            lines.append(line + verdict)
        elif line.startswith("bench: exit"):
            lines.append(line)
    return lines or ["bench: no table (see bench.txt)"]


def tests_line(text: str) -> str:
    """pytest's last summary line (passed/failed/skipped, or where it was interrupted)."""
    found = [ln.strip("= ") for ln in text.splitlines() if re.search(r"\d+ (passed|failed|errors?)\b", ln)]
    failed = [ln for ln in text.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    head = found[-1] if found else "no pytest summary (see tests.txt)"
    if "KeyboardInterrupt" in text:
        head += " (cut at the time limit)"
    return "\n".join([head, *failed[:20]])


def mean_text(values: pd.Series) -> str:
    m = mean_interval(values)
    return f"{m.mean:.3f} (95% CI {m.low:.3f} to {m.high:.3f}, n={m.n})" if m.n > 1 else f"{m.mean:.3f} (n={m.n})"


def causal_lines(folder: Path) -> list[str]:
    """Runs by status; per variant the mean of each fact over finished seeds; per comparison the difference."""
    summary_csv, grid_yaml = folder / "summary.csv", folder / "grid.yaml"
    if not summary_csv.is_file():
        return ["causal: no summary.csv (the stage did not finish; see causal.txt)"]
    summary = pd.read_csv(summary_csv)
    lines = [f"{n} run(s): {status}" for status, n in summary.status.value_counts().items()]
    done = summary[summary.status.str.startswith("done")]
    for variant, rows in done.groupby("variant", sort=False):
        cells = "  ".join(f"{fact} {mean_text(rows[fact])}" for fact in FACTS if fact in rows)
        lines.append(f"{variant}: {cells}")
    comparisons = yaml.safe_load(grid_yaml.read_text()).get("comparisons", []) if grid_yaml.is_file() else []
    for variant, reference in comparisons:
        a, b = done[done.variant == variant], done[done.variant == reference]
        cells = "  ".join(f"{fact} {difference_interval(a[fact], b[fact])}" for fact in FACTS if fact in done)
        lines.append(f"{variant} - {reference}: {cells}")
    return lines


def main(work: str) -> None:
    root = Path(work)

    def read(name: str) -> str:
        return (root / name).read_text() if (root / name).is_file() else ""

    print("device:", read("device.txt").strip() or "unknown")
    print(read("wall.txt").strip())
    if read("bench.txt"):
        print("\n[bench] ours vs published (config: see bench.txt)\n" + "\n".join(bench_lines(read("bench.txt"))))
    if read("tests.txt"):
        print("\n[tests] the suite here\n" + tests_line(read("tests.txt")))
    if (root / "CAUSAL_GPU").is_dir() or read("causal.txt"):
        print("\n[causal] configs/causal_gpu.yaml\n" + "\n".join(causal_lines(root / "CAUSAL_GPU")))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/gpu_checks")
