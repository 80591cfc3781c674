"""The CMGAN trainer: the published recipe by default, each proposed fix a switch, every fact logged.

Read top to bottom: `Trainer.train_step` (the generator's losses, then the metric discriminator on PESQ labels
of the detached estimate; the paper's math is in `losses.py`), `Trainer._update` (how either network steps),
`Trainer.fit` (epochs: training, then validation, checkpoints and early stopping), and `main` (the
`cmgan train` / `torchrun -m cmgan_lib.training.train` entry point). The config is `config.py`, what the run folder
holds `runs.py`, validation `validation.py`, and the distributed helpers `ddp.py`.

Distributed: torchrun sets RANK/WORLD_SIZE; the generator is wrapped in DistributedDataParallel (NCCL on
GPU, Gloo on CPU). The discriminator's gradients are averaged by hand over the ranks that actually updated
it, because PESQ labels are computed per rank and one rank may skip while another does not (the published
code would then deadlock in DDP's all-reduce).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from cmgan_lib.core.dsp import rms_normalizer
from cmgan_lib.models import Discriminator, TSCNet
from cmgan_lib.training import runguard
from cmgan_lib.training.commit import commit_epoch, missing_rows_note, reconcile
from cmgan_lib.training.config import RESUMABLE_KEYS, TrainConfig, load_config, resolve_data_dir, resume_config
from cmgan_lib.training.ddp import Ranks
from cmgan_lib.training.grad_share import NOT_MEASURED, adversarial_grads, share_stats
from cmgan_lib.training.losses import discriminator_loss, forward_generator_step, generator_losses
from cmgan_lib.training.numerics import autocast_call, configure, loader_generator, seed_worker
from cmgan_lib.training.pesq_labels import (
    FailureInjector,
    PesqLabels,
    PesqPool,
    PesqWorkerDied,
    TrainingLabels,
    cause_counts,
)
from cmgan_lib.training.resume_check import check_resume
from cmgan_lib.training.runs import (
    FAIL_COLUMNS,
    LOGS,
    CsvLog,
    RunExistsError,
    checkpoint_state,
    interrupted_note,
    read_checkpoint,
    record_resume_changes,
    refuse_existing_run,
    remove_stale_temporaries,
    repair_logs,
    restore_checkpoint,
    start_run_folder,
)
from cmgan_lib.training.tensorboard_log import EventLog
from cmgan_lib.training.validation import ValidationFiles, validate

Buffers = list[tuple[torch.Tensor, torch.Tensor]]


class Trainer:
    """CMGAN's training loop on one rank: `train_step` per batch, `fit` over epochs."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, overwrite: bool = False,
                 checkpoint: dict[str, Any] | None = None):  # fmt: skip
        """`checkpoint`: with `resume`, the run's last.pt as `main` already read it (read_checkpoint), so that a
        resume reads the file once (0.2-0.9 s a read on a CPU)."""
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        if not resume and not overwrite:
            refuse_existing_run(self.run_dir)  # before anything starts: nothing is lost without asking
        configure(cfg.precision, cfg.deterministic)  # before any CUDA work (cuBLAS reads its workspace once)
        self.ranks = Ranks.start(cfg.device)
        self.rank, self.world, self.is_main, self.device = (
            self.ranks.rank, self.ranks.world, self.ranks.is_main, self.ranks.device)  # fmt: skip
        # Data: refuse bad data before anything starts (no run folder, no checkpoint).
        self.train_set, self.sampler, self.loader, self.val_pairs = training_data(cfg, self.ranks)
        self.val_files = ValidationFiles(self.val_pairs, cfg.resample)

        # Models and optimizers, identical on every rank (same seed; DDP also broadcasts from rank 0).
        torch.manual_seed(cfg.seed)
        self.gen = TSCNet(cfg.num_channel, cfg.n_fft // 2 + 1, cfg.num_tscb).to(self.device)
        self.disc = Discriminator(ndf=cfg.ndf).to(self.device)
        self.gen_params = list(self.gen.parameters())
        # What the training step calls: under torchrun `gen` wrapped in DDP (which averages its gradients in
        # backward), else `gen` itself. Checkpoints, validation and checksums use the bare `gen`.
        self.gen_ddp = DDP(self.gen, device_ids=[self.device.index] if self.device.type == "cuda" else None) \
            if self.world > 1 else self.gen  # fmt: skip
        # cfg.precision: bf16 autocast inside these two calls only; they return fp32 (losses and PESQ stay fp32)
        self.disc_fwd = autocast_call(self.disc, cfg.precision, self.device)
        self.opt_g = torch.optim.AdamW(self.gen.parameters(), lr=cfg.lr_g)
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=cfg.lr_d)
        self.sched_g = torch.optim.lr_scheduler.StepLR(self.opt_g, step_size=cfg.decay_epoch, gamma=cfg.lr_gamma)
        self.sched_d = torch.optim.lr_scheduler.StepLR(self.opt_d, step_size=cfg.decay_epoch, gamma=cfg.lr_gamma)
        self.stopper = EarlyStopping(
            cfg.es_patience, cfg.es_min_delta, "max" if cfg.es_monitor == "val_pesq" else "min"
        )

        self.start_epoch, self.global_step = 0, 0
        self.nonfinite = NonFiniteSteps(cfg.max_nonfinite_in_a_row, announce=self.is_main)
        self.indices: list[int] = []  # the samples this rank sees in its first epoch (ddp_ranks.json)
        if self.is_main:
            for path in remove_stale_temporaries(self.run_dir):
                tqdm.write(f"removed {path} (left by a checkpoint write that was killed)")
        if resume:
            self._load_checkpoint(self.run_dir / "last.pt", checkpoint)
        elif self.is_main:
            start_run_folder(self.run_dir, cfg)
        # last: a refused resume above must not leave worker processes behind (fit() closes the pool)
        self.pool = PesqPool(n_workers=cfg.pesq_workers or max(1, len(os.sched_getaffinity(0)) // self.world))
        injector = FailureInjector(cfg.pesq_fail_inject, cfg.seed, self.rank)
        self.labels = TrainingLabels(self.pool, injector, cfg.pesq_strategy, self.device, cfg.overlap_pesq)

    # ------------------------------------------------------------------ one step
    def train_step(self, clean: torch.Tensor, noisy: torch.Tensor, names: list[str] | None = None) -> dict[str, Any]:
        """One CMGAN step: the generator on the RMS-normalized batch, then the metric discriminator on PESQ
        labels of the generator's detached estimate."""
        cfg = self.cfg
        clean, noisy, c, bad = prepare_batch(clean, noisy, self.ranks)
        if bad is not None:  # an all-zero noisy file makes c infinite: never run forward
            self.nonfinite.count(finite=False)
            return skipped_row(names, bad)
        buffers = self._buffers()  # BatchNorm statistics and spectral-norm vectors change in the forward pass
        out = self.forward_losses(clean, noisy)
        pending = self._start_labels(clean, out["est_audio"], c)  # PESQ runs in the pool during G's update
        measure = cfg.grad_share_every > 0 and self.global_step % cfg.grad_share_every == 0
        g_adv = adversarial_grads(cfg.loss_weights[3] * out["loss_gan"], self.gen_params) if measure else None
        finite, grad_norm_g, share = self._update(self.opt_g, self.gen_params, out["loss"], buffers, g_adv)
        self.nonfinite.count(finite)
        labels = pending()
        disc_loss = None
        if finite and cfg.train_disc:
            disc_loss = discriminator_loss(self.disc_fwd, out["clean_mag"], out["est_mag"].detach(), labels)
        _, grad_norm_d, _ = self._update(self.opt_d, self.disc.parameters(), disc_loss)
        return dict(
            loss=out["loss"].item(), loss_ri=out["loss_ri"].item(), loss_mag=out["loss_mag"].item(),
            loss_time=out["loss_time"].item(), loss_gan=out["loss_gan"].item(),
            disc_loss=disc_loss.item() if disc_loss is not None else math.nan,  # never a made-up 0.0
            disc_skipped=int(disc_loss is None), pesq_valid_frac=labels.valid_frac, pesq_mean=labels.mean_valid_raw,
            grad_norm_g=grad_norm_g, grad_norm_d=grad_norm_d, nonfinite=int(not finite),
            **cause_counts(labels.reasons), **share,
        )  # fmt: skip

    def forward_losses(self, clean: torch.Tensor, noisy: torch.Tensor, generator=None) -> dict[str, torch.Tensor]:
        """The generator's estimate of RMS-normalized audio and its losses (losses.py).

        `generator` defaults to the (possibly DDP-wrapped) training module; validation, which runs on rank 0
        alone, passes the bare module so that no collective (DDP's buffer broadcast) is started on one rank.
        """
        cfg = self.cfg
        generator = autocast_call(self.gen_ddp if generator is None else generator, cfg.precision, self.device)
        g = forward_generator_step(generator, clean, noisy, cfg.n_fft, cfg.hop, cfg.compress)
        return generator_losses(self.disc_fwd, g, cfg.loss_weights)

    def _start_labels(self, clean: Tensor, est_audio: Tensor, c: Tensor) -> Callable[[], PesqLabels]:
        """Start PESQ of the detached estimate (divided by c when cfg.eval_denormalize); returns the labels' getter."""
        est, ref = est_audio.detach(), clean
        if self.cfg.eval_denormalize:
            est, ref = est / c, ref / c
        return self.labels.start(ref.cpu().numpy(), est.cpu().numpy(), step=self.global_step)

    def _update(
        self,
        opt: torch.optim.Optimizer,
        params: Iterable[torch.nn.Parameter],
        loss: torch.Tensor | None,
        buffers: Buffers | None = None,
        g_adv: list[torch.Tensor] | None = None,
    ) -> tuple[bool, float, dict[str, float]]:
        """One network's update, taken by the ranks together: backward, pre-clip norm, clip, step. Generator
        (`buffers` given; DDP averages its gradients in backward): every rank steps or none, so unless the loss is
        finite on every rank the forward pass's buffers are put back and nothing changes. Discriminator: the
        gradients are averaged over the ranks that have a loss (None: labels skipped). Returns (stepped, pre-clip
        norm, the adversarial term's share of the gradient when `g_adv` is given, grad_share.py)."""
        params = list(params)
        opt.zero_grad(set_to_none=True)
        if buffers is not None and not self.ranks.all_true(bool(torch.isfinite(loss).item())):
            self._restore_buffers(buffers)
            return False, math.nan, NOT_MEASURED
        if loss is not None:
            loss.backward()
        if buffers is None and not self.ranks.average_grads(params, loss is not None):
            return False, math.nan, NOT_MEASURED
        share = NOT_MEASURED if g_adv is None else share_stats(self.ranks.mean(g_adv), [_grad(p) for p in params])
        norm = pre_clip_norm(params, self.cfg.grad_clip_norm, self.cfg.log_steps)
        opt.step()
        return True, norm, share

    def _buffers(self) -> Buffers:
        return [(b, b.detach().clone()) for m in (self.gen, self.disc) for b in m.buffers()]

    @staticmethod
    def _restore_buffers(saved: Buffers) -> None:
        """Put back the buffers a non-finite forward pass wrote (NaN running statistics would stay forever)."""
        with torch.no_grad():
            for buf, copy in saved:
                buf.copy_(copy)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> Path:
        self.logs: dict[str, CsvLog] = {}
        if self.is_main:
            self.logs = {name: CsvLog(self.run_dir / name, columns) for name, columns in LOGS.items()
                         if self.cfg.log_steps or name != "training_step_log.csv"}  # fmt: skip
        # TensorBoard (tb extra): the same rows as the CSVs; None without tensorboardX
        self.events = EventLog.open(self.run_dir) if self.is_main else None
        try:
            for epoch in range(self.start_epoch, self.cfg.epochs):
                t0 = time.perf_counter()
                rows = self._train_epoch(epoch)
                if self._end_epoch(epoch, rows, t0):
                    break
        finally:
            for log in self.logs.values():
                log.close()
            if self.events is not None:
                self.events.close()
            self.pool.close()
        return self.run_dir

    def _log(self, name: str, row: dict[str, Any]) -> None:
        if name in self.logs:
            self.logs[name].write(row)
            if self.events is not None:
                self.events.write(name, row)

    def _train_epoch(self, epoch: int) -> list[dict[str, Any]]:
        """One pass over the training data (at most cfg.max_steps_per_epoch steps); returns the step rows."""
        cfg, bs = self.cfg, self.cfg.batch_size
        self.sampler.set_epoch(epoch if cfg.reshuffle_each_epoch else 0)  # published: never set_epoch
        self.train_set.set_epoch(epoch)
        if cfg.deterministic:
            self.loader.generator = loader_generator(cfg.seed, epoch)
        self.gen.train()
        self.disc.train()
        lr_g, lr_d = self.opt_g.param_groups[0]["lr"], self.opt_d.param_groups[0]["lr"]
        n_steps = min(len(self.loader), cfg.max_steps_per_epoch or len(self.loader))
        order = list(iter(self.sampler))  # batch k holds order[k * batch_size:(k + 1) * batch_size]
        if epoch == self.start_epoch:
            self.indices = order
        rows: list[dict[str, Any]] = []
        # disable=None: no bar when stderr is not a terminal (`cmgan ablate` writes RUN/train.log), so the log
        # holds whole lines (the per-epoch summary), not carriage-return progress output
        with tqdm(total=n_steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=None if self.is_main else True,
                  leave=False) as bar:  # fmt: skip
            for step, (clean, noisy, _) in enumerate(self.loader):
                if step >= n_steps:
                    break
                runguard.check_stop(f"before step {self.global_step + 1} (epoch {epoch + 1}/{cfg.epochs})",
                                    self.ranks.all_true)  # fmt: skip
                ts = time.perf_counter()
                row = self.train_step(
                    clean, noisy, [self.train_set.name(i) for i in order[step * bs : (step + 1) * bs]]
                )
                self.global_step += 1
                row.update(epoch=epoch, step=self.global_step, lr_g=lr_g, lr_d=lr_d, seconds=time.perf_counter() - ts)
                for bad in self.nonfinite.bad_batch_rows(epoch, self.global_step, row.pop("bad_files", None)):
                    self._log("nonfinite_batches.csv", bad)
                rows.append(row)
                self._log("training_step_log.csv", row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", d_skip=f"{np.mean([r['disc_skipped'] for r in rows]):.0%}")
                bar.update()
                self.nonfinite.check(epoch, self.global_step, self.run_dir)
        return rows

    def _end_epoch(self, epoch: int, rows: list[dict[str, Any]], t0: float) -> bool:
        """Validation, learning-rate decay, the epoch row, checkpoints and early stopping; True: stop.

        One commit (commit.py): everything the epoch produces is written before last.pt, renamed into place
        last; a kill or a full disk before that rename leaves an epoch that `--resume` redoes."""
        cfg = self.cfg
        val = self.validate() if self.is_main else {}
        for name, reason in val.pop("val_dropped", []):
            self._log("validation_dropped.csv", dict(epoch=epoch, name=name, reason=reason))
        lr_g, lr_d = self.opt_g.param_groups[0]["lr"], self.opt_d.param_groups[0]["lr"]  # before the decay
        self.sched_g.step()
        self.sched_d.step()
        stop = improved = False
        if self.is_main:
            improved = self.stopper.update(val[cfg.es_monitor], epoch)
            row = epoch_row(epoch, rows, val, lr_g, lr_d, time.perf_counter() - t0)
            row.update(best=int(improved), patience_counter=self.stopper.counter,
                       early_stop=int(self.stopper.should_stop))  # fmt: skip
            self._log("training_epoch_log.csv", row)
            stop = bool(cfg.early_stopping and self.stopper.should_stop)
        self.ranks.record(self.run_dir, epoch, {"gen": self.gen, "disc": self.disc}, self.indices)
        if self.is_main:
            state = checkpoint_state(self._parts(), epoch, self.global_step, cfg.to_dict(), self.nonfinite.in_a_row)
            commit_epoch(state, self.run_dir, epoch, improved, cfg.checkpoint_every, self.logs.values())
            tqdm.write(
                f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f} val_pesq {val['val_pesq']:.3f} "
                f"val_stoi {val['val_stoi']:.3f} disc_skip {row['disc_skip_rate']:.1%}"
                + (" (best)" if improved else "")
                + (" -> early stop" if stop else "")
            )
        return self.ranks.broadcast({"stop": stop})["stop"]

    def validate(self) -> dict[str, Any]:
        """Loss, PESQ and STOI on the full validation files (validation.py), the bare generator in eval mode."""
        self.gen.eval()
        self.disc.eval()
        try:
            return validate(lambda clean, noisy: self.forward_losses(clean, noisy, generator=self.gen),
                            self.val_files, self.pool, self.device)  # fmt: skip
        finally:
            self.gen.train()
            self.disc.train()

    # ------------------------------------------------------------------ checkpoints
    def _parts(self) -> dict[str, Any]:
        """What a checkpoint holds the state of, under its key."""
        return {"generator": self.gen, "discriminator": self.disc, "opt_g": self.opt_g, "opt_d": self.opt_d,
                "sched_g": self.sched_g, "sched_d": self.sched_d, "early_stopping": self.stopper}  # fmt: skip

    def _load_checkpoint(self, path: Path, ck: dict[str, Any] | None = None) -> None:
        ck = ck if ck is not None else read_checkpoint(path, self.device)  # (restoring copies onto the device)
        restore_checkpoint(self._parts(), ck)
        self.start_epoch, self.global_step = ck["epoch"] + 1, ck["step"]
        self.nonfinite.in_a_row = int(ck.get("nonfinite_in_a_row", 0))
        if self.is_main:  # undo what an uncommitted epoch wrote (commit.py); it is redone
            for note in reconcile(self.run_dir, ck):
                tqdm.write(note)
            repair_logs(self.run_dir, ck["epoch"])
            missing = missing_rows_note(self.run_dir, ck["epoch"])
            if missing:
                tqdm.write(missing)


def training_data(cfg: TrainConfig, ranks: Ranks) -> tuple[Any, DistributedSampler, DataLoader, list]:
    """The training set, this rank's sampler, the loader (drop_last, as published) and the validation pairs;
    refuses data that fails validation (data/validate.py) before anything starts."""
    from cmgan_lib.data.dataset import CMGANDataset, training_pairs
    from cmgan_lib.data.validate import validate_dataset

    data_dir = resolve_data_dir(cfg, ranks.is_main)
    ranks.barrier()
    validate_dataset(data_dir, resample=cfg.resample)
    held_out = cfg.val_speakers if cfg.val_split == "valid" else []
    train_set = CMGANDataset(data_dir, "train", cut_len=cfg.cut_len, seed=cfg.seed, resample=cfg.resample,
                             val_speakers=held_out, repeat=cfg.train_repeat, fixed_crops=cfg.fixed_crops)  # fmt: skip
    sampler = DistributedSampler(train_set, num_replicas=ranks.world, rank=ranks.rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                        num_workers=cfg.num_workers, pin_memory=ranks.device.type == "cuda",
                        worker_init_fn=seed_worker,
                        generator=loader_generator(cfg.seed, 0) if cfg.deterministic else None)  # fmt: skip
    if len(loader) == 0:  # drop_last with batch_size > clips per rank: every epoch would be empty
        raise ValueError(f"batch_size={cfg.batch_size} is larger than the {len(sampler)} training clips "
                         f"of {data_dir} per process; no step would run (drop_last); use batch_size <= "
                         f"{len(sampler)}")  # fmt: skip
    # Model selection and early stopping look at val_split only; "test" is the published behaviour.
    return train_set, sampler, loader, training_pairs(data_dir, cfg.val_split, held_out)[: cfg.val_max_files]


def pre_clip_norm(params: list[torch.nn.Parameter], clip: float, log_steps: bool) -> float:
    """Pre-clip global L2 gradient norm; clips to `clip` when it is > 0."""
    params = [p for p in params if p.grad is not None]
    if not params or (clip <= 0 and not log_steps):
        return math.nan  # nothing to clip and nothing to log
    return float(torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf")))


# ---------------------------------------------------------------------- non-finite inputs and losses
class NonFiniteSteps:
    """Steps with a non-finite input or loss in a row (the run stops at `limit`), and the files of batches
    refused for non-finite input (RUN/nonfinite_batches.csv and a warning line)."""

    def __init__(self, limit: int, announce: bool = True):
        self.limit, self.announce, self.in_a_row = limit, announce, 0

    def count(self, finite: bool) -> None:
        self.in_a_row = 0 if finite else self.in_a_row + 1

    def check(self, epoch: int, step: int, run_dir: Path) -> None:
        if self.in_a_row >= self.limit:
            raise TrainingDiverged(
                f"{self.in_a_row} non-finite losses in a row (epoch {epoch}, step {step}); "
                f"stopping. The last good checkpoint is {run_dir / 'last.pt'} (untouched)."
            )

    def bad_batch_rows(self, epoch: int, step: int, bad_files: list[str] | None) -> list[dict[str, Any]]:
        """The nonfinite_batches.csv rows of a refused batch, announced on the console (rank 0 only)."""
        if not bad_files or not self.announce:
            return []
        reason = "non-finite RMS normalizer or samples (an all-zero noisy file?); batch skipped, model unchanged"
        tqdm.write(f"warning: step {step} skipped: {reason}: {', '.join(bad_files)}")
        return [dict(epoch=epoch, step=step, name=name, reason=reason) for name in bad_files]


def prepare_batch(
    clean: torch.Tensor, noisy: torch.Tensor, ranks: Ranks
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """The batch on the device, both signals scaled by the noisy one's RMS normalizer c (as published), and
    `bad`: the samples that are not finite, or None when the batch is fine on every rank."""
    clean, noisy = clean.to(ranks.device), noisy.to(ranks.device)
    c = rms_normalizer(noisy)[:, None]
    bad = ~(torch.isfinite(c[:, 0]) & torch.isfinite(clean).all(-1) & torch.isfinite(noisy).all(-1))
    if not ranks.all_true(not bad.any()):
        return clean, noisy, c, bad
    return clean * c, noisy * c, c, None


def skipped_row(names: list[str] | None, bad: torch.Tensor) -> dict[str, Any]:
    """The step row of a batch refused before the forward pass, naming its bad files (`bad_files`)."""
    names = names or [f"<sample {i} of the batch>" for i in range(len(bad))]
    bad_names = [n for n, b in zip(names, bad.tolist(), strict=True) if b]
    nan = math.nan
    return dict(loss=nan, loss_ri=nan, loss_mag=nan, loss_time=nan, loss_gan=nan, disc_loss=nan,
                disc_skipped=1, pesq_valid_frac=nan, pesq_mean=nan, grad_norm_g=nan, grad_norm_d=nan,
                nonfinite=1, **{col: 0 for col in FAIL_COLUMNS}, **NOT_MEASURED,
                bad_files=bad_names or ["<a batch on another rank>"])  # fmt: skip


def _grad(p: torch.nn.Parameter) -> torch.Tensor:
    return p.grad if p.grad is not None else torch.zeros_like(p)


def epoch_row(epoch: int, rows: list[dict[str, Any]], val: dict[str, Any], lr_g: float, lr_d: float,
              seconds: float) -> dict[str, Any]:  # fmt: skip
    """The epoch log's row: step means (NaN-aware), failure and non-finite counts, validation, learning rates."""

    def mean(key: str) -> float:
        vals = np.array([r[key] for r in rows], dtype=float)
        return float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan

    keys = ["loss", "loss_ri", "loss_mag", "loss_time", "loss_gan", "disc_loss", "grad_norm_g", "grad_norm_d"]
    row = {k: mean(k) for k in keys}
    row.update(val)
    row.update(
        epoch=epoch,
        disc_skip_rate=mean("disc_skipped"),
        pesq_valid_frac=mean("pesq_valid_frac"),
        nonfinite_steps=int(sum(r["nonfinite"] for r in rows)),
        **{col: int(sum(r[col] for r in rows)) for col in FAIL_COLUMNS},
        lr_g=lr_g,
        lr_d=lr_d,
        seconds=seconds,
    )
    return row


class EarlyStopping:
    """Patience counter on a monitored value; tracked even when early stopping is off, so the logs say
    when it would have fired."""

    def __init__(self, patience: int, min_delta: float, mode: str):
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.best = math.nan
        self.best_epoch = -1
        self.counter = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record this epoch's value; True if it is a new best."""
        better = (
            math.isnan(self.best)
            or (self.mode == "max" and value > self.best + self.min_delta)
            or (self.mode == "min" and value < self.best - self.min_delta)
        )
        if not math.isnan(value) and better:
            self.best, self.best_epoch, self.counter = value, epoch, 0
            return True
        self.counter += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.counter >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "counter": self.counter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.counter = state["best"], state["best_epoch"], state["counter"]


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses in a row."""


def finish_note(run_dir: Path, note: str, ck: dict[str, Any]) -> None:
    """`--resume` of a finished run (`ck`: its last.pt): only what a stopped commit left is put right
    (commit.py), then one line."""
    for line in [*reconcile(run_dir, ck), missing_rows_note(run_dir, ck["epoch"])]:
        if line:
            print(line)
    print(note)


def main(argv: list[str] | None = None) -> int:
    """`cmgan train --config FILE [key=value ...]` or `cmgan train --resume RUN_DIR [key=value ...]`."""
    from cmgan_lib.data.validate import DataValidationError

    p = argparse.ArgumentParser(prog="cmgan train", description=main.__doc__)
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("--resume", help="run folder to continue (reads its config.yaml and last.pt)")
    p.add_argument("--overwrite", action="store_true", help="with --config: start afresh in a run folder that "
                   "holds a run (deletes its checkpoints and logs)")  # fmt: skip
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=2 pesq_strategy=masked; with "
                   f"--resume only these may change: {', '.join(sorted(RESUMABLE_KEYS))}")  # fmt: skip
    a = p.parse_args(argv)
    if bool(a.config) == bool(a.resume):
        p.error("give exactly one of --config FILE or --resume RUN_DIR")
    if a.resume and a.overwrite:
        p.error("--overwrite starts afresh; it cannot go with --resume")
    runguard.die_with_parent()  # started by `cmgan ablate`/`study`: never outlive it
    try:
        changes: list[tuple[str, Any, Any]] = []
        if a.resume:
            cfg, changes = resume_config(a.resume, a.overrides)
        else:
            cfg = load_config(a.config, a.overrides)
        main_rank = int(os.environ.get("RANK", 0)) == 0
        with runguard.run_lock(cfg.run_dir) if main_rank else contextlib.nullcontext(), runguard.stop_handlers():
            last = None  # last.pt, read once for the check, the note and the restore (mapped, not read in)
            if a.resume:
                last = read_checkpoint(Path(cfg.run_dir) / "last.pt", torch.device("cpu"), mmap=True)
                changes, finished = check_resume(Path(cfg.run_dir), cfg, changes, last)
                if finished:
                    if main_rank:
                        finish_note(Path(cfg.run_dir), finished, last)
                    return 0
            trainer = Trainer(cfg, resume=bool(a.resume), overwrite=a.overwrite, checkpoint=last)
            del last  # not held (mapped) while training
            if trainer.is_main:
                record_resume_changes(trainer.run_dir, changes, cfg, trainer.start_epoch - 1)
            trainer.fit()
            # Every rank's collectives done before the process group goes: its Gloo destructor holds the GIL while it
            # joins its worker thread, and that thread, still dropping the last collective's tensor, may need the GIL:
            # a rank hung there at exit on 2026-12-07 (pytorch/pytorch#56297). Not on an error path: a failed rank
            # never reaches a barrier.
            trainer.ranks.barrier()
    except (DataValidationError, FileNotFoundError, RunExistsError, ValueError, runguard.RunLockedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (runguard.DiskFullError, PesqWorkerDied) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except runguard.TrainingInterrupted as exc:
        print(f"{exc}: {interrupted_note(Path(cfg.run_dir))}", file=sys.stderr)
        return exc.exit_code
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
