"""The Talker's configs: one dataclass per family (docs/DESIGN.md §5, §10), and the mapping of older configs.

``TalkerConfig`` is the autoregressive Talker's (``"arch": "ar"``, autoregressive.py), ``TRMConfig`` the
recursive family's (``"arch": "trm"``, trm.py); both extend ``SharedConfig``, the fields either family reads.
A config file's ``model`` section names its family with ``arch``; ``muomni.config`` picks the dataclass by
that field (``AnyTalkerConfig`` is the type of the section) and lets it translate older keys first.

Older configs (every Talker checkpoint written before the split, and configs/*.json through their ``"base"``
chain) hold one flat dict with both families' settings. ``SharedConfig.translate_keys`` is the one mapping:

- a setting of the other family (``AR_ONLY`` / ``TRM_ONLY``) is dropped: it had no effect on this family.
  Where it holds another value than the one every such config had, a warning names it; ``depth_layers``
  on the recursive family is refused, as it always was (``REFUSED``);
- the ``"depth"`` loss weight (``DEPRECATED_LOSS_WEIGHTS``) never weighed a loss: the depth decoder's
  losses are the codebook losses ``c1``.. ``c{n_q-1}``. It is dropped with a warning that says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

from muomni.config import ConfigError, model_from_dict
from muomni.models.codec import FRAMES_PER_TOKEN

# Settings of one family that the flat config of 1d736d9 and before also held for the other, with the value
# every such config had (the old defaults): dropped on load, with a warning where they hold another value.
# The speaker settings came later (2026-12-07) and are dropped the same way.
AR_ONLY: dict[str, Any] = {"text_prefix": True, "duration_path": True, "align_codebooks": 1, "dur_kernel": 3,
                           "depth_layers": 0, "decoder_fraction": 0.0625,
                           "speaker_durations": False, "speaker_text": False}
TRM_ONLY: dict[str, Any] = {"H_cycles": 3, "L_cycles": 6, "share_output_heads": False}
REFUSED = {"trm": {"depth_layers": "an autoregressive option; the trm Talker predicts every codebook"}}
DEPRECATED_LOSS_WEIGHTS = {"depth": "it never weighed a loss: the depth decoder's losses are the codebook losses "
                                    "c1..c{n_q-1}, weighted by those names"}


@dataclass
class SharedConfig:
    arch: str = "ar"  # the family; first field: muomni.config picks the dataclass by it
    # Fixed by the data when a Talker trains (muomni/stages/talker.py data_facts): the text processor's vocabulary,
    # the corpus's speakers, the codec's n_codebooks and codebook_size; a config's value is replaced, with a warning
    vocab_size: int = 0  # text tokens
    n_speakers: int = 1
    n_q: int = 2  # codebooks
    codebook_size: int = 128  # codes per codebook
    d_model: int = 192
    n_layers: int = 4
    n_heads: int = 3  # attention (query) heads
    n_kv_heads: int = 1  # grouped-query attention: n_heads query heads share n_kv_heads key/value heads
    ffn_dim: int = 768
    swiglu: bool = True
    dropout: float = 0.0
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    encoder_layers: int = 2  # non-causal text encoder layers
    sub_frames: int = FRAMES_PER_TOKEN  # durations are counted in sub-frames of a code frame (one 16 ms mel frame)
    max_text: int = 0  # fixed text length of a batch (0 = from the corpus)
    max_frames: int = 0  # fixed frame count of a batch and generation limit (0 = from the corpus)
    loss_weights: dict[str, float] = field(default_factory=dict)  # c0, c1, ... and the family's LOSS_NAMES

    ARCH: ClassVar[str] = ""
    LOSS_NAMES: ClassVar[frozenset[str]] = frozenset()
    OTHER_FAMILY: ClassVar[dict[str, Any]] = {}  # the other family's settings of the old flat config

    def __post_init__(self):
        if self.arch != self.ARCH:
            raise ConfigError(f"model.arch = {self.arch!r}: {type(self).__name__} is the config of arch "
                              f"{self.ARCH!r}; a config of either family comes from talker_config(...)")
        if self.d_model % self.n_heads or self.n_heads % max(self.n_kv_heads, 1):
            raise ConfigError(
                f"model: d_model ({self.d_model}) must divide by n_heads ({self.n_heads}) and n_heads by "
                f"n_kv_heads ({self.n_kv_heads})"
            )
        if self.head_dim % 2:
            raise ConfigError(f"model: head_dim = d_model / n_heads = {self.head_dim} must be even for RoPE")
        valid = {f"c{k}" for k in range(max(self.n_q, 1))} | self.LOSS_NAMES
        for key in self.loss_weights:
            if key not in valid and self.n_q:
                raise ConfigError(f"model.loss_weights: unknown loss {key!r}; valid: {', '.join(sorted(valid))}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def require_data_fields(self) -> None:
        """vocab_size, n_q and codebook_size come from the text processor and the codec; a model needs them."""
        if self.vocab_size < 3 or self.n_q < 1 or self.codebook_size < 2:
            raise ConfigError("model: vocab_size, n_q and codebook_size must be set (from the text processor/codec)")

    def weight(self, name: str) -> float:
        """The weight of a named loss: loss_weights, default 1."""
        return float(self.loss_weights.get(name, 1.0))

    @classmethod
    def translate_keys(cls, values: dict[str, Any], where: str) -> dict[str, Any]:
        """An old flat config dict -> this family's keys (the mapping in the module docstring); where names the
        file and section for messages. Unknown keys pass through, for the strict loader to refuse."""
        out = dict(values)
        for key, old in cls.OTHER_FAMILY.items():
            if key not in out or out.pop(key) == old:
                continue
            if key in REFUSED.get(cls.ARCH, {}):
                raise ConfigError(f"{where}.{key} = {values[key]!r}: {REFUSED[cls.ARCH][key]}")
            warnings.warn(f"{where}.{key} = {values[key]!r} is ignored: a setting of the other Talker family, "
                          f"arch {cls.ARCH!r} has none", UserWarning, stacklevel=2)
        weights = out.get("loss_weights")
        if isinstance(weights, dict) and any(k in DEPRECATED_LOSS_WEIGHTS for k in weights):
            out["loss_weights"] = {k: v for k, v in weights.items() if k not in DEPRECATED_LOSS_WEIGHTS}
            for key in weights.keys() & DEPRECATED_LOSS_WEIGHTS.keys():
                warnings.warn(f"{where}.loss_weights.{key} is ignored and deprecated: {DEPRECATED_LOSS_WEIGHTS[key]}; "
                              "remove it from the config", UserWarning, stacklevel=2)
        return out


@dataclass
class TalkerConfig(SharedConfig):
    """The autoregressive Talker (autoregressive.py)."""

    arch: str = "ar"
    text_prefix: bool = True  # text tokens first in the sequence (docs/DESIGN.md §5)
    duration_path: bool = True  # explicit alignment (aligner.py); False = plain decoder-only
    align_codebooks: int = 1  # codebooks scored by the alignment prior
    dur_kernel: int = 3
    depth_layers: int = 0  # > 0: a depth decoder predicts codebooks 1..n_q-1 given codebook 0
    decoder_fraction: float = 0.0625  # fraction of frames the depth decoder trains on (eval scores every frame)
    # The duration predictor has a speaker table of its own, so each voice gets its own speaking rate. Measured
    # on the demo (docs/RESULTS.md 2026-12-07, two seeds): per-voice duration error 0.072 -> 0.045, but TTS
    # word error +0.04 at 1,000 steps, so no preset turns it on yet; False is how every older Talker trained.
    speaker_durations: bool = False
    # The speaker embedding added to the text before the encoder as well: held-out c0 accuracy 0.48 vs 0.54
    # and word error +0.13 in the same measurement.
    speaker_text: bool = False

    ARCH: ClassVar[str] = "ar"
    LOSS_NAMES: ClassVar[frozenset[str]] = frozenset({"stop", "align", "dur"})
    OTHER_FAMILY: ClassVar[dict[str, Any]] = TRM_ONLY

    def __post_init__(self):
        super().__post_init__()
        if not self.text_prefix and not self.duration_path:
            raise ConfigError("model: text_prefix and duration_path are both off: the Talker would not see text")
        if self.depth_layers and self.n_q < 2:
            raise ConfigError("model: a depth decoder needs n_q >= 2")

    @property
    def n_code_heads(self) -> int:
        """Output heads over the shared hidden state: one per codebook, or codebook 0's alone with a depth decoder."""
        return 1 if self.depth_layers else self.n_q


@dataclass
class TRMConfig(SharedConfig):
    """The recursive family (trm.py)."""

    arch: str = "trm"
    H_cycles: int = 3  # refinement cycles of the answer y; gradients flow through the last one only
    L_cycles: int = 6  # passes of the recursive blocks over the latent z per cycle
    share_output_heads: bool = False  # one output projection for every codebook (each keeps its embedding)

    ARCH: ClassVar[str] = "trm"
    LOSS_NAMES: ClassVar[frozenset[str]] = frozenset({"length"})
    OTHER_FAMILY: ClassVar[dict[str, Any]] = AR_ONLY

    def __post_init__(self):
        super().__post_init__()
        if self.H_cycles < 1 or self.L_cycles < 1:
            raise ConfigError(f"model: H_cycles ({self.H_cycles}) and L_cycles ({self.L_cycles}) must be >= 1")

    def weight(self, name: str) -> float:
        """loss_weights (default 1) times the codebook weighting (``codebook_weights``) for c0, c1, ..."""
        if name[:1] == "c" and name[1:].isdigit() and int(name[1:]) < self.n_q:
            return codebook_weights(self.n_q)[int(name[1:])] * super().weight(name)
        return super().weight(name)


AnyTalkerConfig = TalkerConfig | TRMConfig  # the type of a config's model section


def talker_config(**fields: Any) -> TalkerConfig | TRMConfig:
    """The config of the family named by ``arch`` (default ar) from flat keys, old ones mapped as above."""
    return model_from_dict(AnyTalkerConfig, fields, source="talker_config")


def codebook_weights(n_q: int) -> list[float]:
    """Codebook 0 (the coarse structure every later codebook refines) weighs 2.0, codebooks 1..7 fall linearly
    from 1.5 to 1.0, the rest 1.0; normalised to mean 1 so the total stays on the scale of one cross-entropy."""
    raw = [2.0] + [1.5 - 0.5 * (k - 1) / 6 for k in range(1, 8)] + [1.0] * max(n_q - 8, 0)
    raw = raw[:n_q]
    mean = sum(raw) / len(raw)
    return [w / mean for w in raw]
