"""Train the HiFi-GAN vocoder (docs/DESIGN.md §6): log-mel -> 16 kHz wav.

    python train_vocoder.py --config configs/vocoder_tiny.json [--resume] [--set train.steps=2000]
    python train_vocoder.py --config configs/vocoder_tiny.json --finetune-codec checkpoints/codec_tiny/best.pt \
        --init-from checkpoints/vocoder_tiny/best.pt --set train.run_name=vocoder_ft

Random frame-aligned segments of ``segment_size`` samples (shorter files zero-padded), generator
and discriminators with their own AdamW, exponential decay and grad scaler (Kong et al. 2020).
The first ``gan_start_step`` steps train the generator on the mel L1 alone, which converges far
faster on a CPU; then the adversarial and feature-matching losses join, weighted from
``train.loss_weights``. With --finetune-codec the generator hears codec-reconstructed mels
and is scored against the real audio, so it learns the codec's artefacts.

Under ``torchrun --nproc_per_node N`` the generator and the discriminators are each wrapped in
DistributedDataParallel (one per optimizer); ``train.batch_size`` is the global batch, and rank 0
alone evaluates, writes samples and checkpoints.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import muomni  # noqa: F401  (before torch: it sets the OpenMP wait policy torch reads when it loads)

# isort: split
import torch
from torch import Tensor, nn

from muomni.audio import HOP_LENGTH, MelSpectrogram
from muomni.config import ConfigError, DataConfig, TrainConfig
from muomni.data import corpus_fingerprint, load_corpus
from muomni.data.vocoder import AudioCache, Prefetch, random_segments
from muomni.distributed import mean_over_ranks
from muomni.metrics import heldout_mel_l1
from muomni.models.codec import codec_hash, load_codec
from muomni.models.discriminators import Discriminators, set_requires_grad
from muomni.models.griffinlim import mel_to_wav
from muomni.models.hifigan import (
    Generator,
    HiFiGANConfig,
    discriminator_losses,
    feature_matching_loss,
    generator_adversarial_loss,
    mel_l1,
    weighted_total,
)
from muomni.samples import vocoder_samples
from muomni.training import (
    BatchOrder,
    Run,
    add_run_args,
    autocast,
    load_run_config,
    make_grad_scaler,
    maybe_compile,
)


@dataclass
class VocoderTrainConfig(TrainConfig):
    batch_size: int = 2
    grad_accum: int = 4
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    weight_decay: float = 0.01  # AdamW's default, as the reference implementation
    grad_clip: float = 1000.0  # only a guard against spikes: HiFi-GAN trains unclipped
    segment_size: int = 8192  # samples per training segment; a multiple of the hop
    lr_decay: float = 0.999  # both learning rates are multiplied by this every lr_decay_steps (smoothly)
    lr_decay_steps: int = 1000
    gan_start_step: int = 0  # steps of mel-L1-only warm-up before the discriminators join
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"mel": 45.0, "adv": 1.0, "fm": 2.0, "d_real": 1.0, "d_fake": 1.0})
    eval_items: int = 16  # held-out utterances (whole) scored every eval_every steps
    sample_items: int = 2
    cache_items: int = 2048  # utterances kept decoded in memory (least recently used leave first)
    finetune_codec: str = ""  # codec checkpoint: train on its reconstructed mels (--finetune-codec)

    def __post_init__(self):
        super().__post_init__()
        if self.segment_size % HOP_LENGTH or self.segment_size < HOP_LENGTH:
            raise ConfigError(f"train.segment_size ({self.segment_size}) must be a positive multiple of {HOP_LENGTH}")
        for key in ("mel", "adv", "fm", "d_real", "d_fake"):
            if key not in self.loss_weights:
                raise ConfigError(f"train.loss_weights lacks '{key}' (needs mel, adv, fm, d_real, d_fake)")


@dataclass
class VocoderRunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: HiFiGANConfig = field(default_factory=HiFiGANConfig)
    train: VocoderTrainConfig = field(default_factory=VocoderTrainConfig)


@dataclass
class GAN:
    """The generator and the discriminators, each with its AdamW, exponential decay and grad scaler.

    Training goes through the DDP (and, with train.compile, compiled) wrappers, one per optimizer;
    evaluation, samples and checkpoints use the plain modules.
    """

    generator: Generator
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

    def checkpoint_objects(self, order: BatchOrder) -> dict:
        """What every checkpoint holds, under the names resume reads back."""
        return {"generator": self.generator, "discriminators": self.discriminators, "opt_g": self.opt_g,
                "opt_d": self.opt_d, "sched_g": self.sched_g, "sched_d": self.sched_d, "scaler_g": self.scaler_g,
                "scaler_d": self.scaler_d, "order": order}

    def wrap(self, run: Run, compile: bool) -> None:
        self.generator_ddp = maybe_compile(run.wrap(self.generator), compile)
        self.discriminators_ddp = maybe_compile(run.wrap(self.discriminators), compile)
        self.discriminators_frozen = maybe_compile(self.discriminators, compile)


def build_optimizers(module: nn.Module, train: VocoderTrainConfig):
    opt = torch.optim.AdamW(module.parameters(), lr=train.lr, betas=tuple(train.betas),
                            weight_decay=train.weight_decay)
    gamma = train.lr_decay ** (1.0 / train.lr_decay_steps)
    return opt, torch.optim.lr_scheduler.ExponentialLR(opt, gamma)


def build_gan(cfg: VocoderRunConfig, device: torch.device) -> GAN:
    generator = Generator(cfg.model).to(device)
    discriminators = Discriminators(cfg.model).to(device)
    opt_g, sched_g = build_optimizers(generator, cfg.train)
    opt_d, sched_d = build_optimizers(discriminators, cfg.train)
    scaler_g, scaler_d = make_grad_scaler(device, cfg.train.amp), make_grad_scaler(device, cfg.train.amp)
    return GAN(generator, discriminators, opt_g, opt_d, sched_g, sched_d, scaler_g, scaler_d)


def micro_batch(gan: GAN, wav: Tensor, mel: Tensor, mel_fn: nn.Module, tc: VocoderTrainConfig,
                device: torch.device, adversarial: bool) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
    """Forward and backward of one micro-batch, wav (B, S) and mel (B, S / 256, 128), each loss scaled by
    1 / grad_accum: the discriminators' (when adversarial) and the generator's. Returns the generator's
    and the discriminators' named losses and the generator's weighted total."""
    weights = tc.loss_weights
    with autocast(device, tc.amp):
        fake = gan.generator_ddp(mel)  # (B, S)
    losses_g = {"mel": mel_l1(mel_fn(wav), mel_fn(fake.float()))}
    losses_d: dict[str, Tensor] = {}
    if adversarial:
        with autocast(device, tc.amp):
            real_scores, real_features = gan.discriminators_ddp(wav)
            fake_scores, _ = gan.discriminators_ddp(fake.detach())
        losses_d = discriminator_losses(real_scores, fake_scores)
        gan.scaler_d.scale(weighted_total(losses_d, weights) / tc.grad_accum).backward()
        # Frozen discriminators score the fake for the generator: the plain module, since no
        # discriminator gradient (and so no DDP all-reduce) comes out of this pass.
        set_requires_grad(gan.discriminators, False)
        with autocast(device, tc.amp):
            fake_scores, fake_features = gan.discriminators_frozen(fake)
        set_requires_grad(gan.discriminators, True)
        losses_g["adv"] = generator_adversarial_loss(fake_scores)
        losses_g["fm"] = feature_matching_loss(real_features, fake_features)
    loss_g = weighted_total(losses_g, weights)
    gan.scaler_g.scale(loss_g / tc.grad_accum).backward()
    return losses_g, losses_d, loss_g


def optimizer_steps(run: Run, gan: GAN, step: int, tc: VocoderTrainConfig, loss_g: Tensor,
                    losses_d: dict[str, Tensor], adversarial: bool) -> dict[str, Tensor]:
    """The generator's step and, when adversarial, the discriminators' (each skipped on a non-finite
    loss or gradient), then their schedules; returns the gradient norms."""
    norms = {"grad_norm_g": run.optimizer_step(step + 1, gan.opt_g, gan.generator.parameters(), gan.scaler_g,
                                               tc.grad_clip, loss_g, name="generator").grad_norm}
    if adversarial:
        loss_d = weighted_total(losses_d, tc.loss_weights)
        norms["grad_norm_d"] = run.optimizer_step(step + 1, gan.opt_d, gan.discriminators.parameters(), gan.scaler_d,
                                                  tc.grad_clip, loss_d, name="discriminators").grad_norm
    gan.sched_g.step()
    if adversarial:  # the discriminators' schedule starts when they do
        gan.sched_d.step()
    return norms


def evaluate(run: Run, step: int, generator: nn.Module, held: AudioCache, tc: VocoderTrainConfig,
             device: torch.device) -> float:
    """Held-out mel L1 of the generator, logged beside Griffin-Lim's on the same items (once per run)."""
    generator.eval()
    score, _ = heldout_mel_l1(generator, held, tc.eval_items, device)
    generator.train()
    stats = run.read_stats()
    if "griffinlim_mel_l1" not in stats:  # the untrained baseline, once per run, on the same items
        stats["griffinlim_mel_l1"], _ = heldout_mel_l1(mel_to_wav, held, tc.eval_items, device)
        run.write_stats(stats)
    run.log(step, {"mel_l1": score, "griffinlim_mel_l1": stats["griffinlim_mel_l1"]}, split="heldout")
    return score


def main(argv: list[str] | None = None) -> int:
    parser = add_run_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--finetune-codec", metavar="CODEC_CKPT",
                        help="train on this codec's reconstructed mels (sets train.finetune_codec)")
    args = parser.parse_args(argv)
    if args.finetune_codec:
        args.set.append(f"train.finetune_codec={args.finetune_codec}")
    cfg: VocoderRunConfig = load_run_config(args, VocoderRunConfig)
    run = Run(cfg, "vocoder", args)
    tc, device = cfg.train, run.device

    # ---- data: audio and its (codec-reconstructed) mel per item, the batch order
    corpus = load_corpus(cfg.data)
    codec, fingerprints = None, {"corpus": corpus_fingerprint(cfg.data.path, cfg.data.format)}
    if tc.finetune_codec:
        codec = load_codec(tc.finetune_codec, device)
        fingerprints["codec"] = codec_hash(codec)
        run.info(f"fine-tuning on mels reconstructed by {tc.finetune_codec}")
    run.record_data(**fingerprints)
    train_data = AudioCache(corpus.train, tc.cache_items, codec)
    held_data = AudioCache(corpus.heldout, tc.cache_items, codec)
    if not corpus.heldout:
        run.warn(f"{cfg.data.path} has no held-out split (data.heldout = {cfg.data.heldout:g}): held-out metrics "
                 "and samples are not computed and best.pt is not written")
    order = BatchOrder(len(train_data), tc.batch_size, tc.seed, run.rank, run.world)

    # ---- models, optimizers, schedulers, scalers
    gan = build_gan(cfg, device)
    objects = gan.checkpoint_objects(order)
    run.load_init({"generator": gan.generator, "discriminators": gan.discriminators})
    step = run.restore(run.resume_payload(), objects)
    gan.wrap(run, tc.compile)
    mel_fn = MelSpectrogram().to(device)
    run.info(f"{len(train_data)} train / {len(held_data)} held-out utterances; generator "
             f"{sum(p.numel() for p in gan.generator.parameters()) / 1e6:.2f} M params on {device}")

    # ---- loop
    last_metric = None
    run.progress(step, tc.steps)
    prefetch = Prefetch(train_data, tc.num_workers)  # train.num_workers threads decode the next step's audio
    while step < tc.steps and not run.stop_requested:
        adversarial = step >= tc.gan_start_step
        totals: dict[str, Tensor] = {}  # micro-batch means, kept on the device until logged
        prefetch.next_steps(order, tc.grad_accum)
        for _ in range(tc.grad_accum):
            wav, mel = random_segments(train_data, order.next(), tc.segment_size)
            losses_g, losses_d, loss_g = micro_batch(gan, wav.to(device), mel.to(device), mel_fn, tc, device,
                                                     adversarial)
            for k, v in {**losses_g, **losses_d, "loss": loss_g}.items():
                totals[k] = totals.get(k, 0.0) + v.detach() / tc.grad_accum
        norms = optimizer_steps(run, gan, step, tc, loss_g, losses_d, adversarial)
        step += 1
        run.step_done()
        if step % tc.log_every == 0:  # every rank: the losses are averaged over them
            norms = {k: float(v) for k, v in norms.items()}
            totals = {k: float(v) for k, v in totals.items()}
            run.log(step, {**mean_over_ranks(totals), **norms, "lr": gan.sched_g.get_last_lr()[0],
                           "gan": float(adversarial)})
        if run.is_main and len(held_data) and (step % tc.eval_every == 0 or step == tc.steps):
            last_metric = evaluate(run, step, gan.generator, held_data, tc, device)
        if run.is_main and len(held_data) and (step % tc.sample_every == 0 or step == tc.steps):
            vocoder_samples(run.sample_dir(step), step, gan.generator, held_data, tc.sample_items, device)
        if step % tc.save_every == 0 or step == tc.steps or run.stop_requested:
            run.save(step, objects, metric=last_metric)
    prefetch.close()
    return run.finish(step)


if __name__ == "__main__":
    sys.exit(main())
