"""The vocoder stage (docs/DESIGN.md §6): HiFi-GAN (Kong et al. 2020), log-mel -> 16 kHz wav.

Batches are random frame-aligned segments of ``train.segment_size`` samples (shorter files zero-padded),
``train.grad_accum`` micro-batches a step, decoded ahead by ``train.num_workers`` threads. The generator and
the discriminators each have their own AdamW, exponential decay and grad scaler. The first
``train.gan_start_step`` steps train the generator on the mel L1 alone, which converges far faster on a CPU;
then the adversarial and feature-matching losses join, weighted from ``train.loss_weights``. With
``train.finetune_codec`` the generator hears codec-reconstructed mels, with ``train.finetune_talker`` the mels
synthesis would make from that Talker (``muomni.data.vocoder``), and is scored against the real audio. With
``train.trainable = "adapter"`` only the mel adapter's correction trains and no discriminator runs.

Under DDP the generator and the discriminators are each wrapped (one wrapper per optimizer);
``train.batch_size`` is the global batch, and rank 0 alone evaluates and writes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from muomni.audio import HOP_LENGTH, MelSpectrogram
from muomni.config import ConfigError, DataConfig, TrainConfig
from muomni.data import corpus_fingerprint, load_corpus
from muomni.data.corpus import Item
from muomni.data.tokenize import mel_cache_dir
from muomni.data.vocoder import AudioCache, CodecMels, Prefetch, TalkerMels, random_segments
from muomni.distributed import mean_over_ranks
from muomni.load import load_codec, load_talker
from muomni.metrics import heldout_mel_l1
from muomni.models.codec import codec_hash
from muomni.models.discriminators import Discriminators, set_requires_grad
from muomni.models.griffinlim import mel_to_wav
from muomni.models.hifigan import (
    HiFiGANConfig,
    discriminator_losses,
    feature_matching_loss,
    generator_adversarial_loss,
    mel_loss,
    weighted_total,
)
from muomni.models.universal import (
    UniversalMel,
    build_generator,
    refiner_loss,
    stft_loss,
    universal_mismatch,
)
from muomni.pretrained import is_pretrained_name, parse_name, universal_state_dict, weights_path
from muomni.samples import vocoder_samples
from muomni.speech_check import SpeechCheck, vocoder_wavs
from muomni.stages.optim import build_optimizer
from muomni.synthesis_config import MEL_FROM
from muomni.training.device import autocast, make_grad_scaler, maybe_compile
from muomni.training.run import Run
from muomni.training.schedule import BatchOrder
from muomni.training.step import StepGuard

LOSSES = ("mel", "adv", "fm", "d_real", "d_fake")  # the weights train.loss_weights must give
NORMS = ("grad_norm_g", "grad_norm_d")  # a step's gradient norms: logged per rank, not averaged


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
    # HiFi-GAN's weights (Kong et al. 2020); "mel" weighs the L1 of log-MAGNITUDE mels, the scale 45 was tuned
    # on: the loss halves muomni's log-power mels before the L1 (models/hifigan.py mel_loss).
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"mel": 45.0, "adv": 1.0, "fm": 2.0, "d_real": 1.0, "d_fake": 1.0})
    eval_items: int = 16  # held-out utterances (whole) scored every eval_every steps
    sample_items: int = 2
    cache_items: int = 2048  # utterances kept decoded in memory (least recently used leave first)
    num_workers: int = 0  # threads decoding the next step's audio while a step trains (0 = in the loop)
    finetune_codec: str = ""  # codec checkpoint: train on its reconstructed mels (--finetune-codec)
    # Talker checkpoint: train on the mels synthesis makes from it, teacher-forced (--finetune-talker; it
    # carries its codec), decoded as mel_from says: keep it the mel_from synthesis will use ("expected")
    finetune_talker: str = ""
    mel_from: str = "expected"
    # "all": the generator (and discriminators) train. "adapter": only the mel adapter's learned correction
    # (model.adapter_refine) trains, by regression onto the real audio's 22.05 kHz mel; the pretrained generator
    # and its output stay as shipped, no discriminator runs (configs/vocoder_universal_adapter.json)
    trainable: str = "all"
    # what trains the adapter: "mel" (regression onto the real audio's 22.05 kHz mel, no generator pass) or
    # "audio" (the frozen generator's output against the real audio, log-magnitude L1 at 3 STFT sizes)
    adapter_loss: str = "mel"
    # The codec's and the Talker's key (config.CpuPrecision), kept here so that a config or run folder that
    # names it loads: the vocoder trains in float32 on a CPU and refuses anything else.
    cpu_precision: str = "fp32"

    def __post_init__(self):
        super().__post_init__()
        if self.segment_size % HOP_LENGTH or self.segment_size < HOP_LENGTH:
            raise ConfigError(f"train.segment_size ({self.segment_size}) must be a positive multiple of {HOP_LENGTH}")
        for key in LOSSES:
            if key not in self.loss_weights:
                raise ConfigError(f"train.loss_weights lacks '{key}' (needs {', '.join(LOSSES)})")
        if self.mel_from not in MEL_FROM:
            raise ConfigError(f"train.mel_from = {self.mel_from!r}: expected one of {', '.join(MEL_FROM)}")
        if self.finetune_codec and self.finetune_talker:
            raise ConfigError("train.finetune_codec and train.finetune_talker are both set: a Talker carries its "
                              "codec, so give one (the Talker for the mels synthesis will feed the vocoder)")
        if self.trainable not in ("all", "adapter"):
            raise ConfigError(f"train.trainable = {self.trainable!r}: expected 'all' or 'adapter'")
        if self.adapter_loss not in ("mel", "audio"):
            raise ConfigError(f"train.adapter_loss = {self.adapter_loss!r}: expected 'mel' or 'audio'")
        if self.cpu_precision != "fp32":
            raise ConfigError(f"train.cpu_precision = {self.cpu_precision!r}: the vocoder trains in float32 on "
                              "CPU (its GAN was never measured in bf16); only the codec and the Talker take bf16")

    @property
    def adapter_only(self) -> bool:
        return self.trainable == "adapter"


@dataclass
class VocoderRunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: HiFiGANConfig = field(default_factory=HiFiGANConfig)
    train: VocoderTrainConfig = field(default_factory=VocoderTrainConfig)


@dataclass
class VocoderState:
    """Everything a vocoder run trains with; ``objects`` is what a checkpoint holds. ``new_state`` makes the
    GAN alone (a benchmark's state); ``build`` adds the run, its data and the decoding threads.

    Training goes through the wrappers (DDP, and torch.compile with train.compile), one per optimizer;
    evaluation, samples and checkpoints use the plain modules."""

    cfg: VocoderRunConfig
    device: torch.device
    generator: nn.Module  # a Generator, or an AdaptedGenerator (models/universal.py) for model.adapter
    discriminators: Discriminators
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LRScheduler
    sched_d: torch.optim.lr_scheduler.LRScheduler
    scaler_g: torch.amp.GradScaler
    scaler_d: torch.amp.GradScaler
    guard: StepGuard  # takes both optimizer steps, skips and counts non-finite ones
    mel_fn: nn.Module  # the mel the generator's mel loss compares (hifigan.mel_loss)
    target_fn: nn.Module | None = None  # train.adapter_loss "mel": the real audio's 22.05 kHz mel
    generator_ddp: nn.Module | None = None
    discriminators_ddp: nn.Module | None = None
    discriminators_frozen: nn.Module | None = None  # scores the fake for the generator's losses
    adapter_ddp: nn.Module | None = None  # train.trainable = "adapter": the wrapped adapter, trained alone
    run: Run | None = None
    order: BatchOrder | None = None
    train_data: AudioCache | None = None
    held_data: AudioCache | None = None
    prefetch: Prefetch | None = None  # train.num_workers threads decoding the next step's audio
    speech: SpeechCheck | None = None
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def objects(self) -> dict[str, Any]:
        return {"generator": self.generator, "discriminators": self.discriminators, "opt_g": self.opt_g,
                "opt_d": self.opt_d, "sched_g": self.sched_g, "sched_d": self.sched_d, "scaler_g": self.scaler_g,
                "scaler_d": self.scaler_d, "order": self.order}

    def close(self) -> None:
        if self.prefetch is not None:
            self.prefetch.close()
            self.prefetch = None


def new_state(cfg: VocoderRunConfig, device: torch.device, guard: StepGuard | None = None) -> VocoderState:
    """The generator and the discriminators on ``device`` with their optimizers, exponential decays and grad
    scalers, the step guard (a quiet one of its own when none is given), and their training wrappers for one
    process (torch.compile with train.compile)."""
    tc, decay = cfg.train, (cfg.train.lr_decay, cfg.train.lr_decay_steps)
    generator = build_generator(cfg.model).to(device)
    discriminators = Discriminators(cfg.model).to(device)
    opt_g, sched_g = build_optimizer(generator, tc, decay=decay)
    opt_d, sched_d = build_optimizer(discriminators, tc, decay=decay)
    scalers = make_grad_scaler(device, tc.amp), make_grad_scaler(device, tc.amp)  # generator's, discriminators'
    guard = guard or StepGuard.quiet(tc.max_bad_steps)
    target_fn = UniversalMel().to(device) if tc.adapter_only and tc.adapter_loss == "mel" else None
    state = VocoderState(cfg, device, generator, discriminators, opt_g, opt_d, sched_g, sched_d, *scalers, guard,
                         MelSpectrogram().to(device), target_fn)
    wrap(state, lambda module: module, tc.compile)
    return state


def wrap(state: VocoderState, data_parallel: Callable[[nn.Module], nn.Module], compile: bool) -> None:
    """The training wrappers: ``data_parallel`` (``Run.wrap``: DDP when the run has several processes), then
    torch.compile when asked. With train.trainable = "adapter" only the mel adapter trains (the generator is
    frozen): adapter_loss "mel" wraps the adapter alone, "audio" the whole generator (its loss is on the audio)."""
    tc = state.cfg.train
    if tc.adapter_only:
        for p in state.generator.generator.parameters():
            p.requires_grad_(False)
        state.adapter_ddp = data_parallel(state.generator if tc.adapter_loss == "audio" else state.generator.adapter)
        return
    state.generator_ddp = maybe_compile(data_parallel(state.generator), compile)
    state.discriminators_ddp = maybe_compile(data_parallel(state.discriminators), compile)
    state.discriminators_frozen = maybe_compile(state.discriminators, compile)


def init_from_pretrained(state: VocoderState, name: str) -> None:
    """--init-from universal[:adapter]: the generator from the shipped universal weights (strict: every key),
    the discriminators left fresh; step 0."""
    model = state.cfg.model
    mismatch = universal_mismatch(model)
    adapter = parse_name(name)
    if ":" in name and adapter != model.adapter:
        mismatch.append(f"adapter: {model.adapter!r} != {adapter!r} named by --init-from {name}")
    if mismatch:
        raise ConfigError(f"--init-from {name} needs the model section of HiFi-GAN V1's universal generator behind "
                          "a mel adapter (configs/vocoder_universal.json): " + "; ".join(mismatch))
    missing, unexpected = state.generator.load_state_dict(universal_state_dict(), strict=False)
    missing = [k for k in missing if not k.startswith("adapter.refine.")]  # the adapter's correction starts untrained
    if missing or unexpected:
        raise ConfigError(f"--init-from {name}: the shipped weights do not fit the generator (missing {missing[:4]}, "
                          f"unexpected {unexpected[:4]})")
    state.run.info(f"initialised the generator from the pretrained universal HiFi-GAN ({weights_path()}), adapter "
                   f"{model.adapter}; discriminators fresh (none ship with it); starting at step 0")


def build(cfg: VocoderRunConfig, args: argparse.Namespace) -> VocoderState:
    """The run, its data (audio and input mels, the batch order, the decoding threads), the GAN, started from
    --init-from (a checkpoint of this stage, or ``universal``) and restored from the newest checkpoint on
    --resume."""
    run = Run(cfg, "vocoder", args)
    try:
        return _build(cfg, run, args.init_from)
    except BaseException:
        run.close()
        raise


def _build(cfg: VocoderRunConfig, run: Run, init_from: str | None) -> VocoderState:
    tc = cfg.train
    if tc.adapter_only and not cfg.model.adapter_refine:
        raise ConfigError("train.trainable = 'adapter' trains the adapter's correction: set model.adapter_refine "
                          "(its channels, e.g. 256) and model.adapter")
    heldout, train_data, held_data = _data(cfg, run)
    order = BatchOrder(len(train_data), tc.batch_size, tc.seed, run.rank, run.world)
    state = new_state(cfg, run.device, run.guard)
    state.run, state.order, state.train_data, state.held_data = run, order, train_data, held_data
    if is_pretrained_name(init_from):
        init_from_pretrained(state, init_from)
    else:
        run.checkpoints.load_init({"generator": state.generator, "discriminators": state.discriminators})
    state.step = run.restore(run.checkpoints.resume_payload(), state.objects)
    wrap(state, run.wrap, tc.compile)
    run.info(f"{len(train_data)} train / {len(held_data)} held-out utterances; generator "
             f"{sum(p.numel() for p in state.generator.parameters()) / 1e6:.2f} M params on {run.device}")
    state.speech = SpeechCheck(run, tc, heldout, mel_cache_dir(cfg.data.path))
    state.prefetch = Prefetch(train_data, tc.num_workers)
    return state


def _data(cfg: VocoderRunConfig, run: Run) -> tuple[list[Item], AudioCache, AudioCache]:
    """(the held-out items, the training and the held-out audio caches): each item's audio and input mel, its
    log-mel or what the codec or Talker being fine-tuned on makes of it; the fingerprints go in stats.json."""
    tc = cfg.train
    corpus = load_corpus(cfg.data)
    source, fingerprints = None, {"corpus": corpus_fingerprint(cfg.data.path, cfg.data.format)}
    if tc.finetune_codec:
        codec = load_codec(tc.finetune_codec, run.device)
        source, fingerprints["codec"] = CodecMels(codec), codec_hash(codec)
        run.info(f"fine-tuning on mels reconstructed by {tc.finetune_codec}")
    if tc.finetune_talker:
        bundle = load_talker(tc.finetune_talker, run.device)
        source = TalkerMels(bundle, tc.mel_from)
        fingerprints.update(codec=codec_hash(bundle.codec), talker=f"{tc.finetune_talker}@{bundle.step}")
        run.info(f"fine-tuning on the mels synthesis makes from {tc.finetune_talker} (teacher-forced, "
                 f"mel_from {tc.mel_from})")
    run.folder.update_stats(data=fingerprints)
    if not corpus.heldout:
        run.warn(f"{cfg.data.path} has no held-out split (data.heldout = {cfg.data.heldout:g}): held-out metrics "
                 "and samples are not computed and best.pt is not written")
    return corpus.heldout, AudioCache(corpus.train, tc.cache_items, source), \
        AudioCache(corpus.heldout, tc.cache_items, source)


def next_batch(state: VocoderState, step: int) -> list[tuple[Tensor, Tensor]]:
    """The step's train.grad_accum micro-batches, each wav (B, S) and its mel (B, S / 256, 128) at random
    frame offsets (Python's ``random``, which the run seeds); the threads start decoding the next step's items."""
    tc = state.cfg.train
    state.prefetch.next_steps(state.order, tc.grad_accum)
    return [random_segments(state.train_data, state.order.next(), tc.segment_size) for _ in range(tc.grad_accum)]


def train_step(state: VocoderState, batches: list[tuple[Tensor, Tensor]], step: int) -> dict[str, Tensor | float]:
    """One step on a step's micro-batches: adversarial from train.gan_start_step on (the mel L1 alone before),
    or the adapter alone with train.trainable = "adapter"; then the generator's and, when adversarial, the
    discriminators' optimizer steps. Returns the micro-batch means of the losses, the gradient norms (tensors:
    read when logged) and ``gan``, 1.0 for an adversarial step."""
    tc = state.cfg.train
    adversarial = step >= tc.gan_start_step and not tc.adapter_only
    totals: dict[str, Tensor] = {}  # micro-batch means, kept on the device until logged
    for wav, mel in batches:
        wav, mel = wav.to(state.device), mel.to(state.device)
        if tc.adapter_only:
            losses_g, losses_d, loss_g = adapter_micro_batch(state, wav, mel)
        else:
            losses_g, losses_d, loss_g = micro_batch(state, wav, mel, adversarial)
        for k, v in {**losses_g, **losses_d, "loss": loss_g}.items():
            totals[k] = totals.get(k, 0.0) + v.detach() / tc.grad_accum
    # The generator's step and, when adversarial, the discriminators' (each skipped on a non-finite loss or
    # gradient), then their schedules; the discriminators' starts when they do.
    guard = state.guard
    norms = {"grad_norm_g": guard.optimizer_step(step + 1, state.opt_g, state.generator.parameters(), state.scaler_g,
                                                 tc.grad_clip, loss_g, name="generator").grad_norm}
    if adversarial:
        loss_d = weighted_total(losses_d, tc.loss_weights)
        norms["grad_norm_d"] = guard.optimizer_step(step + 1, state.opt_d, state.discriminators.parameters(),
                                                    state.scaler_d, tc.grad_clip, loss_d,
                                                    name="discriminators").grad_norm
    state.sched_g.step()
    if adversarial:
        state.sched_d.step()
    return {**totals, **norms, "gan": float(adversarial)}


def micro_batch(state: VocoderState, wav: Tensor, mel: Tensor,
                adversarial: bool) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
    """Forward and backward of one micro-batch, wav (B, S) and mel (B, S / 256, 128), each loss scaled by
    1 / train.grad_accum: the discriminators' (when adversarial) and the generator's. Returns the
    generator's and the discriminators' named losses and the generator's weighted total."""
    tc, device = state.cfg.train, state.device
    with autocast(device, tc.amp):
        fake = state.generator_ddp(mel)  # (B, S)
    losses_g = {"mel": mel_loss(state.mel_fn(wav), state.mel_fn(fake.float()))}  # log-magnitude (hifigan.mel_loss)
    losses_d: dict[str, Tensor] = {}
    if adversarial:
        with autocast(device, tc.amp):
            real_scores, real_features = state.discriminators_ddp(wav)
            fake_scores, _ = state.discriminators_ddp(fake.detach())
        losses_d = discriminator_losses(real_scores, fake_scores)
        state.scaler_d.scale(weighted_total(losses_d, tc.loss_weights) / tc.grad_accum).backward()
        # Frozen discriminators score the fake for the generator: the plain module, since no
        # discriminator gradient (and so no DDP all-reduce) comes out of this pass.
        set_requires_grad(state.discriminators, False)
        with autocast(device, tc.amp):
            fake_scores, fake_features = state.discriminators_frozen(fake)
        set_requires_grad(state.discriminators, True)
        losses_g["adv"] = generator_adversarial_loss(fake_scores)
        losses_g["fm"] = feature_matching_loss(real_features, fake_features)
    loss_g = weighted_total(losses_g, tc.loss_weights)
    state.scaler_g.scale(loss_g / tc.grad_accum).backward()
    return losses_g, losses_d, loss_g


def adapter_micro_batch(state: VocoderState, wav: Tensor,
                        mel: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
    """train.trainable = "adapter": forward and backward of the adapter's refiner on one micro-batch, scaled by
    1 / train.grad_accum. ``train.adapter_loss`` "mel": L1 against the real audio's 22.05 kHz mel (refiner_loss;
    the generator is not run); "audio": the frozen generator's output against the real audio, log-magnitude L1
    at three STFT sizes (stft_loss). Returns the named loss, no discriminator losses, and the loss."""
    tc = state.cfg.train
    if tc.adapter_loss == "audio":
        loss = stft_loss(state.adapter_ddp(mel), wav)
    else:
        loss = refiner_loss(state.adapter_ddp, state.target_fn, wav, mel)
    (loss / tc.grad_accum).backward()
    return {"adapter": loss}, {}, loss


def log_record(state: VocoderState, out: dict[str, Tensor | float]) -> dict[str, float]:
    """The train record: the losses averaged over ranks, this rank's gradient norms, the generator's rate and
    whether the step was adversarial."""
    losses = mean_over_ranks({k: float(v) for k, v in out.items() if k not in (*NORMS, "gan")})
    norms = {k: float(out[k]) for k in NORMS if k in out}
    return {**losses, **norms, "lr": state.sched_g.get_last_lr()[0], "gan": out["gan"]}


def evaluate(state: VocoderState, step: int) -> float | None:
    """Held-out mel L1 of the generator, logged beside Griffin-Lim's on the same items (computed once per run,
    kept in stats.json); returns it (None without a held-out split)."""
    if not len(state.held_data):
        return None
    tc, run, generator = state.cfg.train, state.run, state.generator
    generator.eval()
    score, _ = heldout_mel_l1(generator, state.held_data, tc.eval_items, state.device)
    generator.train()
    baseline = run.folder.read_stats().get("griffinlim_mel_l1")
    if baseline is None:  # the untrained baseline, once per run, on the same items
        baseline, _ = heldout_mel_l1(mel_to_wav, state.held_data, tc.eval_items, state.device)
        run.folder.update_stats(griffinlim_mel_l1=baseline)
    run.log(step, {"mel_l1": score, "griffinlim_mel_l1": baseline}, split="heldout")
    return score


def samples(state: VocoderState, step: int) -> None:
    """Wavs and mel pictures of the first train.sample_items held-out utterances, vocoded by the generator."""
    if len(state.held_data):
        vocoder_samples(state.run.folder.sample_dir(step), step, state.generator, state.held_data,
                        state.cfg.train.sample_items, state.device)


def speech_wavs(state: VocoderState, items: list) -> list:
    """The speech check's utterances, their real mels vocoded by the generator."""
    return vocoder_wavs(state.generator, items, state.device)
