"""Alias kept for `python -m cmgan_lib.train` / `torchrun -m cmgan_lib.train` (the launch documented before
`-m cmgan_lib.training`): the trainer is `cmgan_lib.training.train`. Nothing inside cmgan_lib imports this module
(an import-linter contract).

Why nothing is imported at the top: multiprocessing runs this module again in every PESQ worker (as `__mp_main__`)
when it was started with `-m`; an import of the trainer here cost each worker ~3 s of CPU and ~300 MB. Its names
are still there on first use (`cmgan_lib.train.main`)."""

from typing import Any


def __getattr__(name: str) -> Any:
    from cmgan_lib.training import train

    return getattr(train, name)


if __name__ == "__main__":
    from cmgan_lib.training.train import main

    raise SystemExit(main())
