"""The Talker stage (docs/DESIGN.md §5): text ids -> the RVQ codes of a corpus tokenized by a trained codec.

The data fixes part of the model: the vocabulary and speakers of the train texts, the codec's codebooks, and
the lengths every batch is padded to. ``build`` reads the data first, puts those facts into the run config
once (``settle``), and only then opens the run, so that config.json and every checkpoint hold the config the
model was built from, and --resume refuses a checkpoint whose facts differ. Every checkpoint carries the codec
(config and weights) and the text vocabulary, so that ``muomni.load.load_talker`` synthesizes from it
alone. Under DDP each rank trains on its share of the global batch; rank 0 alone evaluates and writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from muomni.config import ConfigError, CpuPrecision, DataConfig, TrainConfig
from muomni.data import Corpus, corpus_fingerprint, load_corpus
from muomni.data.talker import BucketOrder, TalkerData, read_prompts
from muomni.data.tokenize import mel_cache_dir
from muomni.distributed import mean_over_ranks, rank_shares
from muomni.load import load_codec, load_vocoder
from muomni.metrics import perplexities, talker_heldout, talker_summary
from muomni.models.codec import CodecModel, codec_hash, codec_to_dict
from muomni.models.talker import AnyTalkerConfig, TalkerConfig, TalkerOutput, build_talker, count_parameters
from muomni.samples import talker_ground_truth, talker_samples
from muomni.speech_check import SpeechCheck, tts_wavs
from muomni.stages.optim import build_optimizer
from muomni.stages.state import ModelState
from muomni.synthesis import TalkerBundle
from muomni.text import TextProcessor
from muomni.training.device import autocast, make_grad_scaler, maybe_compile, precision_name
from muomni.training.run import Run
from muomni.training.schedule import BatchOrder
from muomni.training.step import StepGuard


@dataclass
class TalkerDataConfig(DataConfig):
    codec: str = ""  # codec checkpoint (train_codec.py); required
    codes: str = ""  # code cache folder (default: the one python -m muomni.data.tokenize writes)


@dataclass
class TalkerTrainConfig(CpuPrecision, TrainConfig):
    epochs: float = 0.0  # > 0: train.steps = epochs x batches per epoch / grad_accum (optimizer steps, rounded up)
    batching: str = "fixed"  # fixed: every batch padded to max_frames | dynamic: length-sorted buckets
    max_length_percentile: float = 95.0  # max_frames / max_text = this percentile of the corpus lengths
    length_multiple: int = 8  # ... rounded up to a multiple of this
    max_tokens: int = 4096  # dynamic batching: B x (padded text + padded frames + 1) per batch at most, each
    # padded as the collate pads it (rounded up to length_multiple); an item alone over it is a batch of one
    eval_batches: int = 4
    prompts: list[str] = field(default_factory=list)  # "speaker|text" lines sampled every sample_every
    prompts_file: str = ""  # a file of such lines ('#' comments)
    sample_temperature: float = 0.7
    sample_top_k: int = 0
    sample_top_p: float = 0.0
    sample_seed: int = 0
    speech_vocoder: str = ""  # vocoder checkpoint the speech check synthesizes through ("" = Griffin-Lim)

    def __post_init__(self):
        super().__post_init__()
        if self.batching not in ("fixed", "dynamic"):
            raise ConfigError(f"train.batching = {self.batching!r}: expected fixed or dynamic")
        if not 0 < self.max_length_percentile <= 100:
            raise ConfigError(f"train.max_length_percentile must be in (0, 100], got {self.max_length_percentile}")


@dataclass
class TalkerRun:
    data: TalkerDataConfig = field(default_factory=TalkerDataConfig)
    model: AnyTalkerConfig = field(default_factory=TalkerConfig)
    train: TalkerTrainConfig = field(default_factory=TalkerTrainConfig)


@dataclass
class TalkerInputs:
    """What a Talker run reads before it exists: the corpus, the codec it was tokenized with, the text
    processor of its train texts and their TalkerData; ``notes`` are the warnings raised reading them, for the
    run's log."""

    corpus: Corpus
    codec: CodecModel
    codec_hash: str
    text: TextProcessor
    data: TalkerData
    notes: list[str] = field(default_factory=list)


@dataclass
class TalkerState(ModelState):
    """Everything a Talker run trains with (``ModelState``: the model is a Talker or a TRMTalker) and its data;
    ``new_state`` makes the model, optimizer and schedule alone (a benchmark's state), ``build`` adds the run."""

    data: TalkerData | None = None
    bundle: TalkerBundle | None = None  # the model with its codec, text processor and speakers: synthesis
    prompts: list[tuple[int, str]] = field(default_factory=list)  # (speaker, text) sampled every sample_every
    vocoder: nn.Module | None = None  # the speech check's vocoder (None: Griffin-Lim)
    frames_seen: Tensor | None = None  # code frames trained on since the last train record (no host sync)
    since: float = 0.0  # time.perf_counter() of the last train record


# ---- the data, and the config it settles


def read_inputs(cfg: TalkerRun) -> TalkerInputs:
    """The corpus, codec, text processor and TalkerData of ``cfg``. Needs no run: it reads files only (the
    code cache is written beforehand by python -m muomni.data.tokenize), so every rank reads it alike."""
    if not cfg.data.codec:
        raise ConfigError("data.codec: name the codec checkpoint the corpus was tokenized with "
                          "(--set data.codec=checkpoints/codec_tiny/best.pt)")
    corpus = load_corpus(cfg.data)
    codec = load_codec(cfg.data.codec)  # a checkpoint, an exported folder or a run folder (newest step)
    text = TextProcessor.build([it.text for it in corpus.train], cfg.data.text)
    fingerprint, notes = codec_hash(codec), []
    data = TalkerData.build(cfg, corpus, codec, fingerprint, text, notes.append)
    return TalkerInputs(corpus, codec, fingerprint, text, data, notes)


def data_facts(inputs: TalkerInputs) -> dict[str, int]:
    """The model fields the data fixes: vocabulary, speakers, the codec's codebooks (its ``n_codebooks`` is
    the Talker's ``n_q``) and the fixed lengths."""
    codec = inputs.codec.cfg
    return {"vocab_size": len(inputs.text), "n_speakers": max(len(inputs.corpus.speakers), 1),
            "n_q": codec.n_codebooks, "codebook_size": codec.codebook_size,
            "max_text": inputs.data.max_text, "max_frames": inputs.data.max_frames}


def settle(cfg: TalkerRun, inputs: TalkerInputs) -> TalkerRun:
    """``cfg`` with the data's facts in its model section and, for train.epochs > 0, the step count they
    make: the config the run is made with, written once."""
    train = cfg.train
    if train.epochs > 0:
        steps = epoch_steps(train.epochs, inputs.data.batches_per_epoch(), train.grad_accum)
        train = dataclasses.replace(train, steps=steps)
    facts, defaults = data_facts(inputs), type(cfg.model)()
    for key, value in facts.items():  # a value the config names is replaced: say so once, not silently
        given = getattr(cfg.model, key)
        if key not in ("max_text", "max_frames") and given not in (value, getattr(defaults, key)):
            inputs.notes.append(f"model.{key} = {given} in the config is replaced by the data's {value} "
                                "(the text processor's vocabulary, the corpus's speakers, the codec's codebooks)")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **facts), train=train)


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


# ---- the state


def new_state(cfg: TalkerRun, device: torch.device, guard: StepGuard | None = None) -> TalkerState:
    """The model of ``cfg`` (its data fields filled in: ``settle``, or given by a benchmark), its optimizer,
    schedule and grad scaler on ``device``, and the step guard (a quiet one of its own when none is given)."""
    model = build_talker(cfg.model).to(device)
    # fused: one kernel for every parameter instead of a Python loop over ~100 tensors (CPU and CUDA)
    opt, sched = build_optimizer(model, cfg.train, fused=device.type in ("cpu", "cuda"))
    guard = guard or StepGuard.quiet(cfg.train.max_bad_steps)
    return TalkerState(cfg, device, model, model, opt, sched, make_grad_scaler(device, cfg.train.amp), guard,
                       frames_seen=torch.zeros((), dtype=torch.long, device=device), since=time.perf_counter())


def build(cfg: TalkerRun, args: argparse.Namespace) -> TalkerState:
    """The data first, then the run made with the config it settles, the model, optimizer and schedule,
    restored from the newest checkpoint on --resume, and what sampling and the speech check need."""
    inputs = read_inputs(cfg)
    cfg = settle(cfg, inputs)
    run = Run(cfg, "talker", args)
    try:
        return _build(cfg, run, inputs)
    except BaseException:
        run.close()
        raise


def _build(cfg: TalkerRun, run: Run, inputs: TalkerInputs) -> TalkerState:
    data, text, tc = inputs.data, inputs.text, cfg.train
    for note in inputs.notes:
        run.warn(note)
    run.folder.update_stats(data={"corpus": corpus_fingerprint(cfg.data.path, cfg.data.format),
                                  "codec": inputs.codec_hash},
                            max_text=data.max_text, max_frames=data.max_frames,  # for reading: the config rules
                            truncated_train_items=data.truncated, train_items=len(data.train))
    resume = run.checkpoints.resume_payload()  # refuses a checkpoint whose model (vocabulary, codec, lengths) differs
    if resume is not None:
        text = TextProcessor.from_dict(resume["text"])
    state = new_state(cfg, run.device, run.guard)
    m = cfg.model
    run.info(f"Talker ({m.arch}): {count_parameters(state.model) / 1e6:.2f} M parameters, {tc.steps} steps, "
             f"{len(data.train)} train / {len(data.heldout)} held-out utterances, max_text {m.max_text}, "
             f"max_frames {m.max_frames} ({data.describe_truncation()}); "
             f"{precision_name(run.device, tc.amp, tc.cpu_precision)} on {run.device}")
    state.run, state.data = run, data
    state.order = batch_order(data, tc.batching, tc.batch_size, tc.seed, run.rank, run.world)
    state.step = run.restore(resume, state.objects)
    if resume is None:
        run.checkpoints.load_init({"model": state.model})
    state.trained = maybe_compile(run.wrap(state.model), tc.compile)
    state.extra = {"codec": codec_to_dict(inputs.codec), "text": text.to_dict(),
                   "speakers": list(inputs.corpus.speakers)}
    _sampling(state, inputs, text)
    state.since = time.perf_counter()
    return state


def _sampling(state: TalkerState, inputs: TalkerInputs, text: TextProcessor) -> None:
    """The prompts, the ground truth of a new run, the speech check and the bundle that synthesizes."""
    cfg, run, data, speakers = state.cfg, state.run, state.data, inputs.corpus.speakers
    if not data.heldout:
        run.warn(f"{cfg.data.path} has no held-out split (data.heldout = {cfg.data.heldout:g}): held-out metrics "
                 "are not computed and best.pt is not written; samples use training texts")
    default_prompts = data.heldout_prompts(2) or [(u.speaker, u.text) for u in data.train[:2]]
    state.prompts = read_prompts(cfg.train.prompts, cfg.train.prompts_file, default_prompts, speakers)
    if state.step == 0 and run.is_main and data.heldout:
        talker_ground_truth(run.dir / "samples" / "ground_truth", data.heldout[:len(state.prompts)], inputs.codec)
    state.speech = SpeechCheck(run, cfg.train, data.heldout, mel_cache_dir(cfg.data.path))
    if cfg.train.speech_vocoder and run.is_main:
        state.vocoder = load_vocoder(cfg.train.speech_vocoder, run.device)
    state.bundle = TalkerBundle(state.model, inputs.codec, text, speakers)


# ---- the step and what the loop calls


def next_batch(state: TalkerState, step: int) -> list[dict[str, Tensor]]:
    """The step's train.grad_accum micro-batches, each the padded tensors of the order's next batch."""
    return [state.data.batch(state.order.next(), state.device) for _ in range(state.cfg.train.grad_accum)]


def micro_batch(state: TalkerState, batch: dict[str, Tensor]) -> TalkerOutput:
    """Forward and backward of one micro-batch, the weighted loss scaled by 1 / train.grad_accum."""
    tc, m = state.cfg.train, state.cfg.model
    with autocast(state.device, tc.amp, tc.cpu_precision):
        out = state.trained(**batch)
    # Each loss is a mean over its own valid elements: weighting each rank's by its share of the
    # global batch's elements makes DDP's average the one-process mean when lengths differ.
    shares = rank_shares(out.counts)
    loss = sum(m.weight(name) * out.losses[name] * shares[name] for name in out.counts)
    state.scaler.scale(loss / tc.grad_accum).backward()
    return out


def train_step(state: TalkerState, batches: list[dict[str, Tensor]], step: int) -> dict[str, Tensor]:
    """One optimizer step over the micro-batches. Returns their mean losses and metrics and the step's gradient
    norm (tensors: turned into numbers only when logged, so no host sync)."""
    tc = state.cfg.train
    state.model.train()
    sums: dict[str, Tensor] = {}
    for batch in batches:
        out = micro_batch(state, batch)
        state.frames_seen += batch["code_lens"].sum()
        for k, v in {**out.losses, **out.metrics}.items():
            sums[k] = sums.get(k, 0.0) + v.detach().float() / tc.grad_accum
    result = state.guard.optimizer_step(step + 1, state.opt, state.model.parameters(), state.scaler, tc.grad_clip,
                                        out.losses["loss"])
    state.sched.step()
    return {**sums, "grad_norm": result.grad_norm}


def log_record(state: TalkerState, out: dict[str, Tensor]) -> dict[str, float]:
    """The train record: losses and metrics averaged over ranks, perplexities, the rate, code frames per second
    since the last record, and the epoch."""
    now = time.perf_counter()
    sums = mean_over_ranks({k: float(v) for k, v in out.items() if k != "grad_norm"})
    rate = float(state.frames_seen) / max(now - state.since, 1e-9)
    state.frames_seen.zero_()
    state.since = now
    return {**sums, **perplexities(sums, state.cfg.model.n_q), "lr": state.sched.get_last_lr()[0],
            "grad_norm": float(out["grad_norm"]), "frames_per_s": rate, "epoch": state.order.epoch}


def evaluate(state: TalkerState, step: int) -> float | None:
    """Held-out teacher-forced losses, perplexities and accuracies, logged; returns the held-out loss (None
    without a held-out split)."""
    if not state.data.heldout:
        return None
    tc, n_q = state.cfg.train, state.cfg.model.n_q
    avg = talker_heldout(state.model, state.data, tc.batch_size, tc.eval_batches, state.device)
    state.run.log(step, {**avg, **perplexities(avg, n_q)}, split="heldout")
    state.run.info(f"step {step}: {talker_summary(avg, n_q)}")
    return avg["loss"]


def samples(state: TalkerState, step: int) -> None:
    """The prompts synthesized: codes, mel pictures and wavs."""
    talker_samples(state.run.folder.sample_dir(step), step, state.bundle, state.prompts, state.cfg.train)


def speech_wavs(state: TalkerState, items: list) -> list:
    """The speech check's texts synthesized, voiced by its vocoder (Griffin-Lim without one)."""
    return tts_wavs(state.bundle, items, state.vocoder)
