"""`python -m cmgan_lib.training` (and `torchrun -m cmgan_lib.training`): the trainer, as `cmgan ablate` starts it.

Why not `-m cmgan_lib.training.train`: multiprocessing runs the parent's main module again in every worker it
starts with forkserver or spawn, and the trainer's module imports torch: each PESQ worker paid ~3 s of CPU and
~300 MB at every trainer start. A package's `__main__` is the one main module it leaves alone (CPython's
`multiprocessing.spawn._fixup_main_from_name`)."""

from cmgan_lib.training.train import main

raise SystemExit(main())
