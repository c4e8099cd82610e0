"""Train the RVQ mel codec (docs/DESIGN.md §4): log-mel patches <-> n_q codes per 80 ms code frame.

    python train_codec.py --config configs/codec_tiny.json
    python train_codec.py --config configs/codec_tiny.json --resume
    python train_codec.py --config configs/codec_base.json --set train.steps=2000 model.codebook_size=256

Batches are random crops of ``train.crop_frames`` code frames (short items are padded with silence; an
item shorter than one code frame is skipped with a warning). The per-bin mean/std of the training mels is
computed once and kept in the run's stats.json and in the codec's buffers. Held-out metrics every
``eval_every`` steps, original vs reconstructed mel pictures and Griffin-Lim wavs every ``sample_every``.
Under ``torchrun --nproc_per_node N`` each rank trains on its share of the global ``train.batch_size``
(DDP), the quantizer keeps the codebooks equal, and rank 0 alone evaluates and writes.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import muomni  # noqa: F401  (before torch: it sets the OpenMP wait policy torch reads when it loads)

# isort: split
import torch

from muomni.config import ConfigError, DataConfig, TrainConfig
from muomni.data import corpus_fingerprint, load_corpus, mel_cache
from muomni.data.codec import crop_batch, mel_statistics, usable
from muomni.data.tokenize import mel_cache_dir
from muomni.distributed import mean_over_ranks
from muomni.metrics import codec_heldout
from muomni.models.codec import LOSSES, CodecConfig, CodecModel, weighted_loss
from muomni.samples import codec_samples
from muomni.speech_check import SpeechCheck, codec_wavs
from muomni.synthesis_config import GRIFFIN_LIM_ITERS
from muomni.training.cli import add_run_args, load_run_config
from muomni.training.device import autocast, make_grad_scaler, maybe_compile, precision_name
from muomni.training.run import Run
from muomni.training.schedule import BatchOrder, lr_lambda


@dataclass
class CodecTrainConfig(TrainConfig):
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


def mel_stats(run: Run, cache, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and std (128,) of the training mels, computed once and cached in stats.json."""
    stats = run.read_stats()
    if "mel_mean" not in stats:
        stats.update(mel_statistics(cache, indices))
        run.write_stats(stats)
    return torch.tensor(stats["mel_mean"]), torch.tensor(stats["mel_std"])


def main(argv: list[str] | None = None) -> int:
    parser = add_run_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    args = parser.parse_args(argv)
    cfg: CodecRun = load_run_config(args, CodecRun)
    run = Run(cfg, "codec", args)
    tc, device, per = cfg.train, run.device, cfg.model.frames_per_token

    # ---- data: mel caches, usable items, dataset statistics
    corpus = load_corpus(cfg.data)
    run.record_data(corpus=corpus_fingerprint(cfg.data.path, cfg.data.format))
    with run.main_first():  # rank 0 builds the caches and stats.json, the other ranks read them
        train_mels = mel_cache(corpus.train, mel_cache_dir(cfg.data.path), "train")
        held_mels = mel_cache(corpus.heldout, mel_cache_dir(cfg.data.path), "heldout")
        train_idx = usable(train_mels, corpus.train, per, run.warn)
        held_idx = usable(held_mels, corpus.heldout, per, run.warn)
        if not train_idx:
            raise SystemExit(f"{cfg.data.path}: no training utterance holds a whole code frame ({per} mel frames)")
        mean, std = mel_stats(run, train_mels, train_idx)
    eval_idx = held_idx[: tc.eval_items] if tc.eval_items else held_idx
    speech = SpeechCheck(run, tc, [corpus.heldout[i] for i in held_idx], mel_cache_dir(cfg.data.path))
    if not held_idx:
        run.warn(f"{cfg.data.path} has no usable held-out split (data.heldout = {cfg.data.heldout:g}): held-out "
                 "metrics and samples are not computed and best.pt is not written")

    # ---- model, optimizer, schedule
    model = CodecModel(cfg.model).to(device)
    model.set_stats(mean, std)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(tc))
    scaler = make_grad_scaler(device, tc.amp)
    order = BatchOrder(len(train_idx), tc.batch_size, tc.seed, run.rank, run.world)
    objects = {"model": model, "optim": opt, "sched": sched, "scaler": scaler, "order": order}
    run.load_init({"model": model})
    step = run.restore(run.resume_payload(), objects)
    run.info(f"{len(train_idx)} train / {len(held_idx)} held-out utterances; {cfg.model.n_codebooks} x "
             f"{cfg.model.codebook_size} codes = {cfg.model.bitrate:.0f} bit/s; "
             f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params on {device}, "
             f"{precision_name(device, tc.amp, tc.cpu_precision)}")

    # The quantizer all-reduces its own statistics, so DDP need not broadcast the codebook buffers.
    ddp_model = maybe_compile(run.wrap(model, forward_sync_buffers=False), tc.compile)

    # ---- loop
    weights, replaced, metric = tc.loss_weights, 0, None
    run.progress(step, tc.steps)
    model.train()
    model.rvq.defer_updates(True)  # codebook statistics change only when the step is accepted
    while step < tc.steps and not run.stop_requested:
        mel = crop_batch(train_mels, [train_idx[j] for j in order.next()], tc.crop_frames * per, [tc.seed, step])
        with autocast(device, tc.amp, tc.cpu_precision):  # the quantizer computes in float32 inside
            out = ddp_model(mel.to(device))
        loss = weighted_loss(out.losses, weights)  # train.loss_weights; a loss without a weight is logged only
        scaler.scale(loss).backward()
        result = run.optimizer_step(step + 1, opt, model.parameters(), scaler, tc.grad_clip, loss)
        if result.accepted:  # the same decision on every rank: the codebooks stay equal
            model.rvq.commit_updates()
            replaced += out.replaced
        else:
            model.rvq.discard_updates()
        sched.step()
        step += 1
        run.step_done()
        if step % tc.log_every == 0:  # every rank: the losses are averaged over them
            losses = mean_over_ranks({"loss": loss.item(), **{k: v.item() for k, v in out.losses.items()}})
            run.log(step, {**losses, "lr": sched.get_last_lr()[0], "grad_norm": float(result.grad_norm)})
        last = step == tc.steps or run.stop_requested  # the step count, the time budget or a signal
        if run.is_main and eval_idx and (step % tc.eval_every == 0 or last):  # so a stopped run has a best.pt
            metrics = codec_heldout(model, held_mels, eval_idx, device)
            metric = metrics["mse"]
            run.log(step, {**metrics, "replaced_codes": replaced}, split="heldout")
            replaced = 0
        if run.is_main and held_idx and step % tc.sample_every == 0:
            codec_samples(run.sample_dir(step), step, model, held_mels, corpus.heldout, held_idx[: tc.sample_items],
                          tc.griffin_lim_iters)
        wer = speech(step, last, lambda items: codec_wavs(model, held_mels, held_idx[: len(items)],
                                                          tc.griffin_lim_iters))
        if step % tc.save_every == 0 or last or speech.saves(step, last):
            run.save(step, objects, metric=speech.metric(metric, wer))
    return run.finish(step)


if __name__ == "__main__":
    sys.exit(main())
