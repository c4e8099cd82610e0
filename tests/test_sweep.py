"""sweep.py: every grid combination as a trial, finished trials skipped on rerun, failures reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_CODEC

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(240)  # 32-42 s measured on 2 cores under a load of ~8
def test_sweep_ranks_skips_and_reports_failures(flite_corpus: Path, tmp_path: Path):
    base = tmp_path / "codec_sweep.json"
    sets = dict(s.split("=", 1) for s in TINY_CODEC)
    model = {k.split(".")[1]: json.loads(v) for k, v in sets.items() if k.startswith("model.")}
    train = {k.split(".")[1]: json.loads(v) for k, v in sets.items() if k.startswith("train.")}
    base.write_text(json.dumps({"base": str(ROOT / "configs" / "codec_tiny.json"), "data": {"path": str(flite_corpus)},
                                "model": model, "train": {**train, "out_dir": str(tmp_path / "runs")}}))
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"train.lr": [1e-3], "model.codebook_size": [16, -1]}))  # -1 fails
    cmd = [sys.executable, "sweep.py", "--config", str(base), "--grid", str(grid), "--steps", "2", "--metric", "mse"]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-2000:]
    results = json.loads((tmp_path / "runs" / "sweeps" / "grid" / "sweep.json").read_text())
    status = {r["trial"]: r["status"] for r in results}
    assert len(status) == 2 and sorted(status.values()) == ["failed", "finished"]
    finished = [r for r in results if r["status"] == "finished"]
    assert all(isinstance(r["mse"], float) for r in finished)
    assert all("codebook_size" in r["error"] or "Error" in r["error"] for r in results if r["status"] == "failed")
    table = first.stdout.split("| rank |")[1]
    assert table.index("finished") < table.index("failed")  # failures ranked last, never dropped
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert second.stdout.count("(cached)") == 1  # a finished trial is not run again; a failed one is retried
