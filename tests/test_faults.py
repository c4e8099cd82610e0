"""The trainers' fault gallery: each fault a week-long run meets, tried on the codec, the Talker and the vocoder.

Every case resumes a short shared run (checkpoints at steps 1 and 2) with one fault injected in the
first step after the resume, then checks the expected outcome and that the previous checkpoint
still loads. The faults are real where they can be (a real SIGTERM and SIGKILL, real file damage, a
real other-stage checkpoint); a NaN batch and an inf gradient are injected into the real loop at the
point where they would arise. The broken-corpus gallery is in test_reliability.py.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import TINY_CODEC

import train_codec
import train_talker
import train_vocoder
from muomni.checkpoint import CheckpointError, load_checkpoint, step_checkpoints
from muomni.stages import codec as codec_stage
from muomni.stages import talker as talker_stage
from muomni.stages import vocoder as vocoder_stage
from muomni.training.stop import EXIT_STOPPED

ROOT = Path(__file__).resolve().parents[1]
VOCODER_MODEL = {"upsample_initial_channel": 32, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 2]],
                 "mpd_channels": [4, 8, 16, 16], "msd_channels": 8, "msd_max_channels": 16}
STAGES = ("codec", "talker", "vocoder")
MODULES = {"codec": train_codec, "talker": train_talker, "vocoder": train_vocoder}
BASE_STEPS, FINAL_STEPS = 2, 4  # the shared run stops at 2; each case resumes it towards 4
PENDING = {"fault": None}  # the fault the injection points fire once, then forget


@pytest.fixture(autouse=True)
def one_thread_and_own_signals():
    """Tiny tensors: one thread is faster on a busy machine. Run installs SIGINT/SIGTERM handlers in
    this process; pytest gets its own back after each case."""
    threads, saved = torch.get_num_threads(), {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    for s, handler in saved.items():
        signal.signal(s, handler)
    PENDING["fault"] = None


def _fire(kind: str) -> bool:
    if PENDING["fault"] == kind:
        PENDING["fault"] = None
        return True
    return False


# ---------------------------------------------------------------- the stages' command lines


def stage_args(stage: str, out: Path, name: str, steps: int, corpus: Path, talker: dict) -> list[str]:
    common = [f"train.out_dir={out}", f"train.run_name={name}", f"train.steps={steps}", "train.save_every=1",
              "train.keep_last=5", "train.eval_every=1000", "train.sample_every=1000", "train.log_every=1"]
    if stage == "codec":
        return ["--config", str(ROOT / "configs/codec_tiny.json"), "--device", "cpu", "--set",
                f"data.path={corpus}", *TINY_CODEC, *common]
    if stage == "talker":
        return ["--device", "cpu", *talker["args"], "--set", *common]
    config = out / "vocoder_faults.json"
    if not config.is_file():
        out.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps({
            "base": str(ROOT / "configs" / "vocoder_tiny.json"), "data": {"path": str(corpus), "heldout": 2},
            "model": VOCODER_MODEL,
            "train": {"batch_size": 2, "grad_accum": 1, "segment_size": 4096, "gan_start_step": 1,
                      "eval_items": 1, "sample_items": 1}}))
    return ["--config", str(config), "--device", "cpu", "--set", *common]


@pytest.fixture(scope="module")
def base_runs(flite_corpus: Path, tiny_talker: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each stage trained to step 2 with a checkpoint after every step: the run every case starts from."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out, runs = tmp_path_factory.mktemp("fault_base"), {}
    for stage in STAGES:
        assert MODULES[stage].main(stage_args(stage, out, stage, BASE_STEPS, flite_corpus, tiny_talker)) == 0
        runs[stage] = out / stage
    for s, handler in saved.items():
        signal.signal(s, handler)
    return runs


class Case:
    """One stage's copy of its shared run, and the command lines that resume it."""

    def __init__(self, stage: str, base: Path, tmp: Path, corpus: Path, talker: dict):
        self.stage, self.out, self.corpus, self.talker = stage, tmp, corpus, talker
        self.dir = tmp / stage
        shutil.copytree(base, self.dir)

    def args(self, steps: int = FINAL_STEPS, *extra: str) -> list[str]:
        return [*stage_args(self.stage, self.out, self.stage, steps, self.corpus, self.talker), *extra]

    def main(self, *extra: str) -> int:
        return MODULES[self.stage].main(self.args(FINAL_STEPS, *extra))

    def resume(self) -> int:
        return self.main("--resume")

    def steps(self) -> list[int]:
        return [s for s, _ in step_checkpoints(self.dir)]

    def loads(self, step: int) -> dict:
        payload = load_checkpoint(self.dir / f"step_{step:08d}.pt", self.stage)
        assert payload["step"] == step
        return payload


@pytest.fixture
def case(request, base_runs: dict[str, Path], tmp_path: Path, flite_corpus: Path, tiny_talker: dict) -> Case:
    return Case(request.param, base_runs[request.param], tmp_path, flite_corpus, tiny_talker)


# ---------------------------------------------------------------- injection points in the real loops


@pytest.fixture
def injected(monkeypatch: pytest.MonkeyPatch) -> None:
    """Install the injection points: the stage's batch (NaN), the gradient clip (inf gradient, SIGTERM)."""
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(parameters, *args, **kwargs):
        parameters = list(parameters)
        if _fire("inf_gradient"):
            parameters[0].grad.view(-1)[0] = float("inf")
        if _fire("sigterm"):  # a real signal, mid-step: the stop must wait for the step boundary
            os.kill(os.getpid(), signal.SIGTERM)
        return real_clip(parameters, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)

    class PoisonedCodec(codec_stage.CodecModel):  # NaN latents: a diverging encoder
        def __init__(self, cfg):
            super().__init__(cfg)
            self.encoder.register_forward_hook(
                lambda module, args, out: out * float("nan") if module.training and _fire("nan_batch") else None)

    monkeypatch.setattr(codec_stage, "CodecModel", PoisonedCodec)

    real_build = talker_stage.build_talker

    def build_talker(cfg):  # a batch whose forward goes non-finite (the Talker's inputs are integer ids)
        model = real_build(cfg)

        def hook(module, args, kwargs, out):
            if module.training and _fire("nan_batch"):
                out.losses.update({k: v * float("nan") for k, v in out.losses.items()})
            return out

        model.register_forward_hook(hook, with_kwargs=True)
        return model

    monkeypatch.setattr(talker_stage, "build_talker", build_talker)
    real_segments = vocoder_stage.random_segments

    def random_segments(*args, **kwargs):
        wav, mel = real_segments(*args, **kwargs)
        return (wav, mel * float("nan")) if _fire("nan_batch") else (wav, mel)

    monkeypatch.setattr(vocoder_stage, "random_segments", random_segments)


def _bad_records(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["split"] == "bad"]


# ---------------------------------------------------------------- the faults


def nan_batch(case: Case) -> str:
    PENDING["fault"] = "nan_batch"
    assert case.resume() == 0
    final = case.loads(FINAL_STEPS)
    assert final["bad_steps"] >= 1 and [r["step"] for r in _bad_records(case.dir)][0] == BASE_STEPS + 1
    return "step skipped and counted, run completes"


def inf_gradient(case: Case) -> str:
    PENDING["fault"] = "inf_gradient"
    assert case.resume() == 0
    assert case.loads(FINAL_STEPS)["bad_steps"] == 1 and len(_bad_records(case.dir)) == 1
    return "step skipped and counted, run completes"


def sigterm_mid_step(case: Case) -> str:
    PENDING["fault"] = "sigterm"
    assert case.resume() == EXIT_STOPPED
    assert case.steps()[-1] == BASE_STEPS + 1  # the step in progress finished, then saved
    assert json.loads((case.dir / "stats.json").read_text())["ended"]["reason"] == "signal"
    assert case.resume() == 0 and case.steps()[-1] == FINAL_STEPS
    return f"saved at the step boundary, exit {EXIT_STOPPED}; --resume completes"


def sigkill_mid_save(case: Case) -> str:
    # A child process killed between writing its next checkpoint's temp file and renaming it.
    launcher = ("import os, runpy, signal, sys\n"
                "real = os.replace\n"
                "def replace(src, dst, *a, **k):\n"
                "    if os.path.basename(str(dst)).startswith('step_'):\n"
                "        os.kill(os.getpid(), signal.SIGKILL)\n"
                "    return real(src, dst, *a, **k)\n"
                "os.replace = replace\n"
                "sys.argv = sys.argv[1:]\n"
                "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    script = str(ROOT / f"train_{case.stage}.py")
    proc = subprocess.run([sys.executable, "-c", launcher, script, *case.args(FINAL_STEPS, "--resume")], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert case.steps()[-1] == BASE_STEPS  # the half-saved step never became a checkpoint
    assert list(case.dir.glob(".step_*.tmp"))  # its temp file is left behind ...
    assert case.resume() == 0 and case.steps()[-1] == FINAL_STEPS
    assert not list(case.dir.glob(".*.tmp"))  # ... and removed when the run starts again
    return "killed; the previous checkpoint is the newest, --resume completes"


def disk_full_during_save(case: Case, monkeypatch: pytest.MonkeyPatch) -> str:
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(str(dst)).startswith("step_"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(CheckpointError, match="No space left on device; earlier checkpoints are intact"):
        case.resume()
    monkeypatch.setattr(os, "replace", real)
    assert case.steps()[-1] == BASE_STEPS and not list(case.dir.glob(".step_*.tmp"))  # no temp file left behind
    assert case.resume() == 0 and case.steps()[-1] == FINAL_STEPS  # once there is room again
    return "clear error naming the file, no temp file left; --resume completes"


def corrupted_newest(case: Case) -> str:
    newest = case.dir / f"step_{BASE_STEPS:08d}.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    assert case.resume() == 0
    assert case.loads(FINAL_STEPS)["step"] == FINAL_STEPS
    first_resumed = [json.loads(line)["step"] for line in (case.dir / "metrics.jsonl").read_text().splitlines()]
    assert BASE_STEPS in first_resumed  # step 2 was trained again, from step 1
    return "skipped with a warning, resumed from the one before, run completes"


def other_stage_checkpoint(case: Case, base_runs: dict[str, Path]) -> str:
    other = STAGES[(STAGES.index(case.stage) + 1) % len(STAGES)]
    foreign = case.dir / f"step_{BASE_STEPS + 1:08d}.pt"
    shutil.copy(base_runs[other] / f"step_{BASE_STEPS:08d}.pt", foreign)
    before = foreign.read_bytes()
    with pytest.raises(CheckpointError, match=f"this is a {other} checkpoint, but this is a {case.stage} run"):
        case.resume()
    assert foreign.read_bytes() == before
    foreign.unlink()
    with pytest.raises(CheckpointError, match=f"this is a {other} checkpoint, but a {case.stage} checkpoint"):
        MODULES[case.stage].main([*stage_args(case.stage, case.out, "fresh", FINAL_STEPS, case.corpus, case.talker),
                                  "--init-from", str(base_runs[other] / f"step_{BASE_STEPS:08d}.pt")])
    return "refused before training, naming both stages (--resume and --init-from)"


FAULTS: dict[str, Callable] = {
    "nan_batch": nan_batch, "inf_gradient": inf_gradient, "sigterm_mid_step": sigterm_mid_step,
    "sigkill_mid_save": sigkill_mid_save, "disk_full_during_save": disk_full_during_save,
    "corrupted_newest_checkpoint": corrupted_newest, "other_stage_checkpoint": other_stage_checkpoint,
}


@pytest.mark.timeout(600)  # the first case builds the shared runs: 51 s measured on 2 loaded cores
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("case", STAGES, indirect=True)
def test_fault_gallery(case: Case, fault: str, injected, base_runs, monkeypatch):
    kwargs = {"monkeypatch": monkeypatch} if fault == "disk_full_during_save" else {}
    if fault == "other_stage_checkpoint":
        kwargs = {"base_runs": base_runs}
    outcome = FAULTS[fault](case, **kwargs)
    assert outcome
    # whatever happened, the checkpoint before the fault still loads
    previous = BASE_STEPS - 1 if fault == "corrupted_newest_checkpoint" else BASE_STEPS
    case.loads(previous)


# ---------------------------------------------------------------- a skipped step leaves the codebooks alone


def test_nan_latents_leave_every_codebook_buffer_bit_identical(flite_corpus: Path, tmp_path: Path, monkeypatch):
    """NaN latents for one step (the step is skipped): every codebook buffer is bit-identical before and
    after it, while an accepted step does change them; training then goes on improving."""
    poison_at, steps = 10, 30
    snapshots: list[dict[str, torch.Tensor]] = []

    class Watched(codec_stage.CodecModel):
        def __init__(self, cfg):
            super().__init__(cfg)
            calls = [0]

            def hook(module, args, out):
                if not module.training:
                    return None
                calls[0] += 1
                if calls[0] in (poison_at, poison_at + 1, poison_at + 2):  # before steps 10, 11, 12 touch them
                    snapshots.append({k: v.clone() for k, v in self.rvq.state_dict().items()})
                return out * float("nan") if calls[0] == poison_at else None

            self.encoder.register_forward_hook(hook)

    monkeypatch.setattr(codec_stage, "CodecModel", Watched)
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        args = stage_args("codec", tmp_path, "nan", steps, flite_corpus, {})
        assert train_codec.main([*args, "--set", "train.save_every=1000"]) == 0
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    before, after_skip, after_good = snapshots
    assert before.keys() == after_skip.keys() and any("embed" in k for k in before)
    changed_by_skip = [k for k in before if not torch.equal(before[k], after_skip[k])]
    changed_by_good = [k for k in before if not torch.equal(after_skip[k], after_good[k])]
    assert changed_by_skip == []
    assert any(k.endswith("codebook.embed") for k in changed_by_good)  # the check above could have failed
    records = [json.loads(line) for line in (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "bad"] == [poison_at]
    assert load_checkpoint(tmp_path / "nan" / f"step_{steps:08d}.pt")["bad_steps"] == 1
    loss = {r["step"]: r["loss"] for r in records if r["split"] == "train"}
    assert all(torch.isfinite(torch.tensor(v)) for s, v in loss.items() if s != poison_at)
    early = sum(loss[s] for s in range(poison_at - 4, poison_at)) / 4
    late = sum(loss[s] for s in range(steps - 3, steps + 1)) / 4
    assert late < early, (early, late)


# ---------------------------------------------------------------- no held-out split


@pytest.mark.parametrize("stage", STAGES)
def test_without_a_heldout_split_no_heldout_metrics_are_made_up(stage: str, flite_corpus: Path, tiny_talker: dict,
                                                                tmp_path: Path, capsys):
    """data.heldout = 0: the trainer says so once and logs no held-out metric (it used to score the first
    training item under the held-out name)."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        args = stage_args(stage, tmp_path, "noheld", 2, flite_corpus, tiny_talker)
        assert MODULES[stage].main([*args, "data.heldout=0", "train.eval_every=1"]) == 0
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    err = capsys.readouterr().err
    assert err.count("no held-out split") + err.count("no usable held-out split") == 1, err[-2000:]
    records = [json.loads(line) for line in (tmp_path / "noheld" / "metrics.jsonl").read_text().splitlines()]
    assert records and not [r for r in records if r["split"] == "heldout"]
    assert not (tmp_path / "noheld" / "best.pt").exists() and step_checkpoints(tmp_path / "noheld")
