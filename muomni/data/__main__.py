"""``python -m muomni.data <command>``: corpus tools. ``check DIR`` reports every unusable item."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from muomni.config import DataConfig
from muomni.data.check import check_report, duration_percentiles
from muomni.data.corpus import FORMATS, read_corpus


def check(args: argparse.Namespace) -> int:
    """Print each bad item with its reason, then a summary; exit status 1 when nothing is usable."""
    try:
        items = read_corpus(args.path, args.format)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    report = check_report(items, args.min_seconds, args.max_seconds)
    for name, reason in report.bad:
        print(f"BAD  {name}: {reason}")
    speakers = sorted({it.speaker for it in report.good})
    summary = {
        "path": str(args.path),
        "items": len(items),
        "usable": len(report.good),
        "bad": len(report.bad),
        "bad_kinds": dict(report.kinds()),
        "hours": round(sum(it.duration for it in report.good) / 3600, 4),
        "speakers": speakers,
        "sample_rates": {str(sr): n for sr, n in sorted(report.sample_rates.items())},
        "duration_seconds": duration_percentiles(report.good),
    }
    print(f"items {summary['items']}  usable {summary['usable']}  bad {summary['bad']}"
          + (f" ({report.summary_counts()})" if report.bad else ""))
    print(f"hours {summary['hours']:.3f}  speakers {len(speakers)}"
          + (f" ({', '.join(s or '(unnamed)' for s in speakers)})" if speakers else ""))
    print("sample rates " + ", ".join(f"{sr} Hz x {n}" for sr, n in summary["sample_rates"].items()))
    print("duration " + "  ".join(f"{k} {v:.2f} s" for k, v in summary["duration_seconds"].items()))
    if args.json:
        summary["bad_items"] = [{"item": name, "reason": reason} for name, reason in report.bad]
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 0 if report.good else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m muomni.data", description="corpus tools")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("check", help="read every file of a corpus and report unusable items")
    p.add_argument("path", type=Path, help="corpus folder (LJSpeech or wavs + transcripts) or filelist")
    p.add_argument("--format", default="auto", choices=FORMATS)
    defaults = DataConfig()
    p.add_argument("--min-seconds", type=float, default=defaults.min_seconds,
                   help=f"shorter items are unusable (default: data.min_seconds, {defaults.min_seconds})")
    p.add_argument("--max-seconds", type=float, default=defaults.max_seconds,
                   help=f"longer items are unusable (default: data.max_seconds, {defaults.max_seconds})")
    p.add_argument("--json", metavar="OUT", help="also write the summary and every bad item as JSON")
    p.set_defaults(func=check)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
