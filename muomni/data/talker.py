"""Talker training data: text ids and cached codes, fixed-shape or length-bucketed batches, prompts.

Fixed shapes (docs/DESIGN.md §5): every batch is padded to ``max_text`` tokens and ``max_frames``
code frames, each the ``max_length_percentile`` percentile of the train items rounded up to
``length_multiple`` (computed the same from the same items every time; the run keeps them in its config,
and model.max_text / max_frames override them). Longer items are truncated and counted: their audio then
has no stop target and a free alignment end.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from muomni.data.split import Corpus
from muomni.data.tokenize import default_codes_dir, load_codes
from muomni.models.codec import CodecModel
from muomni.text import TextProcessor


def fixed_length(lengths: list[int], percentile: float, multiple: int) -> int:
    """The percentile of lengths rounded up to a multiple (at least one multiple)."""
    value = float(np.percentile(np.asarray(lengths), percentile)) if lengths else 1.0
    return max(multiple, int(math.ceil(value / multiple)) * multiple)


@dataclass
class TalkerItem:
    """A corpus ``Item`` as the Talker reads it: its speaker id, text ids and cached codes."""

    id: str
    speaker: int
    text: str
    text_ids: np.ndarray  # (N,)
    codes: np.ndarray  # (T, n_q) int16 view into the memory-mapped code cache
    path: str


def padded_length(n: int, multiple: int, cap: float) -> int:
    """A dynamic batch's padded length for its longest item n: rounded up to a multiple, at most cap."""
    return min(cap, -(-n // multiple) * multiple)


class BucketOrder:
    """Dynamic batching: length-sorted items packed up to max_tokens padded positions per batch; the
    batches are shuffled per epoch (deterministic per (seed, epoch), resumable like BatchOrder).

    A batch's size is what the collate builds: B x (padded text + padded frames + 1 start position), text
    and frames each padded to its own longest item rounded up to ``multiple`` (at most ``limits``), so no
    batch exceeds max_tokens but an item that alone does (a batch of one).
    """

    def __init__(self, costs: list[tuple[int, int]], max_tokens: int, seed: int, rank: int = 0, world: int = 1,
                 multiple: int = 1, limits: tuple[int, int] | None = None):
        cap_text, cap_frames = limits or (math.inf, math.inf)
        # by padded frame count, then text length: items that pad to the same frames sit together
        order = sorted(range(len(costs)), key=lambda i: (padded_length(costs[i][1], multiple, cap_frames),
                                                         costs[i][0]))
        self.batches: list[list[int]] = []
        cur: list[int] = []
        longest = (0, 0)  # the longest text and frames in cur
        for i in order:
            grown = (max(longest[0], costs[i][0]), max(longest[1], costs[i][1]))
            width = padded_length(grown[0], multiple, cap_text) + padded_length(grown[1], multiple, cap_frames) + 1
            if cur and width * (len(cur) + 1) > max_tokens:
                self.batches.append(cur)
                cur, grown = [], costs[i]
            cur.append(i)
            longest = grown
        if cur:
            self.batches.append(cur)
        self.seed, self.epoch, self.pos = seed, 0, 0
        self.rank, self.world = rank, world
        self._perm = self._permutation()

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.batches))

    def __len__(self) -> int:
        return len(self.batches)

    def next(self) -> list[int]:
        if self.pos >= len(self.batches):
            self.epoch, self.pos = self.epoch + 1, 0
            self._perm = self._permutation()
        self.pos += 1
        batch = self.batches[self._perm[self.pos - 1]]
        return list(batch[self.rank::self.world]) or [batch[0]]  # a bucket smaller than world repeats an item

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos, "n": len(self.batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = self._permutation()


class TalkerData:
    """The train and held-out TalkerItems with the fixed lengths every batch is padded to."""

    def __init__(self, train: list[TalkerItem], heldout: list[TalkerItem], max_text: int, max_frames: int, tcfg,
                 speakers: list[str]):
        self.train, self.heldout = train, heldout
        self.max_text, self.max_frames, self.tcfg, self.speakers = max_text, max_frames, tcfg, speakers
        self.truncated = sum(self._truncates(u) for u in train)

    @classmethod
    def build(cls, cfg: Any, corpus: Corpus, codec: CodecModel, codec_hash: str, text: TextProcessor,
              warn: Callable[[str], None]) -> TalkerData:
        """Items of ``corpus`` with their codes from the cache of ``codec_hash``, padded to the fixed lengths of
        ``cfg`` (a Talker run config) or of its train items. Reads files only; ``warn`` takes the messages
        (characters outside the vocabulary)."""
        cache = load_codes(cfg.data.codes or default_codes_dir(cfg.data.path), codec_hash)
        if cache.meta.get("n_codebooks") != codec.cfg.n_codebooks:
            raise ValueError(f"{cache.path}: {cache.meta.get('n_codebooks')} codebooks, the codec has "
                             f"{codec.cfg.n_codebooks}: codes from a different codec")
        spk = {s: i for i, s in enumerate(corpus.speakers)}

        def talker_items(items) -> list[TalkerItem]:
            out = []
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                for it in items:
                    try:
                        codes = cache.view(cache.index(it.id))  # lazy: RAM stays flat
                    except KeyError:
                        raise ValueError(f"{it.id} is not in the code cache {cache.path}: re-run python -m muomni"
                                         f".data.tokenize --codec {cfg.data.codec} --data {cfg.data.path}") from None
                    if len(codes) and int(codes.max()) >= codec.cfg.codebook_size:
                        raise ValueError(f"{it.id}: code id {int(codes.max())} >= codebook size "
                                         f"{codec.cfg.codebook_size}: codes from a different codec")
                    out.append(TalkerItem(it.id, spk.get(it.speaker, 0), it.text,
                                          np.asarray(text.encode(it.text), dtype=np.int64), codes, it.path))
            if caught:
                warn(f"{len(caught)} texts have characters outside the vocabulary, e.g.: {caught[0].message}")
            return out

        train, heldout = talker_items(corpus.train), talker_items(corpus.heldout)  # heldout may be empty: no metrics
        t = cfg.train
        max_text = cfg.model.max_text or fixed_length([len(u.text_ids) for u in train], t.max_length_percentile,
                                                      t.length_multiple)
        max_frames = cfg.model.max_frames or fixed_length([len(u.codes) for u in train], t.max_length_percentile,
                                                          t.length_multiple)
        return cls(train, heldout, max_text, max_frames, t, corpus.speakers)

    # ---- lengths and batches

    def _truncates(self, u: TalkerItem) -> bool:
        return len(u.text_ids) > self.max_text or len(u.codes) > self.max_frames

    def describe_truncation(self) -> str:
        pct = 100 * self.truncated / max(len(self.train), 1)
        return f"{self.truncated} of {len(self.train)} train items truncated ({pct:.1f}%)"

    def batches_per_epoch(self) -> float:
        if self.tcfg.batching == "dynamic":
            return len(self.bucket_order(0))
        return len(self.train) / min(self.tcfg.batch_size, len(self.train))

    def bucket_order(self, seed: int, rank: int = 0, world: int = 1) -> BucketOrder:
        """Dynamic batching's order of the train items (fixed batching uses muomni.training.schedule.BatchOrder)."""
        costs = [(min(len(u.text_ids), self.max_text), min(len(u.codes), self.max_frames)) for u in self.train]
        return BucketOrder(costs, self.tcfg.max_tokens, seed, rank, world, self.tcfg.length_multiple,
                           (self.max_text, self.max_frames))

    def heldout_batches(self, batch_size: int, n_batches: int) -> list[list[int]]:
        idx = list(range(len(self.heldout)))
        return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)][:n_batches]

    def batch(self, idx: list[int], device, heldout: bool = False) -> dict[str, torch.Tensor]:
        """Padded tensors for Talker.forward: text (B, max_text), codes (B, max_frames, n_q), lengths, ended."""
        items = [(self.heldout if heldout else self.train)[i] for i in idx]
        n_text, n_frames = self.max_text, self.max_frames
        if self.tcfg.batching == "dynamic":  # pad to the batch's longest, rounded up to length_multiple
            mult = self.tcfg.length_multiple
            n_text = padded_length(max(len(u.text_ids) for u in items), mult, n_text)
            n_frames = padded_length(max(len(u.codes) for u in items), mult, n_frames)
        B, n_q = len(items), items[0].codes.shape[1]
        text = torch.zeros(B, n_text, dtype=torch.long)
        codes = torch.zeros(B, n_frames, n_q, dtype=torch.long)
        text_lens, code_lens = torch.zeros(B, dtype=torch.long), torch.zeros(B, dtype=torch.long)
        ended = torch.ones(B, dtype=torch.bool)
        for i, u in enumerate(items):
            nt, nf = len(u.text_ids), len(u.codes)
            if nt > n_text:  # keep the audio that roughly goes with the text kept
                nf = max(1, nf * n_text // nt)
                nt, ended[i] = n_text, False
            if nf > n_frames:
                nf, ended[i] = n_frames, False
            text[i, :nt] = torch.from_numpy(u.text_ids[:nt])
            codes[i, :nf] = torch.from_numpy(np.asarray(u.codes[:nf], dtype=np.int64))
            text_lens[i], code_lens[i] = nt, nf
        speakers = torch.tensor([u.speaker for u in items])
        out = {"text": text, "text_lens": text_lens, "codes": codes, "code_lens": code_lens,
               "speakers": speakers, "ended": ended}
        return {k: v.to(device) for k, v in out.items()}

    # ---- prompts

    def heldout_prompts(self, n: int) -> list[tuple[int, str]]:
        return [(u.speaker, u.text) for u in self.heldout[:n]]


def read_prompts(lines: list[str], path: str, default: list[tuple[int, str]], speakers: list[str]):
    """'speaker|text' lines (from the config and a file, '#' comments) -> [(speaker id, text)].

    The speaker is a name from the corpus or an id; a line without '|' uses speaker 0.
    """
    raw = list(lines)
    if path:
        raw += Path(path).read_text(encoding="utf-8").splitlines()
    out = []
    for line in raw:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        spk, sep, txt = line.partition("|")
        if not sep:
            spk, txt = "0", line
        if spk in speakers:
            sid = speakers.index(spk)
        elif spk.strip().isdigit() and int(spk) < max(len(speakers), 1):
            sid = int(spk)
        else:
            raise ValueError(f"prompt {line!r}: unknown speaker {spk!r}; known: {speakers}")
        out.append((sid, txt.strip()))
    return out or default
