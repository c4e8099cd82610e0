"""Corpus readers: LJSpeech-style metadata.csv, filelists, and folders of wavs with transcripts.

Every reader yields the same ``Item`` list. Problems found while reading (a wav missing, a
transcript missing or not UTF-8, a malformed line) are kept on the item as ``problem`` rather
than raised, so that the checker can report every bad item of a corpus in one pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from muomni.audio import AudioError, audio_info

AUDIO_SUFFIXES = (".wav", ".flac")
TRANSCRIPT_SUFFIXES = (".txt", ".lab")
FORMATS = ("auto", "ljspeech", "filelist", "folder")


@dataclass
class Item:
    """One utterance. ``speaker`` is "" in single-speaker corpora; ``duration`` is in seconds
    from the file header (0.0 when the file cannot be read); ``problem`` is "" when reading
    found nothing wrong, else a reason such as "wav missing: wavs/a.wav"."""

    id: str
    path: str
    speaker: str
    text: str
    duration: float
    problem: str = ""


def read_corpus(root: str | os.PathLike, fmt: str = "auto") -> list[Item]:
    """All items of a corpus in file order. ``fmt="auto"``: a folder with metadata.csv is
    LJSpeech, a file is a filelist, any other folder is a folder of wavs with transcripts."""
    root = Path(root)
    if fmt not in FORMATS:
        raise ValueError(f"unknown corpus format {fmt!r}; expected one of {FORMATS}")
    if not root.exists():
        raise ValueError(f"corpus {root} does not exist (build the demo corpus with python -m muomni.data.demo)")
    if fmt == "auto":
        fmt = "filelist" if root.is_file() else "ljspeech" if (root / "metadata.csv").is_file() else "folder"
    if fmt == "ljspeech":
        return read_ljspeech(root)
    if fmt == "filelist":
        return read_filelist(root)
    return read_folder(root)


def read_ljspeech(root: Path) -> list[Item]:
    """``metadata.csv`` lines ``id|text|normalized_text`` (LJSpeech), ``id|speaker|text|normalized_text``
    (the demo corpus) or ``id|text``, with audio at ``wavs/<id>.wav``. The normalised text is used."""
    meta = root / "metadata.csv" if root.is_dir() else root
    items = []
    for lineno, line, problem in _lines(meta):
        fields = line.split("|")
        speaker = ""
        if len(fields) == 4:
            uid, speaker, raw, norm = fields
        elif len(fields) == 3:
            uid, raw, norm = fields
        elif len(fields) == 2:
            uid, raw = fields
            norm = ""
        else:
            uid, raw, norm = f"{meta.name}:{lineno}", "", ""
            problem = problem or f"malformed line: {meta} line {lineno} has {len(fields)} fields, expected 2 to 4"
        items.append(_item(uid.strip(), meta.parent / "wavs" / f"{uid.strip()}.wav", speaker.strip(),
                           (norm or raw).strip(), problem))
    return items


def read_filelist(path: Path) -> list[Item]:
    """Lines ``path|text`` or ``path|speaker|text``; audio paths are relative to the filelist.
    The id is the audio path relative to the filelist's folder, without its suffix."""
    items = []
    for lineno, line, problem in _lines(path):
        fields = line.split("|")
        if len(fields) not in (2, 3):
            problem = problem or f"malformed line: {path} line {lineno} has {len(fields)} fields, expected 2 or 3"
            fields = [f"{path.name}:{lineno}", ""]
        audio, text = fields[0].strip(), fields[-1].strip()
        speaker = fields[1].strip() if len(fields) == 3 else ""
        uid = str(Path(audio).with_suffix("").as_posix())
        items.append(_item(uid, path.parent / audio, speaker, text, problem))
    return items


def read_folder(root: Path) -> list[Item]:
    """Audio files anywhere under root, each with a same-named .txt or .lab transcript. A file in
    a subfolder takes the subfolder's name as its speaker (``root/<speaker>/<id>.wav``)."""
    items = []
    for audio in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()):
        rel = audio.relative_to(root)
        speaker = rel.parts[0] if len(rel.parts) > 1 else ""
        transcript = next((t for t in (audio.with_suffix(s) for s in TRANSCRIPT_SUFFIXES) if t.is_file()), None)
        text, problem = "", ""
        if transcript is None:
            problem = f"missing transcript: no {audio.with_suffix('.txt').name} or .lab next to {audio}"
        else:
            lines = list(_lines(transcript))
            text = " ".join(line for _, line, _ in lines)
            problem = next((p for _, _, p in lines if p), "")
        items.append(_item(rel.with_suffix("").as_posix(), audio, speaker, text, problem))
    if not items:
        raise ValueError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {root}; expected a folder of "
                         "wavs with transcripts, an LJSpeech folder with metadata.csv, or a filelist")
    return items


def _lines(path: Path):
    """(line number, stripped text, problem) for each non-blank line, decoded as UTF-8 line by line so
    that one bad byte names its line instead of failing the whole file."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line, problem = raw.decode("utf-8").strip(), ""
            except UnicodeDecodeError as err:
                line = raw.decode("utf-8", errors="replace").strip()
                problem = f"text not UTF-8: {path} line {lineno}, byte {raw[err.start]:#04x} at column {err.start + 1}"
            if line:
                yield lineno, line.lstrip("\ufeff"), problem


def _item(uid: str, audio: Path, speaker: str, text: str, problem: str) -> Item:
    """An Item with its duration from the header; a missing wav becomes the item's problem."""
    duration = 0.0
    if not audio.is_file():
        problem = problem or f"wav missing: {audio}"
    else:
        try:
            sample_rate, n_samples, _ = audio_info(audio)
            duration = n_samples / sample_rate
        except AudioError:  # the checker reports it with the reason
            pass
    return Item(uid, str(audio), speaker, text, duration, problem)
