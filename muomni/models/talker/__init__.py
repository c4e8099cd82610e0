"""The Talker: text -> RVQ codes, in two families (docs/DESIGN.md §5).

One file each::

    config.py          TalkerConfig (autoregressive, "arch": "ar"), TRMConfig ("arch": "trm"), the old-key mapping
    common.py          TalkerOutput, the generation frame limit, perplexity
    autoregressive.py  Talker: decoder-only transformer, one step ahead, optional duration path and depth decoder
    aligner.py         the duration path: text encoder states, alignment search, duration predictor
    depth.py           the depth decoder: codebooks 1..n_q-1 of a frame given codebook 0
    generate.py        KV-cache generation of the autoregressive Talker (CachePool, prefill, decode, generate)
    trm.py             TRMTalker: non-autoregressive recursive refinement

The shared layers are ``muomni.models.layers`` and sampling ``muomni.models.sampling``. ``build_talker``
below is the one place that knows both families' models.
"""

from __future__ import annotations

from torch import nn

from muomni.models.layers import count_parameters
from muomni.models.talker.autoregressive import Talker
from muomni.models.talker.common import TalkerOutput, frame_limit, perplexity
from muomni.models.talker.config import (
    AnyTalkerConfig,
    SharedConfig,
    TalkerConfig,
    TRMConfig,
    codebook_weights,
    talker_config,
)
from muomni.models.talker.trm import TRMTalker

__all__ = [
    "AnyTalkerConfig", "SharedConfig", "TRMConfig", "TRMTalker", "Talker", "TalkerConfig", "TalkerOutput",
    "build_talker", "codebook_weights", "count_parameters", "frame_limit", "perplexity",
    "talker_config",
]

FAMILIES: dict[str, type[nn.Module]] = {"ar": Talker, "trm": TRMTalker}


def build_talker(cfg: AnyTalkerConfig) -> nn.Module:
    """The model of the family named by ``cfg.arch``: ``Talker`` (ar) or ``TRMTalker`` (trm)."""
    return FAMILIES[cfg.arch](cfg)
