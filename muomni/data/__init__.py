"""Corpora: readers, preflight checks, the held-out split, the mel cache and the demo corpus builder; each
stage's training data in its own module (``codec``: crops, ``vocoder``: segments, ``talker``: batches)."""

from muomni.data.cache import MelCache, mel_cache
from muomni.data.check import check_audio, check_items, check_report
from muomni.data.corpus import Item, read_corpus
from muomni.data.split import Corpus, corpus_fingerprint, load_corpus, split_heldout

__all__ = [
    "Corpus", "Item", "MelCache", "check_audio", "check_items", "check_report", "corpus_fingerprint", "load_corpus",
    "mel_cache",
    "read_corpus", "split_heldout",
]
