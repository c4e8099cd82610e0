"""Config dataclasses and strict JSON loading (docs/DESIGN.md §10).

A stage's config is a *schema*: a dataclass whose fields are section dataclasses
(``data``, ``model``, ``train``, ...). A JSON file lists sections; ``"base": "other.json"``
(relative to the file) names a config it starts from, so a variant lists only what changes.
An unknown key is an error naming the key, the file and the valid keys; ``--set
section.key=value`` overrides are parsed as JSON and type-checked against the field.

A section may be typed as a union of dataclasses (the Talker families): the value of their first field
(``"arch"``) picks one. A section dataclass may define ``translate_keys(values, where)`` to map the keys
of older configs and checkpoints before the strict check.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


@dataclass
class DataConfig:
    path: str = "data/demo"
    format: str = "auto"  # auto | ljspeech | filelist | folder
    text: str = "chars"  # chars | phonemes (espeak-ng)
    min_seconds: float = 0.2
    max_seconds: float = 20.0
    heldout: float = 0.05  # a fraction if < 1, else a count of utterances
    split_seed: int = 0
    speakers: list[str] = field(default_factory=list)  # empty: every speaker

    def __post_init__(self):
        _choice("data.format", self.format, ("auto", "ljspeech", "filelist", "folder"))
        _choice("data.text", self.text, ("chars", "phonemes"))
        if not 0 <= self.min_seconds < self.max_seconds:
            raise ConfigError(f"data.min_seconds ({self.min_seconds}) must be >= 0 and < data.max_seconds")


CPU_PRECISIONS = ("fp32", "bf16", "auto")  # train.cpu_precision (muomni.training.device.amp_dtype)
SPEECH_ASRS = ("auto", "whisper", "pocketsphinx", "none")  # train.speech_asr (muomni.eval.asr.BACKENDS, auto, none)


@dataclass
class TrainConfig:
    run_name: str = ""  # default: the config file's stem
    out_dir: str = "checkpoints"
    seed: int = 1234
    device: str = "auto"  # auto (cuda, mps, cpu) | cpu | cuda | cuda:1 | mps
    steps: int = 1000
    max_minutes: float = 0.0  # > 0: after this many wall-clock minutes of the loop, save a checkpoint and stop
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 3e-4
    min_lr: float = 0.0  # cosine floor, as a fraction of lr
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    warmup_steps: int = 100
    grad_clip: float = 1.0
    log_every: int = 10
    eval_every: int = 500
    sample_every: int = 1000
    save_every: int = 500
    keep_last: int = 3
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16); never on CPU
    compile: bool = False
    max_bad_steps: int = 10  # non-finite steps in a row (per optimizer) stop the run; fp16 overflows do not count
    wandb: bool = False
    wandb_project: str = "muomni"
    wandb_mode: str = "offline"  # offline | online
    # The speech check (muomni/speech_check.py): every speech_every steps (0 = with each held-out evaluation)
    # and at the last step, the first speech_items held-out utterances are rendered and scored by speech_asr
    # (auto = whisper where installed, else pocketsphinx; none = no check) and, with speech_judge auto, by the
    # naturalness judge where installed. best_by: what best.pt tracks, held-out loss or the check's word error.
    # The full-size presets (*_base, vocoder_v1) and the demo turn it on; the tiny ones, a few seconds of
    # training for trying things out (and every test run), leave it off: a check costs ~10 s on 2 cores.
    speech_every: int = 0
    speech_items: int = 16
    speech_asr: str = "none"
    speech_judge: str = "auto"  # auto | none
    best_by: str = "loss"  # loss | wer

    @classmethod
    def translate_keys(cls, values: dict[str, Any], where: str) -> dict[str, Any]:
        """Run configs written before the stage-only keys left this section gave every stage
        ``num_workers`` (the vocoder's decoding threads): a stage without the key drops it at its old default 0
        and refuses another value, naming it."""
        if "num_workers" not in values or any(f.name == "num_workers" for f in dataclasses.fields(cls)):
            return values
        if values["num_workers"] != 0:
            raise ConfigError(f"{where}.num_workers = {values['num_workers']!r}: only the vocoder decodes its audio "
                              "in threads (train.num_workers); this stage has no such setting")
        return {k: v for k, v in values.items() if k != "num_workers"}

    def __post_init__(self):
        _choice("train.wandb_mode", self.wandb_mode, ("offline", "online"))
        _choice("train.speech_asr", self.speech_asr, SPEECH_ASRS)
        _choice("train.speech_judge", self.speech_judge, ("auto", "none"))
        _choice("train.best_by", self.best_by, ("loss", "wer"))
        if self.best_by == "wer" and self.speech_asr == "none":
            raise ConfigError("train.best_by = 'wer' needs the speech check: set train.speech_asr (auto, whisper, "
                              "pocketsphinx), or train.best_by = 'loss'")
        if self.speech_every < 0 or self.speech_items < 1:
            raise ConfigError(f"train.speech_every must be >= 0 (0 = with each evaluation) and train.speech_items "
                              f">= 1, got {self.speech_every} and {self.speech_items}")
        for name in ("steps", "batch_size", "grad_accum", "log_every", "eval_every", "sample_every",
                     "save_every", "keep_last", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if len(self.betas) != 2:
            raise ConfigError(f"train.betas must be two numbers, got {self.betas}")
        if self.max_minutes < 0:
            raise ConfigError(f"train.max_minutes must be >= 0 (0 = no time limit), got {self.max_minutes}")


@dataclass
class CpuPrecision:
    """The train section's ``cpu_precision``, for the stages that autocast on a CPU (the codec and the Talker:
    ``class CodecTrainConfig(CpuPrecision, TrainConfig)``). bf16 autocast for training on CPU: fp32 | bf16 |
    auto (bf16 only on a CPU with native bf16, e.g. AVX512-BF16, where matmuls run ~2.7x faster); CUDA follows
    train.amp. The vocoder has its own field, which accepts fp32 alone."""

    cpu_precision: str = "fp32"

    def __post_init__(self):
        super().__post_init__()  # the TrainConfig after this class in the stage config's bases
        _choice("train.cpu_precision", self.cpu_precision, CPU_PRECISIONS)


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} = {value!r}: expected one of {', '.join(choices)}")


# ---------------------------------------------------------------- loading


def read_json_with_base(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The JSON at path merged over its ``"base"`` chain (section by section, key by key)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: 'base' chain loops ({' -> '.join(p.name for p in _seen + (path,))})")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config is a JSON object of sections")
    base = raw.pop("base", None)
    merged = read_json_with_base(path.parent / base, _seen + (path,)) if base else {}
    for section, values in raw.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return merged


def load_config(path: str | Path, schema: type[T], overrides: typing.Iterable[str] = ()) -> T:
    """Load a config file into ``schema``, then apply ``section.key=value`` overrides."""
    cfg = config_from_dict(read_json_with_base(path), schema, source=str(path))
    return apply_overrides(cfg, overrides)


def config_from_dict(d: dict[str, Any], schema: type[T], source: str = "config") -> T:
    """Build a schema instance from plain dicts, strict about keys and types."""
    return _build(schema, d, source, prefix="")


@functools.cache
def model_schema(section: Any) -> type:
    """A schema of one section, ``model``, typed ``section`` (a section dataclass or a union of them): the
    shape of what a checkpoint stores as its config, or of a config file read for its model alone."""
    members = typing.get_args(section) or (section,)
    return dataclasses.make_dataclass(
        "ModelSection", [("model", section, field(default_factory=members[0]))])


def model_from_dict(section: Any, model: dict[str, Any], source: str = "config") -> Any:
    """A ``model`` section's dict -> its config as ``section`` (model_schema), strict as config_from_dict."""
    return config_from_dict({"model": model}, model_schema(section), source=source).model


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def apply_overrides(cfg: T, overrides: typing.Iterable[str]) -> T:
    """Apply ``section.key=value`` strings; the value is parsed as JSON, else kept as a string."""
    d = config_to_dict(cfg)
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.lr=1e-3")
        section, name = parts
        if section not in d:
            raise ConfigError(f"--set {item!r}: unknown section {section!r}; valid: {', '.join(d)}")
        if name not in d[section]:  # an earlier override may have switched the section's family (model.arch)
            d = config_to_dict(config_from_dict(d, type(cfg), source="--set"))
        if name not in d[section]:
            raise ConfigError(f"--set {item!r}: unknown key {section}.{name}; valid: {', '.join(d[section])}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        d[section][name] = value
    return config_from_dict(d, type(cfg), source="--set")


def _build(cls: type, values: Any, source: str, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or 'config'}' must be an object, got {values!r}")
    translate = getattr(cls, "translate_keys", None)  # a section that maps the keys of older configs
    if translate is not None:
        values = translate(values, f"{source}: {prefix.rstrip('.')}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in values if k not in fields]
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}'; valid keys"
            f"{' in ' + prefix.rstrip('.') if prefix else ''}: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        tp = _section_class(hints[name], value, source, f"{prefix}{name}")
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, source, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _check_type(value, tp, f"{prefix}{name}", source)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def _section_class(tp: Any, value: Any, source: str, key: str) -> Any:
    """The type to build a value as: tp, or for a union of dataclasses (the Talker families) the member that
    the value names by the members' first field, whose default tells them apart (``"arch": "ar"``)."""
    members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else ()
    if not members or not all(dataclasses.is_dataclass(m) for m in members) or not isinstance(value, dict):
        return tp
    tag = dataclasses.fields(members[0])[0]
    named = {dataclasses.fields(m)[0].default: m for m in members}
    choice = value.get(tag.name, tag.default)
    if choice not in named:
        raise ConfigError(f"{source}: {key}.{tag.name} = {choice!r}: expected one of {', '.join(map(str, named))}")
    return named[choice]


def _check_type(value: Any, tp: Any, key: str, source: str) -> Any:
    """Return value (ints widened to float) if it matches tp, else raise naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _check_type(value, arg, key, source)
            except ConfigError:
                pass
        raise ConfigError(f"{source}: {key} = {value!r} is not of type {_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
    elif origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            item = args[0] if args else Any
            return [_check_type(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{source}: {key} = {value!r} is not of type {_name(tp)}")


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
