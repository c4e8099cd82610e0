"""A disk cache of log-mels: every item's mel computed once, read lazily from a memory map.

All mels are concatenated along time in ONE float16 ``.npy`` (T_total, 128), opened with
``np.load(mmap_mode="r")``, so a corpus larger than RAM costs only what a batch touches.
A JSON index beside it holds offsets, lengths, ids and a key of the front-end parameters and
the item list; when the key changes (other items, edited files, another front-end) the cache
is rebuilt. Both files are written to temporary names and renamed, so an interrupted build
never leaves a cache that looks valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
from tqdm import tqdm

from muomni import audio
from muomni.files import atomic_path
from muomni.data.corpus import Item

CACHE_VERSION = 1
_HEADER_BYTES = 128  # fixed .npy header, so the data can be streamed before the row count is known


class MelCache:
    """Mels of a list of items; ``get(i)`` -> float32 (T, 128)."""

    def __init__(self, npy_path: Path, index: dict):
        self.path = npy_path
        self.ids: list[str] = index["ids"]
        self.offsets = np.asarray(index["offsets"], dtype=np.int64)
        self.lengths = np.asarray(index["lengths"], dtype=np.int64)
        self._data = np.load(npy_path, mmap_mode="r")  # (T_total, 128) float16

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, i: int) -> np.ndarray:
        start = self.offsets[i]
        return np.asarray(self._data[start:start + self.lengths[i]], dtype=np.float32)  # (T, 128)


def cache_key(items: list[Item]) -> str:
    """Hash of the front-end parameters and of each item's id, path, size and modification time."""
    front_end = [audio.SAMPLE_RATE, audio.N_FFT, audio.WIN_LENGTH, audio.HOP_LENGTH, audio.N_MELS,
                 audio.FMIN, audio.FMAX, audio.LOG_FLOOR, CACHE_VERSION]
    listing = []
    for it in items:
        st = os.stat(it.path)
        listing.append([it.id, str(Path(it.path).resolve()), st.st_size, st.st_mtime_ns])
    return hashlib.sha1(json.dumps([front_end, listing]).encode()).hexdigest()


def mel_cache(items: list[Item], cache_dir: str | os.PathLike, name: str = "mels") -> MelCache:
    """The cache of ``items`` in ``cache_dir`` (files ``<name>.npy`` and ``<name>.json``), built if
    missing or stale. Use one name per item list (e.g. "train", "heldout") in a shared folder."""
    cache_dir = Path(cache_dir)
    npy_path, index_path = cache_dir / f"{name}.npy", cache_dir / f"{name}.json"
    key = cache_key(items)
    if index_path.is_file() and npy_path.is_file():
        index = json.loads(index_path.read_text())
        if index.get("key") == key:
            return MelCache(npy_path, index)
    cache_dir.mkdir(parents=True, exist_ok=True)
    mels = (audio.log_mel(audio.load_audio(it.path))[0].numpy()  # (T, 128) each
            for it in tqdm(items, desc=f"mel cache {name}", unit="utt", leave=False))
    index = write_rows(npy_path, index_path, mels, "<f2", audio.N_MELS,
                       {"key": key, "ids": [it.id for it in items]})
    return MelCache(npy_path, index)


def write_rows(npy_path: Path, index_path: Path, arrays, dtype: str, width: int, index: dict) -> dict:
    """Stream (T_i, width) arrays into ONE .npy of (sum T_i, width) plus a JSON index with offsets and
    lengths, never holding more than one array in memory. Both files go to temporary names and are
    renamed data first, index last, so an interrupted build never leaves a cache that looks valid. The
    temporary names are unique per call: two runs that build the same cache at once (two trainings on one
    corpus) each write their own and the last rename wins, both with the same content."""
    offsets, lengths, total = [], [], 0
    with atomic_path(index_path) as tmp_index:
        with atomic_path(npy_path) as tmp_npy, open(tmp_npy, "wb") as f:  # data renamed first, index last
            f.write(b"\0" * _HEADER_BYTES)
            for array in arrays:
                f.write(np.ascontiguousarray(array, dtype=dtype).tobytes())
                offsets.append(total)
                lengths.append(len(array))
                total += len(array)
            f.seek(0)
            f.write(_npy_header(total, dtype, width))
        index = {**index, "offsets": offsets, "lengths": lengths}
        tmp_index.write_text(json.dumps(index))
    return index


def _npy_header(rows: int, dtype: str, width: int) -> bytes:
    """A version 1.0 .npy header of exactly _HEADER_BYTES for a (rows, width) array of dtype."""
    text = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': ({rows}, {width}), }}"
    text = text.ljust(_HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")
