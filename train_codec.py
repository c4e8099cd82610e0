"""Train the RVQ mel codec (docs/DESIGN.md §4): log-mel patches <-> n_q codes per 80 ms code frame.

    python train_codec.py --config configs/codec_tiny.json
    python train_codec.py --config configs/codec_tiny.json --resume
    python train_codec.py --config configs/codec_base.json --set train.steps=2000 model.codebook_size=256

Batches are random crops of ``train.crop_frames`` code frames; the per-bin mean/std of the training mels is
kept in the run's stats.json and in the codec's buffers. Held-out metrics every ``eval_every`` steps, original
vs reconstructed mel pictures and Griffin-Lim wavs every ``sample_every``. Under ``torchrun --nproc_per_node N``
each rank trains on its share of the global ``train.batch_size`` (DDP). The stage itself is
``muomni/stages/codec.py``; the loop is ``muomni/stages/loop.py``.
"""

from __future__ import annotations

import argparse
import sys

import muomni  # noqa: F401  (before torch: it sets the OpenMP wait policy torch reads when it loads)

# isort: split
from muomni.stages import codec, loop
from muomni.training.cli import add_run_args, load_run_config


def main(argv: list[str] | None = None) -> int:
    args = add_run_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0])).parse_args(argv)
    cfg = load_run_config(args, codec.CodecRun)
    return loop.train(codec, codec.build(cfg, args))


if __name__ == "__main__":
    sys.exit(main())
