"""Train the Talker (text -> RVQ codes) on a corpus pre-tokenized by a trained codec (docs/DESIGN.md §5).

    python -m muomni.data.tokenize --codec checkpoints/codec_tiny/best.pt --data data/demo
    python train_talker.py --config configs/talker_tiny.json [--resume] [--init-from CKPT] [--set k=v ...]

The data comes first: its vocabulary, speakers, the codec's codebooks and the fixed lengths fill the model
section of the run's config before the run folder is made. Every checkpoint carries the codec (config +
weights) and the text vocabulary, so that ``muomni.load.load_talker`` synthesizes from it alone. Under
``torchrun --nproc_per_node N`` each rank trains on its share of the global batch (DDP); rank 0 alone evaluates
and writes. The stage itself is ``muomni/stages/talker.py``; the loop is ``muomni/stages/loop.py``.
"""

from __future__ import annotations

import argparse
import sys

import muomni  # noqa: F401  (before torch: it sets the OpenMP wait policy torch reads when it loads)

# isort: split
from muomni.stages import loop, talker
from muomni.training.cli import add_run_args, load_run_config


def main(argv: list[str] | None = None) -> int:
    args = add_run_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0])).parse_args(argv)
    cfg = load_run_config(args, talker.TalkerRun)
    return loop.train(talker, talker.build(cfg, args))


if __name__ == "__main__":
    sys.exit(main())
