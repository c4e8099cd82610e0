"""``python -m muomni plot RUN_DIR [RUN_DIR ...]``, ``python -m muomni export CKPT --out DIR`` (safetensors),
``python -m muomni export TALKER --onnx DIR [--vocoder CKPT]`` (ONNX graphs for ``muomni.onnx_runtime``) and
``python -m muomni evaluate {codec,vocoder,tts} ...`` (``muomni.eval.evaluate``, which parses its own arguments)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .checkpoint import CheckpointError, load_checkpoint
from .export import export_checkpoint
from .plot import plot_run


def build_parser() -> argparse.ArgumentParser:
    """The plot and export subcommands; evaluate is listed for -h only, as it parses its own arguments."""
    parser = argparse.ArgumentParser(prog="python -m muomni", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("evaluate", add_help=False, help="score a codec, vocoder or Talker on held-out sentences "
                                                    "(python -m muomni evaluate -h)")
    plot = sub.add_parser("plot", help="loss-curve PNGs from a run folder's metrics.jsonl")
    plot.add_argument("run_dir", nargs="+")
    plot.add_argument("--out", help="folder for the PNGs (default: RUN_DIR/plots; with several runs, "
                                    "OUT/<run folder name>)")
    export = sub.add_parser("export", help="weights as safetensors plus config and vocabulary as JSON, or with "
                                           "--onnx a Talker's inference chain as ONNX graphs")
    export.add_argument("checkpoint")
    target = export.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="folder for weights.safetensors and checkpoint.json")
    target.add_argument("--onnx", help="folder for the ONNX graphs and frontend.json (a Talker checkpoint)")
    export.add_argument("--vocoder", help="--onnx: a HiFi-GAN checkpoint to export too (else the runtime uses "
                                          "Griffin-Lim)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand -> exit status (2 for a checkpoint it cannot read)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["evaluate"]:
        from .eval.evaluate import main as evaluate

        evaluate(argv[1:])
        return 0
    args = build_parser().parse_args(argv)

    if args.command == "plot":
        several = len(args.run_dir) > 1
        for run in args.run_dir:
            out = f"{args.out}/{Path(run).name}" if args.out and several else args.out
            for path in plot_run(run, out):
                print(path)
    elif args.onnx:
        from .config import ConfigError
        from .load import load_talker, load_vocoder
        from .onnx_export import export_onnx

        try:
            bundle = load_talker(args.checkpoint)
            vocoder = load_vocoder(args.vocoder) if args.vocoder else None
            print(export_onnx(bundle, args.onnx, vocoder))
        except (CheckpointError, ConfigError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    else:
        try:
            payload = load_checkpoint(args.checkpoint)
        except CheckpointError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(export_checkpoint(payload, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
