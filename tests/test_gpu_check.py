"""bench/gpu_check.py, the script a lent GPU runs, passes its CPU smoke run (toy sizes, same code)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_run_passes_and_writes_its_tables(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu_check

    out = tmp_path / "gpu_results.md"
    assert gpu_check.main(["--smoke", "--out", str(out)]) == 0
    table = out.read_text()
    rows = {r["check"]: r for r in json.loads(out.with_suffix(".json").read_text())["rows"]}
    assert "| train talker_tiny |" in table and "real-time factor" in table
    assert rows["fp16 codec, 20 steps, forced overflow at step 10"]["skipped_steps"] == 1
    assert rows["compiled generate x2"]["recompiles_after_warmup"] == 0
    assert all(r["steps_per_s"] > 0 for k, r in rows.items() if k.startswith("train "))
