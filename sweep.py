"""Hyper-parameter sweeps: every combination of a grid as a short trial in its own run folder.

    python sweep.py --config configs/demo/talker.json --grid grid.json --steps 200 [--parallel 2]

GRID.json maps ``section.key`` to a list of values, e.g.
``{"train.lr": [1e-3, 3e-4], "model.decoder_fraction": [0.0625, 0.25]}``. Each trial runs the
stage's own script (train_codec.py, train_talker.py or train_vocoder.py, chosen from the config's
name or --script) with ``--set`` overrides into ``<out_dir>/<sweep name>/<trial>``; a trial that
already finished is not run again. The table, ranked by the last held-out ``loss``, is printed
and written to ``<out_dir>/<sweep name>/sweep.json`` and ``sweep.md``. A failed trial is listed
as failed, with the end of its error output, never dropped.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from muomni.config import read_json_with_base
from muomni.files import write_json
from muomni.training.log import read_metrics

SCRIPTS = ("codec", "talker", "vocoder")


def trial_name(overrides: dict[str, object]) -> str:
    parts = [f"{key.split('.')[-1]}={json.dumps(value).replace(' ', '')}" for key, value in overrides.items()]
    return ",".join(parts).replace("/", "_").replace('"', "") or "default"


def last_eval(run_dir: Path, metric: str) -> float | None:
    if not (run_dir / "metrics.jsonl").is_file():
        return None
    value = None
    for record in read_metrics(run_dir):
        if record.get("split") in ("heldout", "eval") and isinstance(record.get(metric), (int, float)):
            value = float(record[metric])
    return value


def run_trial(script: str, config: str, sweep_dir: Path, overrides: dict[str, object], steps: int,
              metric: str) -> dict[str, object]:
    name = trial_name(overrides)
    run_dir = sweep_dir / name
    done = run_dir / "trial.json"
    if done.is_file():
        result = json.loads(done.read_text())
        if result.get("status") == "finished":
            return {**result, "skipped": True}
    sets = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    sets += [f"train.steps={steps}", f"train.out_dir={sweep_dir}", f"train.run_name={name}",
             f"train.save_every={steps}", f"train.eval_every={steps}", f"train.sample_every={10 * steps}"]
    cmd = [sys.executable, script, "--config", config, "--resume", "--set", *sets]
    print(f"[sweep] {name}: {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    result: dict[str, object] = {"trial": name, "overrides": overrides, "returncode": proc.returncode}
    if proc.returncode == 0:
        result.update(status="finished", **{metric: last_eval(run_dir, metric)})
    else:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        result.update(status="failed", error=" | ".join(tail))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(done, result)
    return result


def table(results: list[dict[str, object]], metric: str) -> str:
    def key(r):
        value = r.get(metric)
        return (r["status"] != "finished", value if isinstance(value, float) else math.inf)

    lines = [f"| rank | trial | status | held-out {metric} |", "|---|---|---|---|"]
    for i, r in enumerate(sorted(results, key=key), 1):
        value = r.get(metric)
        shown = f"{value:.4f}" if isinstance(value, float) else (r.get("error", "") if r["status"] == "failed" else "")
        lines.append(f"| {i} | {r['trial']} | {r['status']}{' (cached)' if r.get('skipped') else ''} | {shown} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--grid", required=True, help="JSON mapping section.key to a list of values")
    parser.add_argument("--steps", type=int, required=True, help="training steps per trial")
    parser.add_argument("--parallel", type=int, default=1, help="trials run at once")
    parser.add_argument("--script", help="stage script (default: from the config's name)")
    parser.add_argument("--metric", default="loss", help="held-out metric to rank by (lower is better)")
    parser.add_argument("--name", help="sweep folder name (default: the grid file's stem)")
    args = parser.parse_args(argv)

    grid = json.loads(Path(args.grid).read_text())
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        parser.error(f"{args.grid}: expected an object mapping section.key to a non-empty list of values")
    script = args.script or next((f"train_{s}.py" for s in SCRIPTS if s in Path(args.config).stem), None)
    if script is None:
        parser.error(f"cannot tell the stage of {args.config}; pass --script train_talker.py (or codec/vocoder)")
    out_dir = read_json_with_base(args.config).get("train", {}).get("out_dir", "checkpoints")
    sweep_dir = Path(out_dir) / "sweeps" / (args.name or Path(args.grid).stem)
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    print(f"[sweep] {len(combos)} trials of {args.steps} steps with {script} into {sweep_dir}")

    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        results = list(pool.map(lambda o: run_trial(script, args.config, sweep_dir, o, args.steps, args.metric),
                                combos))
    text = table(results, args.metric)
    write_json(sweep_dir / "sweep.json", results)
    (sweep_dir / "sweep.md").write_text(text + "\n")
    print(text)
    return 0 if any(r["status"] == "finished" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
