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
alone evaluates, writes samples and checkpoints. The stage itself is ``muomni/stages/vocoder.py``; the loop
is ``muomni/stages/loop.py``.
"""

from __future__ import annotations

import argparse
import sys

import muomni  # noqa: F401  (before torch: it sets the OpenMP wait policy torch reads when it loads)

# isort: split
from muomni.stages import loop, vocoder
from muomni.training.cli import add_run_args, load_run_config


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
    cfg = load_run_config(args, vocoder.VocoderRunConfig)
    return loop.train(vocoder, vocoder.build(cfg, args))


if __name__ == "__main__":
    sys.exit(main())
