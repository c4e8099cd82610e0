"""Pre-tokenization: the codes of every usable utterance, computed once by a trained codec.

    python -m muomni.data.tokenize --codec checkpoints/codec_tiny/best.pt --data data/demo [--out DIR]

Layout (like the mel cache): ``codes.npy``, every utterance's codes concatenated along time as int16
(T_total, n_q), read with a memory map, and ``codes.json`` with ids, offsets, lengths (code frames),
n_q, codebook size and ``codec_hash`` (sha256 of the codec's config and weights). Talker training reads
it with ``load_codes(cache_dir, expected_hash)``, so codes from another codec are never used by mistake.
Running the command again with another codec rebuilds the cache and says so.

Every cache of a corpus lives under ``mel_cache_dir(data_path)`` (``<corpus>/.cache``): the mel caches
``train``/``heldout`` and, by default, the code cache in ``codes/``. Each utterance is padded with silence
to whole code frames before encoding, so no audio at its end is lost.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from muomni.audio import LOG_FLOOR
from muomni.config import DataConfig
from muomni.data.cache import mel_cache, write_rows
from muomni.data.split import load_corpus
from muomni.load import load_codec
from muomni.models.codec import codec_hash


def mel_cache_dir(data_path: str | os.PathLike) -> Path:
    """Folder of a corpus's caches: ``<folder>/.cache`` (for a filelist: ``<its folder>/.cache/<stem>``)."""
    root = Path(data_path)
    return root / ".cache" if root.is_dir() else root.parent / ".cache" / root.stem


def default_codes_dir(data_path: str | os.PathLike) -> Path:
    return mel_cache_dir(data_path) / "codes"


class CodeCache:
    """Codes of a corpus: ``get(i)`` -> int64 (T_frames, n_q); ``index(id)`` -> i."""

    def __init__(self, npy_path: Path, meta: dict):
        self.path, self.meta = npy_path, meta
        self.ids: list[str] = meta["ids"]
        self.offsets = np.asarray(meta["offsets"], dtype=np.int64)
        self.lengths = np.asarray(meta["lengths"], dtype=np.int64)
        self.codec_hash: str = meta["codec_hash"]
        self._pos = {name: i for i, name in enumerate(self.ids)}
        self._data = np.load(npy_path, mmap_mode="r")  # (T_total, n_q) int16

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, item_id: str) -> int:
        return self._pos[item_id]

    def get(self, i: int) -> np.ndarray:
        return np.asarray(self.view(i), dtype=np.int64)

    def view(self, i: int) -> np.ndarray:
        """(T_frames, n_q) int16 view into the memory map: nothing is read until it is used."""
        start = self.offsets[i]
        return self._data[start:start + self.lengths[i]]


class CodecMismatchError(ValueError):
    """A code cache written by another codec than the one expected."""


def load_codes(cache_dir: str | os.PathLike, expected_hash: str | None = None) -> CodeCache:
    """Open a code cache; with ``expected_hash``, refuse codes made by another codec."""
    cache_dir = Path(cache_dir)
    meta_path, npy_path = cache_dir / "codes.json", cache_dir / "codes.npy"
    if not meta_path.is_file() or not npy_path.is_file():
        raise FileNotFoundError(f"{cache_dir}: no code cache (codes.json + codes.npy); run "
                                "python -m muomni.data.tokenize --codec CKPT --data DIR")
    meta = json.loads(meta_path.read_text())
    if expected_hash is not None and meta.get("codec_hash") != expected_hash:
        raise CodecMismatchError(f"{meta_path}: codes were made by codec {meta.get('codec_hash', '?')[:16]}, "
                                 f"but codec {expected_hash[:16]} is expected; re-run python -m "
                                 "muomni.data.tokenize with this codec")
    return CodeCache(npy_path, meta)


@torch.no_grad()
def encode_utterance(codec: torch.nn.Module, mel: np.ndarray) -> np.ndarray:
    """mel (T, 128) -> codes (ceil(T / 5), n_q), padding the last code frame with silence."""
    per = codec.cfg.frames_per_token
    pad = (-len(mel)) % per
    if pad:
        mel = np.concatenate([mel, np.full((pad, mel.shape[1]), math.log(LOG_FLOOR), np.float32)])
    device = next(codec.parameters()).device
    return codec.encode(torch.from_numpy(mel)[None].to(device))[0].cpu().numpy()


def tokenize(codec: torch.nn.Module, items: list, mels, out_dir: str | os.PathLike, codec_hash: str,
             progress: bool = True) -> CodeCache:
    """Write the codes of ``items`` (their mels in ``mels``, a MelCache) to out_dir, unless a cache of the
    same codec and items is already there."""
    out_dir = Path(out_dir)
    ids = [it.id for it in items]
    meta_path, npy_path = out_dir / "codes.json", out_dir / "codes.npy"
    if meta_path.is_file() and npy_path.is_file():
        old = json.loads(meta_path.read_text())
        if old.get("codec_hash") == codec_hash and old.get("ids") == ids:
            print(f"{out_dir}: codes of this codec are up to date ({len(ids)} utterances)", file=sys.stderr)
            return CodeCache(npy_path, old)
        why = "the codec changed" if old.get("codec_hash") != codec_hash else "the utterances changed"
        print(f"{out_dir}: {why}; rebuilding the code cache", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    codes = (encode_utterance(codec, mels.get(i))  # (T_frames, n_q), one utterance in memory at a time
             for i in tqdm(range(len(items)), desc="tokenize", unit="utt", disable=not progress, leave=False))
    meta = write_rows(npy_path, meta_path, codes, "<i2", codec.cfg.n_codebooks, {
        "ids": ids, "n_codebooks": codec.cfg.n_codebooks, "codebook_size": codec.cfg.codebook_size,
        "frames_per_token": codec.cfg.frames_per_token, "codec_hash": codec_hash})
    return CodeCache(npy_path, meta)


def main(argv: list[str] | None = None) -> CodeCache:
    parser = argparse.ArgumentParser(prog="python -m muomni.data.tokenize", description=__doc__.split("\n\n")[0])
    parser.add_argument("--codec", required=True, help="codec checkpoint written by train_codec.py, or its run folder "
                        "(the newest step checkpoint)")
    parser.add_argument("--data", required=True, help="corpus folder (or filelist)")
    parser.add_argument("--out", help=f"output folder (default: {default_codes_dir('<data>')})")
    args = parser.parse_args(argv)
    codec = load_codec(args.codec)
    corpus = load_corpus(DataConfig(path=args.data))
    folder = mel_cache_dir(args.data)  # the same mel caches train_codec.py built
    mels = _Chain([mel_cache(corpus.train, folder, "train"), mel_cache(corpus.heldout, folder, "heldout")])
    cache = tokenize(codec, corpus.train + corpus.heldout, mels, args.out or default_codes_dir(args.data),
                     codec_hash(codec))
    print(f"{cache.path}: {len(cache)} utterances, {int(cache.lengths.sum())} code frames, "
          f"codec {cache.codec_hash[:16]}")
    return cache


class _Chain:
    """Several mel caches read as one list."""

    def __init__(self, caches: list):
        self.where = [(c, i) for c in caches for i in range(len(c))]

    def get(self, i: int) -> np.ndarray:
        cache, j = self.where[i]
        return cache.get(j)


if __name__ == "__main__":
    main()
