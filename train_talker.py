"""Train the Talker (text -> RVQ codes) on a corpus pre-tokenized by a trained codec (docs/DESIGN.md §5).

    python -m muomni.data.tokenize --codec checkpoints/codec_tiny/best.pt --data data/demo
    python train_talker.py --config configs/talker_tiny.json [--resume] [--init-from CKPT] [--set k=v ...]

Reads top to bottom: config -> data (code cache, text processor, fixed lengths) -> model -> loop.
Every checkpoint carries the codec (config + weights) and the text vocabulary, so that
``muomni.synthesis.load_talker`` synthesizes from it alone. Under ``torchrun --nproc_per_node N``
each rank trains on its share of the global batch (DDP); rank 0 alone evaluates and writes.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

import muomni  # noqa: F401  (before torch: it sets the OpenMP wait policy torch reads when it loads)

# isort: split
import torch

from muomni.config import ConfigError, CpuPrecision, DataConfig, TrainConfig, config_to_dict
from muomni.data.talker import TalkerData, read_prompts
from muomni.data.tokenize import mel_cache_dir
from muomni.distributed import mean_over_ranks
from muomni.files import write_json
from muomni.load import load_vocoder
from muomni.metrics import perplexities, talker_heldout, talker_summary
from muomni.models.codec import codec_to_dict
from muomni.models.talker import AnyTalkerConfig, TalkerConfig, build_talker, count_parameters
from muomni.samples import talker_ground_truth, talker_samples
from muomni.speech_check import SpeechCheck, tts_wavs
from muomni.synthesis import TalkerBundle
from muomni.talker_training import batch_order, build_optimizer, epoch_steps, micro_batch, talker_data
from muomni.text import TextProcessor
from muomni.training.cli import add_run_args, load_run_config
from muomni.training.device import maybe_compile, precision_name, unwrap
from muomni.training.run import Run


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


def main(argv: list[str] | None = None) -> int:
    parser = add_run_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    args = parser.parse_args(argv)
    cfg: TalkerRun = load_run_config(args, TalkerRun)
    run = Run(cfg, "talker", args)
    try:
        step = train(cfg, run)
    except BaseException:
        run.close()
        raise
    return run.finish(step)


def train(cfg: TalkerRun, run: Run) -> int:
    """Train to cfg.train.steps or until a stop; returns the last step."""
    # ---- data: corpus, codec, code cache, text processor, fixed lengths (and the model's derived fields)
    corpus, codec, text, data = talker_data(cfg, run)
    m = cfg.model
    if cfg.train.epochs > 0:
        cfg.train.steps = epoch_steps(cfg.train.epochs, data.batches_per_epoch(), cfg.train.grad_accum)
    resume = run.resume_payload()  # refuses a checkpoint whose model (vocabulary, codec, lengths) differs
    if resume is not None:
        text = TextProcessor.from_dict(resume["text"])
    if run.is_main:
        write_json(run.dir / "config.json", config_to_dict(cfg))

    # ---- model, optimiser, schedule
    model = build_talker(m).to(run.device)
    run.info(f"Talker ({m.arch}): {count_parameters(model) / 1e6:.2f} M parameters, {cfg.train.steps} steps, "
             f"{len(data.train)} train / {len(data.heldout)} held-out utterances, max_text {m.max_text}, "
             f"max_frames {m.max_frames} ({data.describe_truncation()}); "
             f"{precision_name(run.device, cfg.train.amp, cfg.train.cpu_precision)} on {run.device}")
    opt, sched, scaler = build_optimizer(model, cfg.train, run.device)
    order = batch_order(data, cfg.train.batching, cfg.train.batch_size, cfg.train.seed, run.rank, run.world)
    objects = {"model": model, "optim": opt, "sched": sched, "scaler": scaler, "order": order}
    step = run.restore(resume, objects)
    if resume is None:
        run.load_init({"model": model})
    compiled = maybe_compile(run.wrap(model), cfg.train.compile)
    extra = {"codec": codec_to_dict(codec), "text": text.to_dict(), "speakers": list(corpus.speakers)}
    if not data.heldout:
        run.warn(f"{cfg.data.path} has no held-out split (data.heldout = {cfg.data.heldout:g}): held-out metrics "
                 "are not computed and best.pt is not written; samples use training texts")
    default_prompts = data.heldout_prompts(2) or [(u.speaker, u.text) for u in data.train[:2]]
    prompts = read_prompts(cfg.train.prompts, cfg.train.prompts_file, default_prompts, corpus.speakers)
    if step == 0 and run.is_main and data.heldout:
        talker_ground_truth(run.dir / "samples" / "ground_truth", data.heldout[:len(prompts)], codec)
    speech = SpeechCheck(run, cfg.train, data.heldout, mel_cache_dir(cfg.data.path))
    vocoder = load_vocoder(cfg.train.speech_vocoder, run.device) if cfg.train.speech_vocoder and run.is_main else None
    bundle = TalkerBundle(unwrap(model), codec, text, corpus.speakers)

    # ---- loop
    run.progress(step, cfg.train.steps)
    frames_seen, t_last = torch.zeros((), dtype=torch.long, device=run.device), time.perf_counter()
    while step < cfg.train.steps and not run.stop_requested:
        model.train()
        sums: dict[str, torch.Tensor] = {}  # tensors: turned into numbers only when logged (no host sync)
        for _ in range(cfg.train.grad_accum):
            batch = data.batch(order.next(), run.device)
            out = micro_batch(compiled, batch, m, scaler, cfg.train, cfg.train.cpu_precision, run.device)
            frames_seen += batch["code_lens"].sum()
            for k, v in {**out.losses, **out.metrics}.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float() / cfg.train.grad_accum
        grad_norm = run.optimizer_step(step + 1, opt, model.parameters(), scaler, cfg.train.grad_clip,
                                       out.losses["loss"]).grad_norm
        sched.step()
        step += 1
        run.step_done()
        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            now, sums = time.perf_counter(), mean_over_ranks({k: float(v) for k, v in sums.items()})
            run.log(step, {**sums, **perplexities(sums, m.n_q), "lr": sched.get_last_lr()[0],
                           "grad_norm": float(grad_norm), "frames_per_s": float(frames_seen) / max(now - t_last, 1e-9),
                           "epoch": order.epoch})
            frames_seen, t_last = frames_seen.zero_(), now
        last = step == cfg.train.steps or run.stop_requested
        metric = None
        if run.is_main and data.heldout and (step % cfg.train.eval_every == 0 or last):
            metric = evaluate(unwrap(model), data, cfg, run, step)
        if run.is_main and (step % cfg.train.sample_every == 0 or last):
            talker_samples(run.sample_dir(step), step, bundle, prompts, cfg.train)
        wer = speech(step, last, lambda items: tts_wavs(bundle, items, vocoder))
        if step % cfg.train.save_every == 0 or last or speech.saves(step, last):
            run.save(step, objects, metric=speech.metric(metric, wer), extra=extra)
    return step


def evaluate(model: torch.nn.Module, data: TalkerData, cfg: TalkerRun, run: Run, step: int) -> float:
    """Held-out teacher-forced losses, perplexities and accuracies, logged; returns the held-out loss."""
    avg = talker_heldout(model, data, cfg.train.batch_size, cfg.train.eval_batches, run.device)
    run.log(step, {**avg, **perplexities(avg, cfg.model.n_q)}, split="heldout")
    run.info(f"step {step}: {talker_summary(avg, cfg.model.n_q)}")
    return avg["loss"]


if __name__ == "__main__":
    sys.exit(main())
