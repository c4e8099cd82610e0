"""From a data config to checked train and held-out item lists (what every training script calls)."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from muomni.data.check import check_report
from muomni.data.corpus import Item, read_corpus


@dataclass
class Corpus:
    """Checked items split into train and held-out. ``speakers`` are the distinct speaker names
    (sorted; "" for an unnamed single speaker), the index of a name is its speaker id."""

    train: list[Item]
    heldout: list[Item]
    speakers: list[str]
    root: Path


def split_heldout(items: list[Item], heldout: float, seed: int = 0) -> tuple[list[Item], list[Item]]:
    """(train, heldout), each in corpus order. An item is held out by the rank of hash(seed, id),
    so the split does not depend on file order and an added item moves no other item across.

    ``heldout`` < 1 is a fraction, >= 1 a count; any positive value holds out at least one item
    when there are two or more, and never all of them.
    """
    n = len(items)
    want = round(heldout * n) if heldout < 1 else int(heldout)
    want = min(max(want, 1 if heldout > 0 else 0), n - 1) if n > 1 else 0
    ranked = sorted(range(n), key=lambda i: hashlib.sha1(f"{seed}:{items[i].id}".encode()).hexdigest())
    held = set(ranked[:want])
    return [it for i, it in enumerate(items) if i not in held], [it for i, it in enumerate(items) if i in held]


def corpus_fingerprint(path: str | Path, fmt: str = "auto") -> str:
    """sha256 of a corpus's item list (id, speaker, text, duration, problem of every item, in file order),
    without decoding audio: a run records it, so that a rerun can tell whether the corpus changed."""
    h = hashlib.sha256()
    for it in read_corpus(path, fmt):
        h.update(f"{it.id}|{it.speaker}|{it.text}|{it.duration:.4f}|{it.problem}\n".encode())
    return h.hexdigest()


def load_corpus(data_cfg: Any) -> Corpus:
    """Read, check, filter speakers and split the corpus that ``data_cfg`` names (a DataConfig).

    Each skipped item gets one warning with its reason, then one warning counts them. Raises
    ValueError saying why when no item is usable.
    """
    root = Path(data_cfg.path)
    items = read_corpus(root, data_cfg.format)
    report = check_report(items, data_cfg.min_seconds, data_cfg.max_seconds)
    for name, reason in report.bad:
        warnings.warn(f"skipping {name}: {reason}", stacklevel=2)
    if report.bad:
        warnings.warn(f"{root}: skipped {len(report.bad)} of {len(items)} items ({report.summary_counts()}); "
                      f"see python -m muomni.data check {root}", stacklevel=2)
    if not report.good:
        raise ValueError(f"no usable utterance in {root}: {len(items)} items, {report.summary_counts()} "
                         f"(see python -m muomni.data check {root})")
    good = report.good
    if data_cfg.speakers:
        present = sorted({it.speaker for it in good})
        missing = [s for s in data_cfg.speakers if s not in present]
        if missing:
            raise ValueError(f"speakers {missing} have no usable utterance in {root}; present: {present}")
        good = [it for it in good if it.speaker in set(data_cfg.speakers)]
    train, heldout = split_heldout(good, data_cfg.heldout, data_cfg.split_seed)
    return Corpus(train, heldout, sorted({it.speaker for it in good}), root)
