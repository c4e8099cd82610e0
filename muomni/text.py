"""Text front-end: normalisation and the tokenizer (characters, or phonemes through espeak-ng).

The Talker reads token ids; what it hears in training is the normalised text of the corpus
(the demo corpus stores the exact string flite read), so the same ``normalize_text`` runs at
training and at inference. The vocabulary is a plain list of symbols saved with every
checkpoint (``to_dict``/``from_dict``), so a model never depends on the corpus it came from.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from collections.abc import Callable, Iterable

PAD, UNK = "<pad>", "<unk>"
PUNCTUATION = ".,?!'-;:"
LETTERS = "abcdefghijklmnopqrstuvwxyz"
IPA = "æçðŋɐɑɒɔəɚɛɜɡɪɹɾʃʊʌʒʔˈˌːθᵻ\u0329"  # what espeak-ng en-us writes beyond ASCII letters
MODES = ("chars", "phonemes")

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}
_ABBREVIATIONS = {"mr.": "mister", "mrs.": "missus", "ms.": "miss", "dr.": "doctor", "st.": "saint",
                  "jr.": "junior", "sr.": "senior", "vs.": "versus", "etc.": "et cetera", "no.": "number"}


def number_to_words(n: int) -> str:
    """Cardinal English words without hyphens or "and": 42 -> "forty two"."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = "" if n % 100 == 0 else " " + number_to_words(n % 100)
        return _ONES[n // 100] + " hundred" + rest
    for scale, name in _SCALES:
        if n >= scale:
            rest = "" if n % scale == 0 else " " + number_to_words(n % scale)
            return number_to_words(n // scale) + " " + name + rest
    raise AssertionError("unreachable")


def year_to_words(n: int) -> str:
    """Years read in pairs, as people say them: 1999 -> "nineteen ninety nine", 1905 -> "nineteen oh five"."""
    if not 1100 <= n <= 1999:
        return number_to_words(n)
    high, low = divmod(n, 100)
    if low == 0:
        return number_to_words(high) + " hundred"
    return number_to_words(high) + (" oh " if low < 10 else " ") + number_to_words(low)


def ordinal_to_words(n: int) -> str:
    """3 -> "third", 21 -> "twenty first", 100 -> "one hundredth"."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _digits(s: str) -> str:
    return " ".join(_ONES[int(c)] for c in s)


def _money(m: re.Match) -> str:
    dollars, cents = int(m.group(1).replace(",", "")), int((m.group(2) or "0").ljust(2, "0"))
    out = f"{number_to_words(dollars)} dollar{'s' if dollars != 1 else ''}"
    if cents:
        out += f" {number_to_words(cents)} cent{'s' if cents != 1 else ''}"
    return out


def _time(m: re.Match) -> str:
    hours, minutes = int(m.group(1)), int(m.group(2))
    if minutes == 0:
        return f"{number_to_words(hours)} o'clock"
    return f"{number_to_words(hours)} {'oh ' if minutes < 10 else ''}{number_to_words(minutes)}"


def _number(s: str) -> str:
    """A plain or decimal number: "3.5" -> "three point five"."""
    whole, _, frac = s.partition(".")
    return _cardinal(whole) + (f" point {_digits(frac)}" if frac else "")


def _cardinal(s: str) -> str:
    grouped, s = "," in s, s.replace(",", "")
    if len(s) > 1 and s.startswith("0"):
        return _digits(s)  # codes such as 007 are read digit by digit
    n = int(s)
    # four bare digits read as a year; "1,250" is written as a quantity, never a year
    return year_to_words(n) if len(s) == 4 and not grouped else number_to_words(n)


_NUMBER_RULES: tuple[tuple[re.Pattern, object], ...] = (
    (re.compile(r"\$(\d[\d,]*)(?:\.(\d{1,2}))?\b"), _money),
    (re.compile(r"\b(\d{1,2}):(\d{2})\b"), _time),
    (re.compile(r"(\d[\d,]*(?:\.\d+)?)\s?%"), lambda m: _number(m.group(1)) + " percent"),
    (re.compile(r"\b(\d+)(st|nd|rd|th)\b"), lambda m: ordinal_to_words(int(m.group(1)))),
    (re.compile(r"\d[\d,]*\.\d+"), lambda m: _number(m.group(0))),
    (re.compile(r"\d{1,3}(?:,\d{3})+|\d+"), lambda m: _cardinal(m.group(0))),
)
_ABBREVIATION_RE = re.compile(r"\b(" + "|".join(re.escape(a) for a in _ABBREVIATIONS) + r")(?=\s|$)")
_DROP_RE = re.compile(rf"[^\w\s{re.escape(PUNCTUATION)}]|_")


def normalize_text(text: str) -> str:
    """Lowercase, numbers spelled out, symbols dropped, whitespace collapsed.

    The punctuation in PUNCTUATION is kept because it shapes prosody; other symbols become
    spaces (``&`` reads as "and"). Example: ``"At 7:30, 42 of them paid $3.50!"`` ->
    ``"at seven thirty, forty two of them paid three dollars fifty cents!"``.
    """
    text = text.lower().replace("&", " and ").replace("\u2019", "'")
    text = _ABBREVIATION_RE.sub(lambda m: _ABBREVIATIONS[m.group(1)], text)
    for pattern, repl in _NUMBER_RULES:
        text = pattern.sub(lambda m, r=repl: f" {r(m)} ", text)
    text = _DROP_RE.sub(" ", re.sub(r"-{2,}", " - ", text))
    text = re.sub(r"\s+([.,?!;:])", r"\1", text)  # "word ," -> "word,"
    return " ".join(text.split())


class EspeakPhonemizer:
    """Normalised text -> IPA through the espeak-ng command, many sentences per call, cached.

    espeak-ng drops punctuation and starts a new output line at every clause, so each sentence
    is cut at punctuation first, the pieces go one per line, and the punctuation is put back.
    """

    _CLAUSE_BREAK = re.compile(r"([.,?!;:]+)")  # apostrophes and hyphens stay inside words

    def __init__(self, voice: str = "en-us"):
        if shutil.which("espeak-ng") is None:
            raise RuntimeError("phoneme input needs espeak-ng, which is not on PATH: "
                               "install the Debian package espeak-ng (apt-get install espeak-ng)")
        self.voice = voice
        self.cache: dict[str, str] = {}

    def __call__(self, texts: list[str]) -> list[str]:
        todo = sorted({t for t in texts if t not in self.cache})
        if todo:
            pieces = [[p for p in self._CLAUSE_BREAK.split(t) if p.strip()] for t in todo]
            clauses = sorted({p.strip() for ps in pieces for p in ps if any(c.isalnum() for c in p)})
            ipa = dict(zip(clauses, self._run(clauses)))
            for text, ps in zip(todo, pieces):
                self.cache[text] = self._join(ps, ipa)
        return [self.cache[t] for t in texts]

    @staticmethod
    def _join(pieces: list[str], ipa: dict[str, str]) -> str:
        """Phonemised clauses separated by spaces, punctuation glued to the clause before it."""
        out = ""
        for piece in (p.strip() for p in pieces):
            out += (" " if out else "") + ipa[piece] if piece in ipa else piece
        return out

    def _run(self, lines: list[str]) -> list[str]:
        """One espeak-ng call for all lines; one call per line if the output does not line up.

        Text always goes on stdin: as an argument, a line that starts with '-' would be read as an option
        ("-wowned" asks for a wav file named "owned" and gives no phonemes).
        """
        if not lines:
            return []
        cmd = ["espeak-ng", "-q", "--ipa", "-v", self.voice]

        def run(text: str) -> str:
            return subprocess.run(cmd, input=text + "\n", capture_output=True, text=True, check=True).stdout

        result = [line.strip() for line in run("\n".join(lines)).splitlines() if line.strip()]
        if len(result) != len(lines):
            result = [run(line).strip().replace("\n", " ") for line in lines]
        return result


class TextProcessor:
    """Text -> token ids. ``mode="chars"`` reads normalised characters; ``"phonemes"`` reads IPA from espeak-ng.

    Ids 0 and 1 are padding and unknown; the rest of ``vocab`` are single symbols (a space marks
    a word boundary). Build it from the training texts with ``TextProcessor.build``.
    """

    pad_id, unk_id = 0, 1

    def __init__(self, mode: str = "chars", vocab: list[str] | None = None):
        if mode not in MODES:
            raise ValueError(f"text mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self._phonemizer: EspeakPhonemizer | None = None
        if vocab is None:
            vocab = [PAD, UNK, " ", *PUNCTUATION, *LETTERS, *(IPA if mode == "phonemes" else "")]
        if vocab[:2] != [PAD, UNK] or len(set(vocab)) != len(vocab):
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r} and has no repeated symbol")
        self.vocab = list(vocab)
        self.index = {s: i for i, s in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    @classmethod
    def build(cls, texts: Iterable[str], mode: str = "chars") -> TextProcessor:
        """The base symbols plus every symbol that the corpus texts produce, sorted."""
        base = cls(mode)
        symbols = {c for s in base.symbols_batch(list(texts)) for c in s}
        built = cls(mode, base.vocab[:2] + sorted(symbols | set(base.vocab[2:])))
        built._phonemizer = base._phonemizer  # keep the phoneme cache of the corpus
        return built

    def symbols(self, text: str) -> str:
        """The string whose characters are the tokens: normalised text or its IPA."""
        return self.symbols_batch([text])[0]

    def symbols_batch(self, texts: list[str]) -> list[str]:
        """Like ``symbols`` for many texts; in phoneme mode one espeak-ng call for all of them."""
        normalized = [normalize_text(t) for t in texts]
        if self.mode == "chars":
            return normalized
        if self._phonemizer is None:
            self._phonemizer = EspeakPhonemizer()
        return self._phonemizer(normalized)

    def encode(self, text: str) -> list[int]:
        """Token ids of one text; symbols outside the vocabulary become unk, with one warning naming them."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of many texts (one espeak-ng call in phoneme mode), one warning for all unknown symbols."""
        for text in texts:
            if not text or not text.strip():
                raise ValueError("cannot encode empty text")
        batch = self.symbols_batch(texts)
        for text, symbols in zip(texts, batch):
            if not symbols:
                raise ValueError(f"text {text!r} has nothing to read after normalisation")
        unknown = sorted({c for symbols in batch for c in symbols if c not in self.index})
        if unknown:
            where = f" (in {texts[0][:60]!r})" if len(texts) == 1 else f" (in {len(texts)} texts)"
            warnings.warn(f"characters not in the vocabulary, read as {UNK}: "
                          f"{', '.join(repr(c) for c in unknown)}{where}", stacklevel=3)
        return [[self.index.get(c, self.unk_id) for c in symbols] for symbols in batch]

    def decode(self, ids: Iterable[int]) -> str:
        """Symbols of ids, padding left out (for logs and sample pages)."""
        return "".join(self.vocab[i] for i in ids if i != self.pad_id)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, d: dict) -> TextProcessor:
        unknown = set(d) - {"mode", "vocab"}
        if unknown:
            raise ValueError(f"text processor dict has unknown keys {sorted(unknown)}")
        return cls(d["mode"], list(d["vocab"]))


_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+|\s+(?=- )")


def split_text(text: str, fits: Callable[[str], bool]) -> list[str]:
    """Pieces of a text that each ``fits`` (say, within a Talker's trained text length), for synthesis one by one.

    The normalised text whole when it fits; else its sentences; a sentence that does not fit is cut at clause
    boundaries (, ; : -) and a clause that does not fit at word boundaries, neighbouring clauses (or words)
    packed back together while they fit. A single word that does not fit stays whole.
    """
    text = normalize_text(text)
    if fits(text):
        return [text]
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        if fits(sentence):
            pieces.append(sentence)
            continue
        for clause in _pack(_CLAUSE_END.split(sentence), fits):
            pieces += [clause] if fits(clause) else _pack(clause.split(), fits)
    return pieces


def _pack(parts: list[str], fits: Callable[[str], bool]) -> list[str]:
    """Consecutive parts joined by spaces into as few pieces as fit (greedy, in order)."""
    out = [parts[0]]
    for part in parts[1:]:
        joined = f"{out[-1]} {part}"
        if fits(joined):
            out[-1] = joined
        else:
            out.append(part)
    return out
