"""The inference defaults, in one place: ``SynthesisConfig`` and the constants its fields default to.

Every user-facing default of synthesis reads from here: ``muomni.synthesis``'s functions, ``infer_tts.py``'s
options, ``python -m muomni evaluate``, the ONNX runtime's methods and options, the speech check that training
runs and the codec's training samples. The module imports nothing, not even torch, so that the torch-free ONNX
runtime (``muomni.onnx_runtime``) and the numpy Griffin-Lim read the same numbers, and so that the model files
(``muomni.models``, which never import ``muomni.synthesis``) can take their primitives' defaults from it.

Sampling temperature. Synthesis decodes greedily (``temperature`` 0.0): on held-out sentences greedy decoding
is the reproducible, more intelligible choice, and the speech check and the evaluation score it. Two other
temperatures are deliberate, not restatements of this one:

- the model primitives (``muomni.models.sampling``, the Talkers' ``generate``) default to 1.0: the model's own
  distribution, the neutral value of a sampler; synthesis always passes its own;
- the prompts a Talker run renders every ``sample_every`` steps are drawn at ``train.sample_temperature``
  (0.7, ``train_talker.py``): they show samples of the distribution the Talker has learned, beside the greedy
  decode the speech check scores.
"""

from __future__ import annotations

from dataclasses import dataclass

GRIFFIN_LIM_ITERS = 32  # Griffin-Lim iterations, wherever Griffin-Lim stands in for a vocoder
MEL_FROM = ("expected", "codes")  # how the codec turns the Talker's output into a mel (SynthesisConfig.mel_from)
PAUSE_SECONDS = 0.2  # silence between the pieces of a text split to fit the Talker (synthesis.split_for_talker)

# Streaming (docs/DESIGN.md §11), in code frames of 80 ms and mel frames of 16 ms.
STREAM_CHUNK_FRAMES = 4  # code frames per chunk: 320 ms
GLOBAL_LOOKAHEAD = 8  # code frames waited for past a chunk when the codec decoder attends (no exact lookahead)
GRIFFIN_LIM_CONTEXT = 12  # mel frames of Griffin-Lim window on each side of a chunk ...
GRIFFIN_LIM_CROSSFADE = 4  # ... of which the first right ones are faded into the next chunk (streaming.WarmGriffinLim)


@dataclass(frozen=True)
class SynthesisConfig:
    """The knobs of text -> speech at inference, with their defaults."""

    griffin_lim_iters: int = GRIFFIN_LIM_ITERS  # when no vocoder is given
    mel_from: str = "expected"  # "expected": the codec decodes each frame's expected code vectors; "codes": the picks
    temperature: float = 0.0  # 0 = greedy decoding (see the module's docstring for the other temperatures)
    top_k: int | None = None  # None: no top-k cut
    top_p: float | None = None  # None: no nucleus cut
    seed: int | None = 0  # the sampling generator's seed (None: unseeded)
    duration_scale: float = 1.0  # predicted durations times this (a Talker with a duration predictor)
    max_seconds: float = 20.0  # the longest audio one text may become (the CLIs' --max-seconds)

    def __post_init__(self):
        if self.mel_from not in MEL_FROM:
            raise ValueError(f"mel_from = {self.mel_from!r}: expected one of {', '.join(MEL_FROM)}")
