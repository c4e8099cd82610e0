"""HiFi-GAN training objects (docs/DESIGN.md §6): the generator and the discriminators with their
optimizers, schedules and grad scalers, and the losses and optimizer steps of one training step.

The modules themselves are ``muomni.models.hifigan`` and ``muomni.models.discriminators``; this file
holds what training adds around them, so that ``train_vocoder.py`` reads config -> data -> model -> loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from muomni.config import TrainConfig
from muomni.models.discriminators import Discriminators, set_requires_grad
from muomni.models.hifigan import (
    HiFiGANConfig,
    discriminator_losses,
    feature_matching_loss,
    generator_adversarial_loss,
    mel_loss,
    weighted_total,
)
from muomni.models.universal import build_generator, refiner_loss, stft_loss
from muomni.training.device import autocast, maybe_compile
from muomni.training.run import Run
from muomni.training.schedule import BatchOrder


@dataclass
class GAN:
    """The generator and the discriminators, each with its AdamW, exponential decay and grad scaler.

    Training goes through the DDP (and, with train.compile, compiled) wrappers, one per optimizer;
    evaluation, samples and checkpoints use the plain modules.
    """

    generator: nn.Module  # a Generator, or an AdaptedGenerator (models/universal.py) for model.adapter
    discriminators: Discriminators
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LRScheduler
    sched_d: torch.optim.lr_scheduler.LRScheduler
    scaler_g: torch.amp.GradScaler
    scaler_d: torch.amp.GradScaler
    generator_ddp: nn.Module | None = None
    discriminators_ddp: nn.Module | None = None
    discriminators_frozen: nn.Module | None = None  # scores the fake for the generator's losses
    adapter_ddp: nn.Module | None = None  # train.trainable = "adapter": the wrapped adapter, trained alone

    def checkpoint_objects(self, order: BatchOrder) -> dict:
        """What every checkpoint holds, under the names resume reads back."""
        return {"generator": self.generator, "discriminators": self.discriminators, "opt_g": self.opt_g,
                "opt_d": self.opt_d, "sched_g": self.sched_g, "sched_d": self.sched_d, "scaler_g": self.scaler_g,
                "scaler_d": self.scaler_d, "order": order}

    def wrap(self, data_parallel: Callable[[nn.Module], nn.Module], compile: bool, adapter_loss: str = "") -> None:
        """The training wrappers: ``data_parallel`` (``Run.wrap``: DDP when the run has several processes),
        then torch.compile when asked. With ``adapter_loss`` only the mel adapter trains (the generator is
        frozen): "mel" wraps the adapter alone, "audio" the whole generator (its loss is on the audio)."""
        if adapter_loss:
            for p in self.generator.generator.parameters():
                p.requires_grad_(False)
            self.adapter_ddp = data_parallel(self.generator if adapter_loss == "audio" else self.generator.adapter)
            return
        self.generator_ddp = maybe_compile(data_parallel(self.generator), compile)
        self.discriminators_ddp = maybe_compile(data_parallel(self.discriminators), compile)
        self.discriminators_frozen = maybe_compile(self.discriminators, compile)


def build_optimizers(module: nn.Module, train: TrainConfig, lr_decay: float, lr_decay_steps: int):
    """AdamW from train.lr, betas and weight_decay; the rate is multiplied by ``lr_decay`` every
    ``lr_decay_steps`` steps, smoothly (an exponential decay per step)."""
    opt = torch.optim.AdamW(module.parameters(), lr=train.lr, betas=tuple(train.betas),
                            weight_decay=train.weight_decay)
    gamma = lr_decay ** (1.0 / lr_decay_steps)
    return opt, torch.optim.lr_scheduler.ExponentialLR(opt, gamma)


def build_gan(model: HiFiGANConfig, train: TrainConfig, lr_decay: float, lr_decay_steps: int, device: torch.device,
              scalers: tuple[torch.amp.GradScaler, torch.amp.GradScaler]) -> GAN:
    """The generator and the discriminators on ``device`` with their optimizers and schedules; ``scalers``
    are the generator's and the discriminators' grad scalers (the stage script makes them, AMP being its choice)."""
    generator = build_generator(model).to(device)
    discriminators = Discriminators(model).to(device)
    opt_g, sched_g = build_optimizers(generator, train, lr_decay, lr_decay_steps)
    opt_d, sched_d = build_optimizers(discriminators, train, lr_decay, lr_decay_steps)
    return GAN(generator, discriminators, opt_g, opt_d, sched_g, sched_d, *scalers)


def micro_batch(gan: GAN, wav: Tensor, mel: Tensor, mel_fn: nn.Module, train: TrainConfig,
                weights: dict[str, float], device: torch.device,
                adversarial: bool) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
    """Forward and backward of one micro-batch, wav (B, S) and mel (B, S / 256, 128), each loss scaled by
    1 / train.grad_accum: the discriminators' (when adversarial) and the generator's. Returns the
    generator's and the discriminators' named losses and the generator's weighted total."""
    with autocast(device, train.amp):
        fake = gan.generator_ddp(mel)  # (B, S)
    losses_g = {"mel": mel_loss(mel_fn(wav), mel_fn(fake.float()))}  # log-magnitude scale (hifigan.mel_loss)
    losses_d: dict[str, Tensor] = {}
    if adversarial:
        with autocast(device, train.amp):
            real_scores, real_features = gan.discriminators_ddp(wav)
            fake_scores, _ = gan.discriminators_ddp(fake.detach())
        losses_d = discriminator_losses(real_scores, fake_scores)
        gan.scaler_d.scale(weighted_total(losses_d, weights) / train.grad_accum).backward()
        # Frozen discriminators score the fake for the generator: the plain module, since no
        # discriminator gradient (and so no DDP all-reduce) comes out of this pass.
        set_requires_grad(gan.discriminators, False)
        with autocast(device, train.amp):
            fake_scores, fake_features = gan.discriminators_frozen(fake)
        set_requires_grad(gan.discriminators, True)
        losses_g["adv"] = generator_adversarial_loss(fake_scores)
        losses_g["fm"] = feature_matching_loss(real_features, fake_features)
    loss_g = weighted_total(losses_g, weights)
    gan.scaler_g.scale(loss_g / train.grad_accum).backward()
    return losses_g, losses_d, loss_g


def adapter_micro_batch(gan: GAN, wav: Tensor, mel: Tensor, target_fn: nn.Module, train) -> tuple[
        dict[str, Tensor], dict[str, Tensor], Tensor]:
    """train.trainable = "adapter": forward and backward of the adapter's refiner on one micro-batch, scaled by
    1 / train.grad_accum. ``train.adapter_loss`` "mel": L1 against the real audio's 22.05 kHz mel (refiner_loss;
    the generator is not run); "audio": the frozen generator's output against the real audio, log-magnitude L1
    at three STFT sizes (stft_loss). Returns the named loss, no discriminator losses, and the loss."""
    if train.adapter_loss == "audio":
        loss = stft_loss(gan.adapter_ddp(mel), wav)
    else:
        loss = refiner_loss(gan.adapter_ddp, target_fn, wav, mel)
    (loss / train.grad_accum).backward()
    return {"adapter": loss}, {}, loss


def optimizer_steps(run: Run, gan: GAN, step: int, train: TrainConfig, weights: dict[str, float], loss_g: Tensor,
                    losses_d: dict[str, Tensor], adversarial: bool) -> dict[str, Tensor]:
    """The generator's step and, when adversarial, the discriminators' (each skipped on a non-finite
    loss or gradient), then their schedules; returns the gradient norms."""
    norms = {"grad_norm_g": run.optimizer_step(step + 1, gan.opt_g, gan.generator.parameters(), gan.scaler_g,
                                               train.grad_clip, loss_g, name="generator").grad_norm}
    if adversarial:
        loss_d = weighted_total(losses_d, weights)
        norms["grad_norm_d"] = run.optimizer_step(step + 1, gan.opt_d, gan.discriminators.parameters(), gan.scaler_d,
                                                  train.grad_clip, loss_d, name="discriminators").grad_norm
    gan.sched_g.step()
    if adversarial:  # the discriminators' schedule starts when they do
        gan.sched_d.step()
    return norms
