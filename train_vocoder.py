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
import copy
import math
import random
import sys
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import muomni  # noqa: F401  (before torch: it sets the OpenMP wait policy torch reads when it loads)

# isort: split
import numpy as np
import torch
from torch import Tensor, nn

from muomni.audio import HOP_LENGTH, LOG_FLOOR, MelSpectrogram, load_audio, log_mel, mel_to_png, save_wav
from muomni.config import DataConfig, TrainConfig
from muomni.data import corpus_fingerprint, load_corpus
from muomni.distributed import mean_over_ranks
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
from muomni.training import (
    BatchOrder,
    Run,
    add_run_args,
    autocast,
    load_run_config,
    make_grad_scaler,
    maybe_compile,
    write_json,
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
        from muomni.config import ConfigError

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


class Utterances:
    """Decoded audio and its (possibly codec-reconstructed) log-mel per item, loaded once each and kept
    in a bounded least-recently-used cache."""

    def __init__(self, items: list, capacity: int, codec: nn.Module | None = None):
        self.items, self.capacity, self.codec = items, capacity, codec
        self._cache: OrderedDict[int, tuple[np.ndarray, Tensor]] = OrderedDict()
        self._lock = threading.Lock()  # prefetch threads (train.num_workers) fill the cache beside the loop

    def __len__(self) -> int:
        return len(self.items)

    def get(self, i: int) -> tuple[np.ndarray, Tensor]:
        """(wav (N,) float32, input mel (N // 256 + 1, 128) on the CPU)."""
        with self._lock:
            if i in self._cache:
                self._cache.move_to_end(i)
                return self._cache[i]
        wav = load_audio(self.items[i].path)  # decoded outside the lock: threads decode side by side
        mel = log_mel(wav)[0]  # (T, 128)
        if self.codec is not None:
            mel = codec_mel(self.codec, mel)
        with self._lock:
            self._cache[i] = (wav, mel)
            if len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return wav, mel


class Prefetch:
    """Decodes the next step's utterances in ``workers`` threads while the current step trains.

    Only the decoding moves (audio, log-mel, codec reconstruction into the cache): the batch order
    and the segment offsets are still drawn in the loop, so a run with workers sees exactly the
    batches of one without, and resumes at the same position. Threads, not processes: a codec on a
    GPU cannot run in forked workers, and the decoding (libsndfile, STFT, convolutions) leaves the GIL.
    """

    def __init__(self, data: Utterances, workers: int):
        self.data = data
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="decode") if workers > 0 else None

    def next_steps(self, order: BatchOrder, batches: int) -> None:
        """Start decoding the items of the batches after the next ``batches`` ones (order is not advanced)."""
        if self.pool is None:
            return
        ahead = copy.deepcopy(order)
        for _ in range(batches):
            ahead.next()
        for _ in range(batches):
            for i in ahead.next():
                self.pool.submit(self.data.get, i)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


@torch.no_grad()
def codec_mel(codec: nn.Module, mel: Tensor) -> Tensor:
    """The codec's reconstruction of a whole utterance's mel (T, 128): padded with silence to whole
    code frames, encoded, decoded, cropped back to T frames."""
    per = codec.cfg.frames_per_token
    t = mel.shape[0]
    pad = (-t) % per + (per if t < per else 0)
    padded = torch.cat([mel, mel.new_full((pad, mel.shape[1]), math.log(LOG_FLOOR))]) if pad else mel
    device = next(codec.parameters()).device
    return codec.decode(codec.encode(padded.unsqueeze(0).to(device)))[0, :t].float().cpu()


def random_segments(data: Utterances, indices: list[int], segment: int) -> tuple[Tensor, Tensor]:
    """wav (B, segment) and its aligned input mel (B, segment / 256, 128) from random frame offsets.

    Frame f of a centred STFT is centred on sample f * 256, so samples [f*256, f*256 + segment) go
    with frames [f, f + segment/256). Short files are zero-padded, their mel padded with silence.
    """
    frames = segment // HOP_LENGTH
    wavs, mels = [], []
    for i in indices:
        wav, mel = data.get(i)
        start = random.randint(0, max(0, (len(wav) - segment) // HOP_LENGTH))  # in frames
        w = torch.zeros(segment)
        piece = torch.from_numpy(wav[start * HOP_LENGTH:start * HOP_LENGTH + segment])
        w[:len(piece)] = piece
        m = mel.new_full((frames, mel.shape[1]), math.log(LOG_FLOOR))
        piece_mel = mel[start:start + frames]
        m[:len(piece_mel)] = piece_mel
        wavs.append(w)
        mels.append(m)
    return torch.stack(wavs), torch.stack(mels)


@torch.no_grad()
def heldout_mel_l1(vocode, data: Utterances, limit: int, device: torch.device) -> tuple[float, list]:
    """Mean over whole held-out utterances of L1(log-mel(vocode(mel)), log-mel(real)); and the outputs."""
    scores, outputs = [], []
    for i in range(min(limit, len(data))):
        wav, mel = data.get(i)
        fake = vocode(mel.unsqueeze(0).to(device))[0, :len(wav)].float().cpu()  # (N,)
        real_mel = log_mel(wav)[0]
        scores.append(mel_l1(real_mel, log_mel(fake)[0]).item())
        outputs.append((fake, real_mel))
    return float(np.mean(scores)) if scores else float("nan"), outputs


def build_optimizers(module: nn.Module, train: VocoderTrainConfig):
    opt = torch.optim.AdamW(module.parameters(), lr=train.lr, betas=tuple(train.betas),
                            weight_decay=train.weight_decay)
    gamma = train.lr_decay ** (1.0 / train.lr_decay_steps)
    return opt, torch.optim.lr_scheduler.ExponentialLR(opt, gamma)


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

    # ---- data
    corpus = load_corpus(cfg.data)
    codec, fingerprints = None, {"corpus": corpus_fingerprint(cfg.data.path, cfg.data.format)}
    if tc.finetune_codec:
        from muomni.models.codec import codec_hash, load_codec

        codec = load_codec(tc.finetune_codec, device)
        fingerprints["codec"] = codec_hash(codec)
        run.info(f"fine-tuning on mels reconstructed by {tc.finetune_codec}")
    run.record_data(**fingerprints)
    train_data = Utterances(corpus.train, tc.cache_items, codec)
    held_data = Utterances(corpus.heldout, tc.cache_items, codec)
    if not corpus.heldout:
        run.warn(f"{cfg.data.path} has no held-out split (data.heldout = {cfg.data.heldout:g}): held-out metrics "
                 "and samples are not computed and best.pt is not written")
    order = BatchOrder(len(train_data), tc.batch_size, tc.seed, run.rank, run.world)

    # ---- models, optimizers, schedulers, scalers
    generator = Generator(cfg.model).to(device)
    discriminators = Discriminators(cfg.model).to(device)
    opt_g, sched_g = build_optimizers(generator, tc)
    opt_d, sched_d = build_optimizers(discriminators, tc)
    scaler_g, scaler_d = make_grad_scaler(device, tc.amp), make_grad_scaler(device, tc.amp)
    objects = {"generator": generator, "discriminators": discriminators, "opt_g": opt_g, "opt_d": opt_d,
               "sched_g": sched_g, "sched_d": sched_d, "scaler_g": scaler_g, "scaler_d": scaler_d, "order": order}
    run.load_init({"generator": generator, "discriminators": discriminators})
    step = run.restore(run.resume_payload(), objects)
    # One DDP wrapper per optimizer (compiled with train.compile); evaluation, samples and checkpoints
    # use the plain modules.
    generator_ddp = maybe_compile(run.wrap(generator), tc.compile)
    discriminators_ddp = maybe_compile(run.wrap(discriminators), tc.compile)
    discriminators_frozen = maybe_compile(discriminators, tc.compile)
    mel_fn = MelSpectrogram().to(device)
    weights = tc.loss_weights
    run.info(f"{len(train_data)} train / {len(held_data)} held-out utterances; generator "
             f"{sum(p.numel() for p in generator.parameters()) / 1e6:.2f} M params on {device}")

    def evaluate(step: int) -> float:
        generator.eval()
        score, _ = heldout_mel_l1(generator, held_data, tc.eval_items, device)
        generator.train()
        stats = run.read_stats()
        if "griffinlim_mel_l1" not in stats:  # the untrained baseline, once per run, on the same items
            stats["griffinlim_mel_l1"], _ = heldout_mel_l1(mel_to_wav, held_data, tc.eval_items, device)
            run.write_stats(stats)
        run.log(step, {"mel_l1": score, "griffinlim_mel_l1": stats["griffinlim_mel_l1"]}, split="heldout")
        return score

    def write_samples(step: int) -> None:
        generator.eval()
        _, outputs = heldout_mel_l1(generator, held_data, tc.sample_items, device)
        generator.train()
        folder, info = run.sample_dir(step), []
        for k, (fake, real_mel) in enumerate(outputs):
            item = held_data.items[k]
            save_wav(folder / f"{k:02d}_{item.id}.wav", fake)
            fake_mel = log_mel(fake)[0]
            mel_to_png(folder / f"{k:02d}_{item.id}.png", [real_mel, fake_mel], [f"{item.id}: real", f"step {step}"])
            info.append({"id": item.id, "text": item.text, "mel_l1": mel_l1(real_mel, fake_mel).item()})
        write_json(folder / "info.json", {"step": step, "items": info})

    # ---- loop
    last_metric = None
    run.progress(step, tc.steps)
    prefetch = Prefetch(train_data, tc.num_workers)  # train.num_workers threads decode the next step's audio
    while step < tc.steps and not run.stop_requested:
        gan = step >= tc.gan_start_step
        totals: dict[str, Tensor] = {}  # micro-batch means, kept on the device until logged
        prefetch.next_steps(order, tc.grad_accum)
        for _ in range(tc.grad_accum):
            wav, mel = random_segments(train_data, order.next(), tc.segment_size)
            wav, mel = wav.to(device), mel.to(device)  # (B, S), (B, S / 256, 128)
            with autocast(device, tc.amp):
                fake = generator_ddp(mel)  # (B, S)
            losses_g = {"mel": mel_l1(mel_fn(wav), mel_fn(fake.float()))}
            losses_d: dict[str, Tensor] = {}
            if gan:
                with autocast(device, tc.amp):
                    real_scores, real_features = discriminators_ddp(wav)
                    fake_scores, _ = discriminators_ddp(fake.detach())
                losses_d = discriminator_losses(real_scores, fake_scores)
                scaler_d.scale(weighted_total(losses_d, weights) / tc.grad_accum).backward()
                # Frozen discriminators score the fake for the generator: the plain module, since no
                # discriminator gradient (and so no DDP all-reduce) comes out of this pass.
                set_requires_grad(discriminators, False)
                with autocast(device, tc.amp):
                    fake_scores, fake_features = discriminators_frozen(fake)
                set_requires_grad(discriminators, True)
                losses_g["adv"] = generator_adversarial_loss(fake_scores)
                losses_g["fm"] = feature_matching_loss(real_features, fake_features)
            loss_g = weighted_total(losses_g, weights)
            scaler_g.scale(loss_g / tc.grad_accum).backward()
            for k, v in {**losses_g, **losses_d, "loss": loss_g}.items():
                totals[k] = totals.get(k, 0.0) + v.detach() / tc.grad_accum
        norms = {"grad_norm_g": run.optimizer_step(step + 1, opt_g, generator.parameters(), scaler_g, tc.grad_clip,
                                                   loss_g, name="generator").grad_norm}
        if gan:
            loss_d = weighted_total(losses_d, weights)
            norms["grad_norm_d"] = run.optimizer_step(step + 1, opt_d, discriminators.parameters(), scaler_d,
                                                      tc.grad_clip, loss_d, name="discriminators").grad_norm
        sched_g.step()
        if gan:  # the discriminators' schedule starts when they do
            sched_d.step()
        step += 1
        run.step_done()
        if step % tc.log_every == 0:  # every rank: the losses are averaged over them
            norms = {k: float(v) for k, v in norms.items()}
            totals = {k: float(v) for k, v in totals.items()}
            run.log(step, {**mean_over_ranks(totals), **norms, "lr": sched_g.get_last_lr()[0], "gan": float(gan)})
        if run.is_main and len(held_data) and (step % tc.eval_every == 0 or step == tc.steps):
            last_metric = evaluate(step)
        if run.is_main and len(held_data) and (step % tc.sample_every == 0 or step == tc.steps):
            write_samples(step)
        if step % tc.save_every == 0 or step == tc.steps or run.stop_requested:
            run.save(step, objects, metric=last_metric)
    prefetch.close()
    return run.finish(step)


if __name__ == "__main__":
    sys.exit(main())
