"""The Talker's training setup and step (docs/DESIGN.md §5): its data from a codec-tokenized corpus, the
optimiser and schedule, the batch order, and the weighted loss of a micro-batch, so that
``train_talker.py`` reads config -> data -> model -> loop.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from muomni.config import ConfigError, TrainConfig
from muomni.data import Corpus, corpus_fingerprint, load_corpus
from muomni.data.talker import BucketOrder, TalkerData
from muomni.distributed import rank_shares
from muomni.load import load_codec
from muomni.models.codec import codec_hash
from muomni.models.talker import AnyTalkerConfig, TalkerOutput
from muomni.text import TextProcessor
from muomni.training.device import autocast, make_grad_scaler
from muomni.training.run import Run
from muomni.training.schedule import BatchOrder, lr_lambda


def talker_data(cfg, run: Run) -> tuple[Corpus, nn.Module, TextProcessor, TalkerData]:
    """The corpus, the codec it was tokenized with, the text processor of its train texts and the TalkerData
    of a Talker run config ``cfg`` (data, model, train). Fills the model's derived fields (vocabulary,
    speakers, codebooks, fixed lengths): fixed by the data, stored in every checkpoint's config."""
    if not cfg.data.codec:
        raise ConfigError("data.codec: name the codec checkpoint the corpus was tokenized with "
                          "(--set data.codec=checkpoints/codec_tiny/best.pt)")
    corpus = load_corpus(cfg.data)
    codec = load_codec(cfg.data.codec)  # a checkpoint, an exported folder or a run folder (newest step)
    text = TextProcessor.build([it.text for it in corpus.train], cfg.data.text)
    fingerprint = codec_hash(codec)
    run.record_data(corpus=corpus_fingerprint(cfg.data.path, cfg.data.format), codec=fingerprint)
    with run.main_first():  # rank 0 writes the fixed lengths into stats.json, the others read them
        data = TalkerData.build(cfg, corpus, codec, fingerprint, text, run)
    m = cfg.model
    m.vocab_size, m.n_speakers = len(text), max(len(corpus.speakers), 1)
    m.n_q, m.codebook_size = codec.cfg.n_codebooks, codec.cfg.codebook_size
    m.max_text, m.max_frames = data.max_text, data.max_frames
    return corpus, codec, text, data


def build_optimizer(model: nn.Module, train: TrainConfig, device: torch.device):
    """AdamW, its warm-up + cosine schedule and the grad scaler."""
    # fused: one kernel for every parameter instead of a Python loop over ~100 tensors (CPU and CUDA)
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, betas=tuple(train.betas),
                            weight_decay=train.weight_decay, fused=device.type in ("cpu", "cuda"))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(train))
    return opt, sched, make_grad_scaler(device, train.amp)


def epoch_steps(epochs: float, batches_per_epoch: float, grad_accum: int) -> int:
    """Optimizer steps that train ``epochs`` epochs: each step takes ``grad_accum`` micro-batches, one
    batch of the order each, so epochs x batches per epoch / grad_accum, rounded up (at least 1)."""
    return max(1, math.ceil(epochs * batches_per_epoch / grad_accum - 1e-9))  # 1e-9: no step for float dust


def batch_order(data: TalkerData, batching: str, batch_size: int, seed: int, rank: int,
                world: int) -> BucketOrder | BatchOrder:
    """Length buckets packed up to train.max_tokens (dynamic), or fixed-size shuffled batches (fixed)."""
    if batching == "dynamic":
        return data.bucket_order(seed, rank, world)
    return BatchOrder(len(data.train), batch_size, seed, rank, world)


def micro_batch(model: nn.Module, batch: dict[str, Tensor], m: AnyTalkerConfig, scaler: torch.amp.GradScaler,
                train: TrainConfig, cpu_precision: str, device: torch.device) -> TalkerOutput:
    """Forward and backward of one micro-batch, the weighted loss scaled by 1 / train.grad_accum."""
    with autocast(device, train.amp, cpu_precision):
        out = model(**batch)
    # Each loss is a mean over its own valid elements: weighting each rank's by its share of the
    # global batch's elements makes DDP's average the one-process mean when lengths differ.
    shares = rank_shares(out.counts)
    loss = sum(m.weight(name) * out.losses[name] * shares[name] for name in out.counts)
    scaler.scale(loss / train.grad_accum).backward()
    return out
