"""Alias kept for `python -m cmgan_lib.train` / `torchrun -m cmgan_lib.train` (the launch documented before
`-m cmgan_lib.training`, whose PESQ workers do not import the trainer again): the trainer is
`cmgan_lib.training.train`. Nothing inside cmgan_lib imports this module (an import-linter contract)."""

from cmgan_lib.training.train import *  # noqa: F403
from cmgan_lib.training.train import main

if __name__ == "__main__":
    raise SystemExit(main())
