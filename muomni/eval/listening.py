"""A static listening page from evaluation reports: ``index.html`` beside the wavs, opened from disk.

Per held-out sentence: its text, then for each system side by side an audio player, a small mel
picture, each recogniser's transcript and word error (a suspected hallucination in red) and, where the
report rated it, its DNSMOS ratings (``muomni.eval.mos``). The summary tables of the reports come first: word
error per recogniser and mean DNSMOS per system. Links are relative to the page, so the folder can be
moved or zipped; no script, no server.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from muomni.eval.mos import FIELD_LABELS, FIELDS

LABELS = {
    "ground_truth": "ground truth",
    "original": "Griffin-Lim, original mels",
    "griffinlim": "Griffin-Lim, original mels (vocoder eval)",
    "hifigan": "HiFi-GAN, original mels",
    "universal": "universal HiFi-GAN (resample adapter), original mels",
    "universal_stretch": "universal HiFi-GAN (stretch adapter), original mels",
    "codec": "codec round trip (Griffin-Lim)",
    "tts_hifigan": "TTS + HiFi-GAN",
    "tts_universal": "TTS + universal HiFi-GAN",
    "tts_universal_stretch": "TTS + universal HiFi-GAN (stretch)",
    "tts_griffinlim": "TTS + Griffin-Lim",
}
ORDER = list(LABELS)

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table.summary { border-collapse: collapse; margin-bottom: 1em; }
table.summary td, table.summary th { border: 1px solid #bbb; padding: 2px 8px; text-align: right; }
table.summary td:first-child, table.summary th:first-child { text-align: left; }
.sentence { border-top: 1px solid #ccc; padding: 0.6em 0; }
.row { display: flex; flex-wrap: wrap; gap: 10px; }
.system { width: 260px; font-size: 12px; }
.system img { width: 256px; height: 64px; image-rendering: pixelated; display: block; }
.system audio { width: 256px; }
.bad { color: #b00; font-weight: bold; }
.hyp { color: #555; }
.mos { color: #246; }
"""


def _label(system: str) -> str:
    return LABELS.get(system, system.replace("_", " "))


def _link(path: str, page_dir: Path) -> str:
    return html.escape(Path(os.path.relpath(Path(path).resolve(), page_dir.resolve())).as_posix(), quote=True)


def _summary(report: dict) -> str:
    labels = report["asr"]["recognisers"]
    mos = report.get("mos", {}).get("by_system", {})
    head = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    head += "".join(f"<th>{FIELD_LABELS[k]}</th>" for k in FIELDS if mos)
    rows = "".join(
        f"<tr><td>{html.escape(_label(system))}</td>"
        + "".join(f"<td>{report['wer_by_asr'][label][system]:.3f}</td>" for label in labels)
        + "".join(f"<td>{mos[system][k]:.2f}</td>" for k in FIELDS if system in mos) + "</tr>"
        for system in report["wer_by_asr"][labels[0]])
    title = html.escape(report.get("kind", "evaluation"))
    what = "word error and DNSMOS (1-5; a second opinion, trained on noise suppression)" if mos else "word error"
    return (f"<h3>{title}: {what} ({len(report['per_utterance'])} utterances)</h3>"
            f"<table class='summary'><tr><th>system</th>{head}</tr>{rows}</table>")


def write_listening_page(page: str | Path, reports: list[dict], title: str = "muomni listening page",
                         pictures: list[Path] = ()) -> Path:
    """Write ``page`` from reports carrying ``per_utterance`` (``muomni.eval.scoring.score_systems``); systems of the
    same utterance id from several reports go side by side, the first report's copy of a system kept.
    ``pictures``: training curves (``muomni.plot``'s speech.png of each run) shown and linked after the tables."""
    page = Path(page)
    sentences: dict[str, dict] = {}
    for report in reports:
        for utt in report.get("per_utterance", []):
            entry = sentences.setdefault(utt["id"], {"speaker": utt["speaker"], "reference": utt["reference"],
                                                    "systems": {}})
            for name, system in utt["systems"].items():
                if "wav" in system:
                    entry["systems"].setdefault(name, system)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [_summary(r) for r in reports if r.get("per_utterance")]
    if pictures:  # named by their run folder (plots/<run>/speech.png)
        parts.append("<h3>Word error during training</h3><div class='row'>" + "".join(
            f"<a href='{_link(p, page.parent)}'><img style='width:480px' alt='{html.escape(Path(p).parent.name)}' "
            f"src='{_link(p, page.parent)}'></a>" for p in pictures) + "</div>")
    parts.append("<p>Word error per recogniser under each system; <span class='bad'>red</span> marks a "
                 "transcript that looks like a recogniser loop (far longer than the sentence, or repetitive).</p>")
    for uid, s in sentences.items():
        parts.append(f"<div class='sentence'><b>{html.escape(uid)}</b> ({html.escape(s['speaker'])}): "
                     f"{html.escape(s['reference'])}<div class='row'>")
        for name in sorted(s["systems"], key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
            system = s["systems"][name]
            parts.append(f"<div class='system'><b>{html.escape(_label(name))}</b> ({system['duration']:.1f} s)<br>"
                         f"<audio controls preload='none' src='{_link(system['wav'], page.parent)}'></audio>")
            if system.get("mel_png"):
                parts.append(f"<img alt='mel' src='{_link(system['mel_png'], page.parent)}'>")
            for asr, t in system["transcripts"].items():
                cls = "bad" if t["hallucination"] else "hyp"
                note = f" [{html.escape(t['hallucination'])}]" if t["hallucination"] else ""
                parts.append(f"<div class='{cls}'>{html.escape(asr)} {t['word_error']:.2f}: "
                             f"{html.escape(t['hypothesis'])}{note}</div>")
            if system.get("mos"):
                parts.append("<div class='mos'>" + ", ".join(f"{FIELD_LABELS[k]} {system['mos'][k]:.2f}"
                                                             for k in FIELDS) + "</div>")
            parts.append("</div>")
        parts.append("</div></div>")
    parts.append("</body></html>")
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return page
