"""Train the HiFi-GAN vocoder (docs/DESIGN.md §6): log-mel -> 16 kHz wav.

    python train_vocoder.py --config configs/vocoder_tiny.json [--resume] [--set train.steps=2000]
    python train_vocoder.py --config configs/vocoder_tiny.json --finetune-codec checkpoints/codec_tiny/best.pt \
        --init-from checkpoints/vocoder_tiny/best.pt --set train.run_name=vocoder_ft
    python train_vocoder.py --config configs/vocoder_tiny.json --finetune-talker checkpoints/talker_tiny \
        --init-from checkpoints/vocoder_tiny/best.pt --set train.run_name=vocoder_tts
    python train_vocoder.py --config configs/vocoder_universal.json --init-from universal   # CPU, 15 min

Random frame-aligned segments of ``segment_size`` samples (shorter files zero-padded), generator
and discriminators with their own AdamW, exponential decay and grad scaler (Kong et al. 2020).
The first ``gan_start_step`` steps train the generator on the mel L1 alone, which converges far
faster on a CPU; then the adversarial and feature-matching losses join, weighted from
``train.loss_weights``. With --finetune-codec the generator hears codec-reconstructed mels
and is scored against the real audio, so it learns the codec's artefacts; with --finetune-talker it
hears the mels synthesis would make from that Talker (teacher-forced on each utterance's codes and decoded
as ``train.mel_from`` says, synthesis's ``mel_from``), so it learns the artefacts it will be fed.

``--init-from universal`` starts the generator from HiFi-GAN V1's pretrained universal weights (the
'universal' extra; the model section must be that architecture behind a mel adapter, as
configs/vocoder_universal.json, a CPU fine-tune within ``train.max_minutes``) and the discriminators fresh:
the package ships none. The from-scratch presets (vocoder_tiny, vocoder_v1) remain the GPU recipes.

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
from muomni.data.tokenize import mel_cache_dir
from muomni.data.vocoder import AudioCache, CodecMels, Prefetch, TalkerMels, random_segments
from muomni.distributed import mean_over_ranks
from muomni.gan import adapter_micro_batch, build_gan, micro_batch, optimizer_steps
from muomni.load import load_codec, load_talker
from muomni.metrics import heldout_mel_l1
from muomni.models.codec import codec_hash
from muomni.models.griffinlim import mel_to_wav
from muomni.models.hifigan import HiFiGANConfig
from muomni.models.universal import UniversalMel, universal_mismatch
from muomni.pretrained import is_pretrained_name, parse_name, universal_state_dict, weights_path
from muomni.samples import vocoder_samples
from muomni.speech_check import SpeechCheck, vocoder_wavs
from muomni.synthesis_config import MEL_FROM
from muomni.training.cli import add_run_args, load_run_config
from muomni.training.device import make_grad_scaler
from muomni.training.run import Run
from muomni.training.schedule import BatchOrder


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

    def __post_init__(self):
        super().__post_init__()
        if self.segment_size % HOP_LENGTH or self.segment_size < HOP_LENGTH:
            raise ConfigError(f"train.segment_size ({self.segment_size}) must be a positive multiple of {HOP_LENGTH}")
        for key in ("mel", "adv", "fm", "d_real", "d_fake"):
            if key not in self.loss_weights:
                raise ConfigError(f"train.loss_weights lacks '{key}' (needs mel, adv, fm, d_real, d_fake)")
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


@dataclass
class VocoderRunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: HiFiGANConfig = field(default_factory=HiFiGANConfig)
    train: VocoderTrainConfig = field(default_factory=VocoderTrainConfig)


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


def init_from_pretrained(run: Run, name: str, model: HiFiGANConfig, gan) -> None:
    """--init-from universal[:adapter]: the generator from the shipped universal weights (strict: every key),
    the discriminators left fresh; step 0."""
    mismatch = universal_mismatch(model)
    adapter = parse_name(name)
    if ":" in name and adapter != model.adapter:
        mismatch.append(f"adapter: {model.adapter!r} != {adapter!r} named by --init-from {name}")
    if mismatch:
        raise ConfigError(f"--init-from {name} needs the model section of HiFi-GAN V1's universal generator behind "
                          "a mel adapter (configs/vocoder_universal.json): " + "; ".join(mismatch))
    missing, unexpected = gan.generator.load_state_dict(universal_state_dict(), strict=False)
    missing = [k for k in missing if not k.startswith("adapter.refine.")]  # the adapter's correction starts untrained
    if missing or unexpected:
        raise ConfigError(f"--init-from {name}: the shipped weights do not fit the generator (missing {missing[:4]}, "
                          f"unexpected {unexpected[:4]})")
    run.info(f"initialised the generator from the pretrained universal HiFi-GAN ({weights_path()}), adapter "
             f"{model.adapter}; discriminators fresh (none ship with it); starting at step 0")


def main(argv: list[str] | None = None) -> int:
    parser = add_run_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--finetune-codec", metavar="CODEC_CKPT",
                        help="train on this codec's reconstructed mels (sets train.finetune_codec)")
    parser.add_argument("--finetune-talker", metavar="TALKER_CKPT",
                        help="train on the mels synthesis makes from this Talker, teacher-forced and decoded as "
                             "train.mel_from says (sets train.finetune_talker)")
    args = parser.parse_args(argv)
    if args.finetune_codec:
        args.set.append(f"train.finetune_codec={args.finetune_codec}")
    if args.finetune_talker:
        args.set.append(f"train.finetune_talker={args.finetune_talker}")
    cfg: VocoderRunConfig = load_run_config(args, VocoderRunConfig)
    run = Run(cfg, "vocoder", args)
    tc, device = cfg.train, run.device
    adapter_only = tc.trainable == "adapter"
    if adapter_only and not cfg.model.adapter_refine:
        raise ConfigError("train.trainable = 'adapter' trains the adapter's correction: set model.adapter_refine "
                          "(its channels, e.g. 256) and model.adapter")

    # ---- data: audio and its (codec-reconstructed) mel per item, the batch order
    corpus = load_corpus(cfg.data)
    source, fingerprints = None, {"corpus": corpus_fingerprint(cfg.data.path, cfg.data.format)}
    if tc.finetune_codec:
        codec = load_codec(tc.finetune_codec, device)
        source, fingerprints["codec"] = CodecMels(codec), codec_hash(codec)
        run.info(f"fine-tuning on mels reconstructed by {tc.finetune_codec}")
    if tc.finetune_talker:
        bundle = load_talker(tc.finetune_talker, device)
        source = TalkerMels(bundle, tc.mel_from)
        fingerprints.update(codec=codec_hash(bundle.codec), talker=f"{tc.finetune_talker}@{bundle.step}")
        run.info(f"fine-tuning on the mels synthesis makes from {tc.finetune_talker} (teacher-forced, "
                 f"mel_from {tc.mel_from})")
    run.record_data(**fingerprints)
    train_data = AudioCache(corpus.train, tc.cache_items, source)
    held_data = AudioCache(corpus.heldout, tc.cache_items, source)
    if not corpus.heldout:
        run.warn(f"{cfg.data.path} has no held-out split (data.heldout = {cfg.data.heldout:g}): held-out metrics "
                 "and samples are not computed and best.pt is not written")
    order = BatchOrder(len(train_data), tc.batch_size, tc.seed, run.rank, run.world)

    # ---- models, optimizers, schedulers, scalers
    scalers = make_grad_scaler(device, tc.amp), make_grad_scaler(device, tc.amp)  # generator's, discriminators'
    gan = build_gan(cfg.model, tc, tc.lr_decay, tc.lr_decay_steps, device, scalers)
    objects = gan.checkpoint_objects(order)
    if is_pretrained_name(args.init_from):
        init_from_pretrained(run, args.init_from, cfg.model, gan)
    else:
        run.load_init({"generator": gan.generator, "discriminators": gan.discriminators})
    step = run.restore(run.resume_payload(), objects)
    gan.wrap(run.wrap, tc.compile, tc.adapter_loss if adapter_only else "")
    mel_fn = MelSpectrogram().to(device)
    target_fn = UniversalMel().to(device) if adapter_only and tc.adapter_loss == "mel" else None
    run.info(f"{len(train_data)} train / {len(held_data)} held-out utterances; generator "
             f"{sum(p.numel() for p in gan.generator.parameters()) / 1e6:.2f} M params on {device}")

    # ---- loop
    last_metric = None
    speech = SpeechCheck(run, tc, corpus.heldout, mel_cache_dir(cfg.data.path))
    run.progress(step, tc.steps)
    prefetch = Prefetch(train_data, tc.num_workers)  # train.num_workers threads decode the next step's audio
    while step < tc.steps and not run.stop_requested:
        adversarial = step >= tc.gan_start_step and not adapter_only
        totals: dict[str, Tensor] = {}  # micro-batch means, kept on the device until logged
        prefetch.next_steps(order, tc.grad_accum)
        for _ in range(tc.grad_accum):
            wav, mel = random_segments(train_data, order.next(), tc.segment_size)
            if adapter_only:
                losses_g, losses_d, loss_g = adapter_micro_batch(gan, wav.to(device), mel.to(device), target_fn, tc)
            else:
                losses_g, losses_d, loss_g = micro_batch(gan, wav.to(device), mel.to(device), mel_fn, tc,
                                                         tc.loss_weights, device, adversarial)
            for k, v in {**losses_g, **losses_d, "loss": loss_g}.items():
                totals[k] = totals.get(k, 0.0) + v.detach() / tc.grad_accum
        norms = optimizer_steps(run, gan, step, tc, tc.loss_weights, loss_g, losses_d, adversarial)
        step += 1
        run.step_done()
        if step % tc.log_every == 0:  # every rank: the losses are averaged over them
            norms = {k: float(v) for k, v in norms.items()}
            totals = {k: float(v) for k, v in totals.items()}
            run.log(step, {**mean_over_ranks(totals), **norms, "lr": gan.sched_g.get_last_lr()[0],
                           "gan": float(adversarial)})
        last = step == tc.steps or run.stop_requested  # the step count, the time budget or a signal
        if run.is_main and len(held_data) and (step % tc.eval_every == 0 or last):  # so a stopped run has a best.pt
            last_metric = evaluate(run, step, gan.generator, held_data, tc, device)
        if run.is_main and len(held_data) and (step % tc.sample_every == 0 or step == tc.steps):
            vocoder_samples(run.sample_dir(step), step, gan.generator, held_data, tc.sample_items, device)
        wer = speech(step, last, lambda items: vocoder_wavs(gan.generator, items, device))
        if step % tc.save_every == 0 or last or speech.saves(step, last):
            run.save(step, objects, metric=speech.metric(last_metric, wer))
    prefetch.close()
    return run.finish(step)


if __name__ == "__main__":
    sys.exit(main())
