"""The trainer's distributed helpers: which rank this process is, and the few collectives the training step needs.

torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; without it there is one rank and every helper is a no-op. The
generator's gradients are averaged by DistributedDataParallel; the discriminator's by hand
(`Ranks.average_grads`), over the ranks that computed a loss, because PESQ labels are computed per rank and
one rank may skip while another does not (the published code would then deadlock in DDP's all-reduce).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from cmgan_lib.scoring.enhance import resolve_device


@dataclass(frozen=True)
class Ranks:
    """This process's rank among `world` and its device; the collectives all ranks must call together."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @classmethod
    def start(cls, device: str | None) -> Ranks:
        """Read torchrun's environment, pick this rank's device and join the process group (NCCL/Gloo)."""
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        dev = resolve_device(device)
        if dev.type == "cuda" and world > 1:
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        if world > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        return cls(rank, world, local_rank, dev)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.barrier()

    def all_true(self, flag: bool) -> bool:
        """True only if `flag` holds on every rank (so that all ranks take the same branch)."""
        if self.world == 1:
            return flag
        t = torch.tensor([0.0 if flag else 1.0], device=self.device)
        dist.all_reduce(t)
        return t.item() == 0

    def mean(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """Average per-rank gradients as DDP averages the step's own (so both sides of a share compare)."""
        if self.world > 1:
            for g in grads:
                dist.all_reduce(g)
                g /= self.world
        return grads

    def average_grads(self, params: Iterable[torch.nn.Parameter], participated: bool) -> int:
        """Average gradients over the ranks that computed a loss; returns how many did (0: no update)."""
        if self.world == 1:
            return int(participated)
        n = torch.tensor([float(participated)], device=self.device)
        dist.all_reduce(n)
        count = int(n.item())
        if count == 0:
            return 0
        for p in params:
            if p.grad is None or not participated:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= count
        return count

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def record(self, run_dir: Path, epoch: int, models: dict[str, torch.nn.Module], indices: list[int]) -> None:
        """Under DDP, append which samples each rank saw and a weight checksum per rank to RUN/ddp_ranks.json
        (a sync check)."""
        if self.world == 1:
            return
        checksums = {name: float(sum(p.detach().double().sum().item() for p in m.parameters()))
                     for name, m in models.items()}  # fmt: skip
        mine = {"rank": self.rank, "epoch": epoch, **checksums, "indices": indices}
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, mine)
        if self.is_main:
            path = run_dir / "ddp_ranks.json"
            history = json.loads(path.read_text()) if path.exists() else []
            history.append(gathered)
            tmp = path.with_name(f".{path.name}.tmp")  # renamed into place: a kill never leaves half a file
            tmp.write_text(json.dumps(history))
            os.replace(tmp, path)
