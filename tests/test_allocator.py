"""The allocator tuning is on in every process that imports cmgan_lib, and it removes the page-fault storm."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import resource, cmgan_lib, torch
from cmgan_lib.core import allocator
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for rounds in range(2):  # a step's pattern, 10 times per round: large tensors allocated, written and freed
    f0 = faults()
    for i in range(10):
        a = torch.empty(40 << 18); a.fill_(1.0); del a   # 40 MB
        b = torch.empty(10 << 18); b.fill_(1.0); del b   # 10 MB
    counts.append(faults() - f0)
print(allocator.applied(), counts[1])  # the second round: the heap has grown, what remains is the storm
"""


def _probe(tuning: str) -> tuple[bool, int]:
    env = {**os.environ, "CMGAN_MALLOC_TUNING": tuning}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


def test_tuned_allocator_reuses_large_blocks_instead_of_faulting_them_in_again():
    on_applied, on_faults = _probe("1")
    off_applied, off_faults = _probe("0")
    assert on_applied and not off_applied
    pages = 10 * (50 << 20) // os.sysconf("SC_PAGE_SIZE")  # what faulting every block in anew costs
    assert off_faults > pages // 2, "the probe no longer shows the storm it guards against"
    assert on_faults < pages // 20, f"{on_faults} page faults for 10 reused blocks: the allocator tuning is off"
