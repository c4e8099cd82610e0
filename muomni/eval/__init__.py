"""Evaluation (docs/DESIGN.md §9), one module a job; this package re-exports nothing.

- ``asr``: the speech recognisers (Whisper, pocketsphinx) behind one interface;
- ``wer``: the word-error normaliser and arithmetic;
- ``mos``: naturalness by DNSMOS, beside word error;
- ``scoring``: several systems' audio of the same held-out utterances, scored by one or more recognisers;
- ``evaluate``: the evaluation CLI, ``python -m muomni evaluate {codec,vocoder,tts}``;
- ``listening``: a static listening page beside the wavs.
"""
