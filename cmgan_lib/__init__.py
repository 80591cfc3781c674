"""cmgan_lib: a measured reproducibility study of CMGAN training (Cao, Abdulatif, Yang, Interspeech 2022)."""

__version__ = "0.1.0"

SAMPLE_RATE = 16000
