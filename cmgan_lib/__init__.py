"""cmgan_lib: a measured reproducibility study of CMGAN training (Cao, Abdulatif, Yang, Interspeech 2022)."""

from cmgan_lib.core.allocator import tune_allocator

__version__ = "0.1.0"

SAMPLE_RATE = 16000

tune_allocator()  # before any tensor exists: large blocks stay in the heap (see allocator.py)
