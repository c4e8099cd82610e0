"""What the benchmarks that score real speech share: where the demo corpus is, and the row they write when
it is not there yet (``make demo`` builds it). Not a benchmark itself: run_all.py runs bench_*.py only."""

from __future__ import annotations

import os
from pathlib import Path

from muomni.config import read_json_with_base

ROOT = Path(__file__).resolve().parent.parent
MISSING = "not measured: needs the demo corpus, run make demo first"


def demo_corpus(env: str) -> Path | None:
    """The demo corpus folder (the demo codec config's data.path; the environment variable ``env`` names
    another), or None while it has no metadata.csv."""
    data = ROOT / os.environ.get(env, read_json_with_base(ROOT / "configs" / "demo" / "codec.json")["data"]["path"])
    return data if (data / "metadata.csv").is_file() else None


def not_measured(row: dict, metric: str = MISSING) -> dict:
    """``row`` as a benchmark writes it when there is nothing to measure: no value, no baseline, no target."""
    return {"unit": "", **row, "metric": metric, "value": None, "baseline_value": None, "target": None}
