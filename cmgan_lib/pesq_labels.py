"""Alias kept for the documented drop-in `from cmgan_lib.pesq_labels import batch_pesq`: the module is
`cmgan_lib.training.pesq_labels`. Nothing inside cmgan_lib imports this module (an import-linter contract)."""

from cmgan_lib.training.pesq_labels import *  # noqa: F403
from cmgan_lib.training.pesq_labels import batch_pesq  # noqa: F401  (named: the documented entry point)
