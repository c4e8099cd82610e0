"""The codec stage (docs/DESIGN.md §4): log-mel patches <-> n_q codes per 80 ms code frame.

Batches are random crops of ``train.crop_frames`` code frames (short items are padded with silence; an item
shorter than one code frame is skipped with a warning). The per-bin mean/std of the training mels is computed
once and kept in the run's stats.json and in the codec's buffers. Under DDP each rank trains on its share of
the global ``train.batch_size``, the quantizer keeps the codebooks equal, and rank 0 alone evaluates and writes.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import torch
from torch import Tensor

from muomni.config import ConfigError, CpuPrecision, DataConfig, TrainConfig
from muomni.data import corpus_fingerprint, load_corpus, mel_cache
from muomni.data.cache import MelCache
from muomni.data.codec import crop_batch, mel_statistics, usable
from muomni.data.corpus import Item
from muomni.data.tokenize import mel_cache_dir
from muomni.distributed import mean_over_ranks
from muomni.metrics import codec_heldout
from muomni.models.codec import LOSSES, CodecConfig, CodecModel, weighted_loss
from muomni.samples import codec_samples
from muomni.speech_check import SpeechCheck, codec_wavs
from muomni.stages.optim import build_optimizer
from muomni.stages.state import ModelState
from muomni.synthesis_config import GRIFFIN_LIM_ITERS
from muomni.training.device import autocast, make_grad_scaler, maybe_compile, precision_name
from muomni.training.run import Run
from muomni.training.schedule import BatchOrder
from muomni.training.step import StepGuard


@dataclass
class CodecTrainConfig(CpuPrecision, TrainConfig):
    crop_frames: int = 16  # code frames per training crop (16 x 80 ms = 1.28 s)
    loss_weights: dict = field(default_factory=lambda: {"recon": 1.0, "commit": 0.25})
    eval_items: int = 0  # held-out utterances scored at each evaluation (0 = all)
    sample_items: int = 2  # held-out utterances rendered at each sample step
    griffin_lim_iters: int = GRIFFIN_LIM_ITERS

    def __post_init__(self):
        super().__post_init__()
        unknown = sorted(set(self.loss_weights) - {*LOSSES, "commit"})
        if unknown:
            raise ConfigError(f"train.loss_weights: unknown loss '{unknown[0]}' (known: {', '.join(LOSSES)}, commit)")
        if not any(self.loss_weights.values()):
            raise ConfigError("train.loss_weights: every weight is 0, so nothing would be trained")


@dataclass
class CodecRun:
    data: DataConfig = field(default_factory=DataConfig)
    model: CodecConfig = field(default_factory=CodecConfig)
    train: CodecTrainConfig = field(default_factory=CodecTrainConfig)


@dataclass
class CodecState(ModelState):
    """Everything a codec run trains with (``ModelState``) and its data; ``new_state`` makes the model, optimizer
    and schedule alone (a benchmark's state), ``build`` adds the run and its data."""

    train_mels: MelCache | None = None
    held_mels: MelCache | None = None
    train_idx: list[int] = field(default_factory=list)  # usable items (at least one code frame) of each split
    held_idx: list[int] = field(default_factory=list)
    heldout: list[Item] = field(default_factory=list)  # the held-out split (held_idx indexes it)
    replaced: int = 0  # dead codes replaced since the last evaluation


def new_state(cfg: CodecRun, device: torch.device, guard: StepGuard | None = None) -> CodecState:
    """The model, its optimizer, schedule and grad scaler on ``device``, and the step guard (a quiet one of its
    own when none is given)."""
    model = CodecModel(cfg.model).to(device)
    model.rvq.defer_updates(True)  # codebook statistics change only when the step is accepted (train_step)
    opt, sched = build_optimizer(model, cfg.train)
    guard = guard or StepGuard.quiet(cfg.train.max_bad_steps)
    return CodecState(cfg, device, model, model, opt, sched, make_grad_scaler(device, cfg.train.amp), guard)


def build(cfg: CodecRun, args: argparse.Namespace) -> CodecState:
    """The run, its data (mel caches, usable items, normalisation), the model, optimizer and schedule, restored
    from the newest checkpoint on --resume."""
    run = Run(cfg, "codec", args)
    try:
        return _build(cfg, run)
    except BaseException:
        run.close()
        raise


def _build(cfg: CodecRun, run: Run) -> CodecState:
    tc, per = cfg.train, cfg.model.frames_per_token
    corpus = load_corpus(cfg.data)
    run.folder.update_stats(data={"corpus": corpus_fingerprint(cfg.data.path, cfg.data.format)})
    with run.main_first():  # rank 0 builds the caches and the normalisation, the other ranks read them
        train_mels = mel_cache(corpus.train, mel_cache_dir(cfg.data.path), "train")
        held_mels = mel_cache(corpus.heldout, mel_cache_dir(cfg.data.path), "heldout")
        train_idx = usable(train_mels, corpus.train, per, run.warn)
        held_idx = usable(held_mels, corpus.heldout, per, run.warn)
        if not train_idx:
            raise SystemExit(f"{cfg.data.path}: no training utterance holds a whole code frame ({per} mel frames)")
        stats = run.folder.read_stats()
        if "mel_mean" not in stats:  # computed once per run folder
            stats = mel_statistics(train_mels, train_idx)
            run.folder.update_stats(**stats)
    if not held_idx:
        run.warn(f"{cfg.data.path} has no usable held-out split (data.heldout = {cfg.data.heldout:g}): held-out "
                 "metrics and samples are not computed and best.pt is not written")

    state = new_state(cfg, run.device, run.guard)
    state.model.set_stats(torch.tensor(stats["mel_mean"]), torch.tensor(stats["mel_std"]))
    state.run, state.train_mels, state.held_mels, state.heldout = run, train_mels, held_mels, corpus.heldout
    state.train_idx, state.held_idx = train_idx, held_idx
    state.order = BatchOrder(len(train_idx), tc.batch_size, tc.seed, run.rank, run.world)
    state.speech = SpeechCheck(run, tc, [corpus.heldout[i] for i in held_idx], mel_cache_dir(cfg.data.path))
    run.checkpoints.load_init({"model": state.model})
    state.step = run.restore(run.checkpoints.resume_payload(), state.objects)
    run.info(f"{len(train_idx)} train / {len(held_idx)} held-out utterances; {cfg.model.n_codebooks} x "
             f"{cfg.model.codebook_size} codes = {cfg.model.bitrate:.0f} bit/s; "
             f"{sum(p.numel() for p in state.model.parameters()) / 1e6:.2f} M params on {run.device}, "
             f"{precision_name(run.device, tc.amp, tc.cpu_precision)}")
    # The quantizer all-reduces its own statistics, so DDP need not broadcast the codebook buffers.
    state.trained = maybe_compile(run.wrap(state.model, forward_sync_buffers=False), tc.compile)
    return state


def next_batch(state: CodecState, step: int) -> Tensor:
    """The step's batch: random crops of train.crop_frames code frames (B, T, 128), seeded by the step."""
    tc = state.cfg.train
    frames = tc.crop_frames * state.cfg.model.frames_per_token
    return crop_batch(state.train_mels, [state.train_idx[j] for j in state.order.next()], frames, [tc.seed, step])


def train_step(state: CodecState, mel: Tensor, step: int) -> dict[str, Tensor]:
    """One optimizer step on a batch of mels (B, T, 128); the codebooks move only when the step is accepted.
    Returns the step's losses and gradient norm (tensors: read when logged)."""
    tc, model = state.cfg.train, state.model
    model.train()
    with autocast(state.device, tc.amp, tc.cpu_precision):  # the quantizer computes in float32 inside
        out = state.trained(mel.to(state.device))
    loss = weighted_loss(out.losses, tc.loss_weights)  # train.loss_weights; a loss without a weight is logged only
    state.scaler.scale(loss).backward()
    result = state.guard.optimizer_step(step + 1, state.opt, model.parameters(), state.scaler, tc.grad_clip, loss)
    if result.accepted:  # the same decision on every rank: the codebooks stay equal
        model.rvq.commit_updates()
        state.replaced += out.replaced
    else:
        model.rvq.discard_updates()
    state.sched.step()
    return {"loss": loss.detach(), **{k: v.detach() for k, v in out.losses.items()}, "grad_norm": result.grad_norm}


def log_record(state: CodecState, out: dict[str, Tensor]) -> dict[str, float]:
    losses = mean_over_ranks({k: v.item() for k, v in out.items() if k != "grad_norm"})
    return {**losses, "lr": state.sched.get_last_lr()[0], "grad_norm": float(out["grad_norm"])}


def evaluate(state: CodecState, step: int) -> float | None:
    """Held-out reconstruction metrics and the codes replaced since the last evaluation, logged; returns the
    held-out MSE (None without a held-out split)."""
    tc = state.cfg.train
    eval_idx = state.held_idx[: tc.eval_items] if tc.eval_items else state.held_idx
    if not eval_idx:
        return None
    metrics = codec_heldout(state.model, state.held_mels, eval_idx, state.device)
    state.run.log(step, {**metrics, "replaced_codes": state.replaced}, split="heldout")
    state.replaced = 0
    return metrics["mse"]


def samples(state: CodecState, step: int) -> None:
    """Original vs reconstructed mel pictures and Griffin-Lim wavs of the first held-out items."""
    if state.held_idx:
        tc = state.cfg.train
        codec_samples(state.run.folder.sample_dir(step), step, state.model, state.held_mels, state.heldout,
                      state.held_idx[: tc.sample_items], tc.griffin_lim_iters)


def speech_wavs(state: CodecState, items: list) -> list:
    """The codec's round trip of the speech check's utterances, voiced by Griffin-Lim."""
    return codec_wavs(state.model, state.held_mels, state.held_idx[: len(items)], state.cfg.train.griffin_lim_iters)
