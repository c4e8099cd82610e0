"""The benchmarks `make bench` runs: each one it finds has its entry point, and the codec reference is exact
where it must be."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

BENCHES = sorted(p.stem for p in (ROOT / "bench").glob("bench_*.py"))


@pytest.mark.parametrize("name", BENCHES)
def test_every_benchmark_make_bench_finds_has_a_run_entry_point(name):
    assert callable(getattr(importlib.import_module(name), "run", None)), f"bench/{name}.py has no run()"


def test_kmeans_reference_codes_decode_to_its_round_trip_and_are_exact_with_a_code_per_patch():
    from bench_codec_reference import KMeansRVQ

    torch.manual_seed(0)
    mels = [torch.randn(10, 4), torch.randn(12, 4)]  # 2 + 2 patches of 5 frames (the last 2 frames dropped)
    exact = KMeansRVQ(mels, 1, 4)  # one code per training patch: every patch is its own centroid
    for mel in mels:
        codes = exact.encode(mel)
        assert codes.shape == (2, 1)
        torch.testing.assert_close(exact.decode(codes), mel[:10], rtol=1e-5, atol=1e-5)
    coarse = KMeansRVQ(mels, 2, 2)
    codes = coarse.encode(mels[1])
    assert codes.shape == (2, 2) and int(codes.max()) < 2
    torch.testing.assert_close(coarse.round_trip(mels[1]), coarse.decode(codes))
