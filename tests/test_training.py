"""Run machinery: atomic checkpoints, resume from the newest valid one, exact loss curves, bad steps."""

import argparse
import json
import os
import pickle
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from muomni.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, step_checkpoints
from muomni.config import ConfigError, DataConfig, TrainConfig, apply_overrides
from muomni.training.run import Run
from muomni.training.schedule import BatchOrder, lr_lambda
from muomni.training.stop import TrainingError


@dataclass
class ToyModelConfig:
    width: int = 16


@dataclass
class ToyRun:
    data: DataConfig = field(default_factory=DataConfig)
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _args(resume=False, init_from=None):
    return argparse.Namespace(config="toy.json", resume=resume, init_from=init_from, set=[], device="cpu")


def _cfg(tmp_path, steps=12, save_every=4, **train):
    sets = [f"train.out_dir={tmp_path}", "train.run_name=toy", f"train.steps={steps}",
            f"train.save_every={save_every}", "train.batch_size=8", "train.warmup_steps=2"]
    return apply_overrides(ToyRun(), sets + [f"train.{k}={v}" for k, v in train.items()])


def _train(cfg, resume=False, stop_at=None, nan_at=()):
    """A toy loop with dropout and shuffled batches, so RNG and data position both matter."""
    run = Run(cfg, "toy", _args(resume))
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    model = nn.Sequential(nn.Linear(4, cfg.model.width), nn.Dropout(0.2), nn.ReLU(), nn.Linear(cfg.model.width, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.train))
    order = BatchOrder(len(x), cfg.train.batch_size, cfg.train.seed)
    objects = {"model": model, "optim": opt, "sched": sched, "order": order}
    step = run.restore(run.checkpoints.resume_payload(), objects)
    losses = {}
    while step < cfg.train.steps:
        idx = order.next()
        loss = ((model(x[idx]).squeeze(-1) - y[idx]) ** 2).mean()
        if step + 1 in nan_at:
            loss = loss * float("nan")
        opt.zero_grad()
        loss.backward()
        run.guard.optimizer_step(step + 1, opt, model.parameters(), clip=1.0, loss=loss)
        sched.step()
        step += 1
        losses[step] = loss.item()
        run.log(step, {"loss": loss.item()})
        if step % cfg.train.save_every == 0:
            run.save(step, objects, metric=loss.item())
        if step == stop_at:
            break
    run.close()
    return losses, model


def test_resume_reproduces_uninterrupted_losses(tmp_path):
    full, full_model = _train(_cfg(tmp_path / "a"))
    cfg = _cfg(tmp_path / "b")
    _train(cfg, stop_at=6)  # killed after step 6: the newest checkpoint is step 4
    resumed, resumed_model = _train(cfg, resume=True)
    assert min(resumed) == 5
    for step, loss in resumed.items():
        assert abs(loss - full[step]) < 1e-6, step
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    lines = (tmp_path / "b" / "toy" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 12  # steps 5 and 6 logged before the kill were dropped on resume, not doubled


def test_keep_last_and_best(tmp_path):
    cfg = _cfg(tmp_path, steps=20, save_every=2, keep_last=3)
    _train(cfg)
    assert [s for s, _ in step_checkpoints(tmp_path / "toy")] == [16, 18, 20]
    best = load_checkpoint(tmp_path / "toy" / "best.pt", "toy")
    assert best["step"] in range(2, 21, 2) and best["config"]["model"]["width"] == 16


def test_interrupted_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "step_00000001.pt"
    save_checkpoint(path, {"stage": "toy", "step": 1, "w": torch.ones(3)})

    def broken_save(obj, f, *a, **k):
        f.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match="intact"):
        save_checkpoint(path, {"stage": "toy", "step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == [path.name]  # the temp file is gone


def test_damaged_newest_checkpoint_is_skipped(tmp_path, capsys):
    cfg = _cfg(tmp_path, steps=8, save_every=4)
    _train(cfg)
    newest = tmp_path / "toy" / "step_00000008.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # half-written
    run = Run(cfg, "toy", _args(resume=True))
    assert run.checkpoints.resume_payload()["step"] == 4
    assert "step_00000008.pt" in capsys.readouterr().err


class Evil:
    def __reduce__(self):
        return (print, ("this ran at load time",))


@pytest.mark.parametrize("content,needle", [
    (lambda p: torch.save({"stage": "toy", "obj": Evil()}, p), "refused"),
    (lambda p: p.write_bytes(pickle.dumps({"a": 1})[:5]), "damaged"),
    (lambda p: torch.save({"stage": "codec", "step": 1}, p), "codec checkpoint"),
    (lambda p: torch.save([1, 2, 3], p), "not a muomni checkpoint"),
], ids=["pickled-object", "garbage", "other-stage", "not-muomni"])
def test_unsafe_or_wrong_checkpoints_are_refused(tmp_path, content, needle):
    path = tmp_path / "x.pt"
    content(path)
    with pytest.raises(CheckpointError, match=needle) as err:
        load_checkpoint(path, "toy")
    assert str(path) in str(err.value)


def test_fresh_run_refuses_to_clobber_and_model_change_refuses_resume(tmp_path):
    _train(_cfg(tmp_path, steps=4))
    with pytest.raises(TrainingError, match="--resume"):
        Run(_cfg(tmp_path, steps=4), "toy", _args())
    changed = apply_overrides(_cfg(tmp_path, steps=8), ["model.width=8"])
    with pytest.raises(CheckpointError, match="model.width"):
        Run(changed, "toy", _args(resume=True)).checkpoints.resume_payload()


def test_unwritable_run_folder_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = apply_overrides(_cfg(tmp_path), [f"train.out_dir={blocker}"])
    with pytest.raises(TrainingError, match="not writable"):
        Run(cfg, "toy", _args())


def test_non_finite_steps_are_skipped_then_stop(tmp_path):
    cfg = _cfg(tmp_path, steps=12, save_every=2, max_bad_steps=3)
    with pytest.raises(TrainingError, match="3 non-finite steps in a row"):
        _train(cfg, nan_at={5, 7, 8, 9})
    # steps 5, 7 and 8 were skipped before the stop; the newest checkpoint is intact
    assert load_checkpoint(tmp_path / "toy" / "step_00000008.pt")["bad_steps"] == 3


def test_batch_order_shards_the_global_batch():
    one = BatchOrder(20, 8, seed=3)
    ranks = [BatchOrder(20, 8, seed=3, rank=r, world=2) for r in range(2)]
    for _ in range(6):  # crosses an epoch boundary
        full = one.next()
        shards = [r.next() for r in ranks]
        assert sorted(shards[0] + shards[1]) == sorted(full)


def test_max_minutes_stops_at_a_step_boundary_and_resume_continues(tmp_path, monkeypatch):
    """train.max_minutes: once the budget has passed, stop_requested turns true (out_of_time, not a signal); the
    loop saves where it stopped and --resume carries on to train.steps."""
    from muomni.training import stop

    now = [0.0]
    monkeypatch.setattr(stop, "_clock", lambda: now[0])
    cfg = _cfg(tmp_path, steps=10, save_every=100, max_minutes=0.45)
    run = Run(cfg, "toy", _args())
    model = nn.Linear(4, 1)
    objects = {"model": model, "optim": torch.optim.SGD(model.parameters(), lr=0.1)}
    now[0] += 100.0  # setup and data caching do not count
    run.progress(0, cfg.train.steps)
    step = 0
    while step < cfg.train.steps and not run.stop_requested:
        step += 1
        now[0] += 10.0  # each step takes 10 s: the 27 s budget is over after step 3
        run.step_done()
        if step == cfg.train.steps or run.stop_requested:
            run.save(step, objects)
    assert run.finish(step) == 0  # a time budget is a normal end
    assert (step, run.stopper.out_of_time) == (3, True)
    assert run.folder.read_stats()["ended"]["reason"] == "max_minutes"
    assert [s for s, _ in step_checkpoints(tmp_path / "toy")] == [3]

    resumed = Run(_cfg(tmp_path, steps=10, save_every=100), "toy", _args(resume=True))
    assert resumed.restore(resumed.checkpoints.resume_payload(), objects) == 3
    assert not resumed.stop_requested and not resumed.stopper.out_of_time  # no budget this time
    resumed.close()


def test_max_minutes_must_not_be_negative(tmp_path):
    with pytest.raises(ConfigError, match="train.max_minutes"):
        _cfg(tmp_path, max_minutes=-1)


def _scaled_step(run, model, opt, scaler, step, poison=False):
    x = torch.randn(8, 4)
    loss = model(x).pow(2).mean()
    scaler.scale(loss).backward()
    if poison:  # an fp16 overflow: one gradient is inf, the loss is finite
        model.weight.grad[0, 0] = float("inf")
    return run.guard.optimizer_step(step, opt, model.parameters(), scaler, clip=1.0, loss=loss)


def test_fp16_overflow_is_skipped_counted_and_the_scaler_recovers(tmp_path):
    """An active grad scaler (its logic is device-independent: a CPU GradScaler) meets an inf gradient:
    no crash, the weights stay, the scale halves, the overflow is counted, and the next steps train."""
    run = Run(_cfg(tmp_path, max_bad_steps=1), "toy", _args())
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, enabled=True)
    before = model.weight.detach().clone()
    result = _scaled_step(run, model, opt, scaler, 1, poison=True)
    assert (result.accepted, result.overflow) == (False, True)
    assert torch.equal(model.weight, before) and scaler.get_scale() == 2.0**15
    assert (run.guard.overflow_steps, run.guard.bad_steps) == (1, 0)  # max_bad_steps=1 would have stopped a bad step
    for step in (2, 3):  # unscale_ after the skipped step must not raise ("unscale_() has already been called")
        assert _scaled_step(run, model, opt, scaler, step).accepted
    assert not torch.equal(model.weight, before)
    records = [json.loads(line) for line in (tmp_path / "toy" / "metrics.jsonl").read_text().splitlines()]
    assert [r["overflow_steps"] for r in records if r["split"] == "bad"] == [1]
    run.close()


def test_inf_gradient_without_a_scaler_is_a_bad_step(tmp_path):
    run = Run(_cfg(tmp_path, max_bad_steps=2), "toy", _args())
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)  # bf16 / fp32: an inactive scaler
    before = model.weight.detach().clone()
    assert not _scaled_step(run, model, opt, scaler, 1, poison=True).accepted
    assert torch.equal(model.weight, before) and (run.guard.bad_steps, run.guard.overflow_steps) == (1, 0)
    assert _scaled_step(run, model, opt, scaler, 2).accepted  # a good step resets the count in a row
    assert not _scaled_step(run, model, opt, scaler, 3, poison=True).accepted
    with pytest.raises(TrainingError, match="2 non-finite steps in a row"):
        _scaled_step(run, model, opt, scaler, 4, poison=True)
    run.close()


def test_stop_requested_is_a_plain_read_until_the_step_boundary(tmp_path):
    import signal

    run = Run(_cfg(tmp_path), "toy", _args())
    previous = signal.getsignal(signal.SIGINT)
    try:
        run.stopper.install_signal_handlers()
        os.kill(os.getpid(), signal.SIGTERM)
        assert not run.stop_requested  # read twice mid-step: unchanged until the step ends
        assert not run.stop_requested
        assert run.step_done() and run.stop_requested
        assert run.finish(5) == 130 and run.folder.read_stats()["ended"] == {
            "reason": "signal", "step": 5, "bad_steps": 0, "overflow_steps": 0}
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _cpu_flags() -> set[str]:
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="needs /proc/cpuinfo to know the CPU's flags")
def test_cpu_precision_picks_bf16_only_where_asked_or_native():
    """fp32 never casts, bf16 always does, auto only where the CPU has bf16 in hardware (its cpuinfo flags);
    train.amp (enabled) governs CUDA only, so it does not turn a CPU bf16 choice off."""
    from muomni.training.device import amp_dtype, autocast, cpu_has_native_bf16, precision_name

    cpu = torch.device("cpu")
    assert cpu_has_native_bf16() == bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})
    native = torch.bfloat16 if cpu_has_native_bf16() else None
    assert [amp_dtype(cpu, p) for p in ("fp32", "bf16", "auto")] == [None, torch.bfloat16, native]
    assert amp_dtype(torch.device("meta"), "bf16") is None  # neither CPU nor CUDA: no autocast
    layer, x = nn.Linear(8, 8), torch.randn(2, 8)
    for precision, enabled, dtype in [("fp32", True, torch.float32), ("bf16", True, torch.bfloat16),
                                      ("bf16", False, torch.bfloat16), ("auto", True, native or torch.float32)]:
        with autocast(cpu, enabled, precision):
            assert layer(x).dtype == dtype, (precision, enabled)
        assert precision_name(cpu, enabled, precision) == ("bf16 autocast" if dtype == torch.bfloat16 else "float32")


def test_a_failed_write_text_leaves_the_old_file_and_no_temp_file(tmp_path):
    from muomni.files import write_text

    target = tmp_path / "stats.json"
    write_text(target, "old\n")
    with pytest.raises(TypeError):
        write_text(target, b"not text")  # fails inside the write, after the temp file exists
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]
