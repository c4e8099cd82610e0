"""The command line every stage script shares: --config, --resume, --init-from, --set, --device."""

from __future__ import annotations

import argparse
from typing import Any

from muomni.config import load_config

from .stop import EXIT_STATUS_HELP


def add_run_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.epilog = EXIT_STATUS_HELP
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", required=True, help="JSON config (may name a 'base' config)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint")
    parser.add_argument("--init-from", metavar="CKPT", help="load weights only and start at step 0")
    parser.add_argument("--set", metavar="K=V", nargs="+", action="extend", default=[],
                        help="override config values, e.g. --set train.lr=1e-3 model.n_layers=2")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: train.device)")
    return parser


def load_run_config(args: argparse.Namespace, schema: type) -> Any:
    return load_config(args.config, schema, args.set)
