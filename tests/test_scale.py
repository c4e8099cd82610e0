"""Scale: data parallel on CPU (gloo, 2 processes) equals one process; compiled steps never recompile.

The DDP tests launch the real stage scripts the way torchrun does (RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT in the environment) in spawned processes, and record every rank's weights and buffers
(codebooks included) whenever the script saves. Rank 0's run is then compared with a one-process run
of the same global batch, and every rank with rank 0.
"""

from __future__ import annotations

import faulthandler
import importlib.util
import os
import socket
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_TIMEOUT_S = 240  # each launch takes seconds; a rank stuck in a collective fails the test instead of hanging it

TINY_CODEC = [
    "model.hidden_dim=32", "model.latent_dim=16", "model.codebook_dim=16", "model.n_blocks=1", "model.dilations=[1]",
    "model.n_codebooks=2", "model.codebook_size=16", "model.kmeans_iters=3",
    "train.batch_size=4", "train.crop_frames=4", "train.lr=1e-3", "train.warmup_steps=1", "train.min_lr=1.0",
    "train.eval_items=1", "train.eval_every=1000", "train.sample_every=1000", "train.log_every=1", "train.amp=false",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, script: str, argv: list[str], dump: str) -> None:
    """One rank, set up as torchrun sets it up; every Run.save also records this rank's state."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    # One host: gloo talks over loopback whatever the machine's hostname resolves to.
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    # A rank still running just before the launch deadline prints where it is (in the test's captured stderr).
    faulthandler.dump_traceback_later(LAUNCH_TIMEOUT_S - 15, exit=True)
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(script).parent))  # the repository root the script lives in
    from muomni.training.device import unwrap
    from muomni.training.run import Run

    original = Run.save

    def save(self, step, objects, metric=None, extra=None):
        names = ["model"] if "model" in objects else ["generator", "discriminators"]
        state = {f"{name}.{k}": v.detach().cpu().clone()
                 for name in names for k, v in unwrap(objects[name]).state_dict().items()}
        torch.save(state, Path(dump) / f"rank{self.rank}_step{step:08d}.pt")
        return original(self, step, objects, metric, extra)

    Run.save = save
    spec = importlib.util.spec_from_file_location(Path(script).stem, script)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(argv)
    # The rank's work is done and recorded; leave without interpreter teardown, which this test does not
    # measure (an error above still propagates and fails the launch).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch(script: str, argv: list[str], world: int, dump: Path) -> dict[int, dict[str, torch.Tensor]]:
    """Run ``script`` with ``world`` processes; -> {rank: state at the last save}."""
    dump.mkdir(parents=True, exist_ok=True)
    ranks = mp.start_processes(_worker, args=(world, _free_port(), str(ROOT / script), argv, str(dump)),
                               nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    try:
        while not ranks.join(timeout=1):  # raises as soon as a rank fails
            if time.monotonic() > deadline:
                pytest.fail(f"{script} with {world} process(es) did not finish in {LAUNCH_TIMEOUT_S} s; "
                            "each rank's stack is in the captured stderr")
    finally:
        for process in ranks.processes:
            if process.is_alive():
                process.kill()
    states = {}
    for rank in range(world):
        last = sorted(dump.glob(f"rank{rank}_step*.pt"))[-1]
        states[rank] = torch.load(last, weights_only=True)
    return states


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=lambda m, name=name: f"{name}: {m}")


def _run_args(tmp: Path, corpus: Path, name: str, steps: int) -> list[str]:
    return ["--config", str(ROOT / "configs" / "codec_tiny.json"), "--set", f"data.path={corpus}",
            f"train.out_dir={tmp}", f"train.run_name={name}", f"train.steps={steps}", f"train.save_every={steps}"]


@pytest.mark.timeout(240)  # 46 s measured on 2 cores under a load of ~8
def test_codec_ddp_equals_one_process(flite_corpus, tmp_path):
    """Two gloo processes with half the global batch each end with the weights and codebooks of one process:
    k-means on the gathered batch, EMA statistics summed over ranks, dead codes drawn identically. The
    two-process run stops after 2 steps and resumes from rank 0's checkpoint on both ranks (a constant
    learning rate after warm-up makes 2 + 2 steps the same schedule as 4)."""
    one = launch("train_codec.py", _run_args(tmp_path, flite_corpus, "one", 4) + TINY_CODEC, 1, tmp_path / "d1")[0]
    launch("train_codec.py", _run_args(tmp_path, flite_corpus, "two", 2) + TINY_CODEC, 2, tmp_path / "d2")
    argv = _run_args(tmp_path, flite_corpus, "two", 4) + TINY_CODEC + ["--resume"]
    two = launch("train_codec.py", argv, 2, tmp_path / "d2")
    assert_same_state(two[1], two[0], atol=0.0)  # replicas never drift, codebook buffers included
    assert_same_state(two[0], one, atol=1e-5)
    assert any(k.endswith("codebook.embed") for k in one)
    saved = torch.load(tmp_path / "two" / "step_00000004.pt", weights_only=True)
    assert len(saved["rng_ranks"]) == 2  # each rank's random state, so a resumed run draws as it would have


def _kmeans_latents(rank: int) -> torch.Tensor:
    """(64, 4) latents that differ per rank, as CUDA's unordered index_add_ sums can make them differ."""
    return torch.randn(64, 4, generator=torch.Generator().manual_seed(rank)) * (1 + rank)


def _kmeans_worker(rank: int, world: int, port: int, dump: str) -> None:
    """One gloo rank: k-means on its own latents, its codebook saved for the test to compare."""
    import torch.distributed as dist

    from muomni.models.quantize import kmeans

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    centroids, counts = kmeans(_kmeans_latents(rank), k=8, iters=5)
    torch.save({"centroids": centroids, "counts": counts}, Path(dump) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_kmeans_replicas_hold_rank_0s_codebook(tmp_path):
    """Replicas whose own Lloyd iterations would end apart (here: different latents per rank) end with
    rank 0's centroids and counts exactly, the ones one process computes from rank 0's latents."""
    from muomni.models.quantize import kmeans

    mp.start_processes(_kmeans_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    torch.manual_seed(0)
    centroids, counts = kmeans(_kmeans_latents(0), k=8, iters=5)
    for name, one in (("centroids", centroids), ("counts", counts)):
        assert torch.equal(ranks[1][name], ranks[0][name]), name
        assert torch.equal(ranks[0][name], one), name


TINY_TALKER = [
    "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.n_kv_heads=1", "model.ffn_dim=64",
    "model.encoder_layers=1", "model.max_text=96", "model.max_frames=40",
    "train.epochs=0", "train.batch_size=4", "train.lr=1e-3", "train.warmup_steps=1", "train.eval_batches=1",
    "train.eval_every=1000", "train.sample_every=1000", "train.log_every=1", "train.amp=false",
]


@pytest.fixture(scope="module")
def tokenized(flite_corpus, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny codec trained for 2 steps on the flite corpus, and the corpus's codes: (checkpoint, codes folder)."""
    from muomni.data.tokenize import main as tokenize

    tmp = tmp_path_factory.mktemp("scale_codec")
    launch("train_codec.py", _run_args(tmp, flite_corpus, "codec", steps=2) + TINY_CODEC, 1, tmp / "dump")
    checkpoint = tmp / "codec" / "step_00000002.pt"
    tokenize(["--codec", str(checkpoint), "--data", str(flite_corpus), "--out", str(tmp / "codes")])
    return checkpoint, tmp / "codes"


@pytest.mark.timeout(240)  # 40 s measured on 2 cores under a load of ~8
def test_talker_ddp_equals_one_process(flite_corpus, tokenized, tmp_path):
    """Items of different lengths: each rank's frame-averaged loss weighted by its share of the frames."""
    codec, codes = tokenized

    def argv(name: str) -> list[str]:
        return ["--config", str(ROOT / "configs" / "talker_tiny.json"), "--set", f"data.path={flite_corpus}",
                f"data.codec={codec}", f"data.codes={codes}", f"train.out_dir={tmp_path}", f"train.run_name={name}",
                "train.steps=3", "train.save_every=3", *TINY_TALKER]

    one = launch("train_talker.py", argv("one"), 1, tmp_path / "dump_one")[0]
    two = launch("train_talker.py", argv("two"), 2, tmp_path / "dump_two")
    assert_same_state(two[1], two[0], atol=0.0)
    assert_same_state(two[0], one, atol=1e-5)


def _tiny_talker():
    from muomni.models.talker import Talker, TalkerConfig

    torch.manual_seed(0)
    cfg = TalkerConfig(vocab_size=20, n_speakers=2, n_q=2, codebook_size=16, d_model=32, n_layers=1, n_heads=2,
                       n_kv_heads=1, ffn_dim=64, encoder_layers=1, max_text=12, max_frames=8)
    return Talker(cfg)


def _talker_batch(seed: int, B: int = 2) -> dict[str, torch.Tensor]:
    """A fixed-shape batch (B, 12) text, (B, 8, 2) codes whose contents and lengths change with seed."""
    from muomni.models.talker.common import random_batch

    g = torch.Generator().manual_seed(seed)
    return {**random_batch(g, B, 12, 8, vocab_size=20, n_q=2, codebook_size=16, text_lens=4, code_lens=3),
            "speakers": torch.randint(0, 2, (B,), generator=g), "ended": torch.rand(B, generator=g) > 0.3}


@pytest.mark.timeout(240)  # 36 s measured on 2 cores under a load of ~8
def test_talker_compiled_steps_never_recompile():
    """Fixed shapes: after warm-up, neither the training forward/backward on new fixed-shape batches nor the
    KV-cached decode step at new positions compiles anything again (and compiled equals eager).

    Recompilation is decided by dynamo's guards, whatever the backend, so the test counts graphs with
    the fast aot_eager backend; bench/bench_scale.py times the inductor build.
    """
    from torch._dynamo.testing import CompileCounterWithBackend

    from muomni.models.talker.generate import decode_one, decode_step, kv_caches, prefill

    torch._dynamo.reset()
    model = _tiny_talker()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter)
    for seed in range(2):  # warm-up
        compiled(**_talker_batch(seed)).losses["loss"].backward()
    warm = counter.frame_count
    assert warm > 0
    with torch._dynamo.config.patch(error_on_recompile=True):
        for seed in range(2, 5):
            out = compiled(**_talker_batch(seed))
            out.losses["loss"].backward()
    assert counter.frame_count == warm
    torch.testing.assert_close(out.losses["loss"], model(**_talker_batch(4)).losses["loss"])

    torch._dynamo.reset()
    model.eval()
    counter = CompileCounterWithBackend("aot_eager")
    step = torch.compile(decode_step, backend=counter)
    b = _talker_batch(7)

    def decode(t: int, frame: torch.Tensor):
        """Eager and compiled step at position t: both write the same keys/values into slot t."""
        eager = decode_one(model, state, frame, t)
        out = decode_one(model, state, frame, t, step)
        for x, y in zip(out, eager):
            torch.testing.assert_close(x, y)
        return out[0]

    with torch.no_grad(), kv_caches(model, 2, 12 + 16):
        logits, _, _, state = prefill(model, b["text"], b["text_lens"], b["speakers"], 12 + 16)
        for t in (1, 2):  # warm-up
            logits = decode(t, logits.argmax(-1))
        warm = counter.frame_count
        with torch._dynamo.config.patch(error_on_recompile=True):
            for t in range(3, 12):
                logits = decode(t, logits.argmax(-1))
    assert counter.frame_count == warm > 0


@pytest.mark.timeout(180)  # 24 s measured on 2 cores under a load of ~8
def test_vocoder_ddp_replicas_stay_equal(flite_corpus, tmp_path):
    """Generator and discriminators in their own DDP wrappers (two optimizers), the adversarial pass through
    the frozen plain discriminators: after GAN steps every rank holds the same generator and discriminators."""
    argv = ["--config", str(ROOT / "configs" / "vocoder_tiny.json"), "--set", f"data.path={flite_corpus}",
            f"train.out_dir={tmp_path}", "train.run_name=two", "train.steps=2", "train.save_every=2",
            "model.upsample_initial_channel=16", "model.resblock_kernel_sizes=[3]",
            "model.resblock_dilation_sizes=[[1]]",
            "model.mpd_periods=[2]", "model.mpd_channels=[4, 8, 8, 8]", "model.msd_scales=1", "model.msd_channels=4",
            "model.msd_max_channels=8", "train.batch_size=2", "train.grad_accum=1", "train.segment_size=2048",
            "train.gan_start_step=0", "train.eval_items=1", "train.sample_items=1", "train.log_every=1",
            "train.amp=false"]
    two = launch("train_vocoder.py", argv, 2, tmp_path / "dump")
    assert_same_state(two[1], two[0], atol=0.0)
    assert (tmp_path / "two" / "step_00000002.pt").is_file()
