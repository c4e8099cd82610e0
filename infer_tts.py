"""Text in, wav out: a Talker checkpoint (it carries its codec) and, optionally, a HiFi-GAN vocoder.

    python infer_tts.py --talker checkpoints/demo/talker/best.pt --text "Hello there." --out hello.wav
    python infer_tts.py --talker T.pt --vocoder V.pt --text-file lines.txt --out-dir outputs/mine

A text file holds one sentence or paragraph per line, optionally ``speaker|text``; lines starting with
``#`` are comments. A text longer than the Talker trained on is synthesized in pieces (sentences, then
clauses) joined with short pauses, so a paragraph sounds as its sentences do one by one. Each line
becomes one wav with a mel picture beside it, and ``manifest.json`` records text, speaker, duration,
real-time factor and the vocoder used. ``--talker`` and
``--vocoder`` take a checkpoint file or a folder written by ``python -m muomni export``; ``--vocoder universal``
names the pretrained universal HiFi-GAN (the 'universal' extra; muomni/pretrained.py).
Without ``--vocoder`` the mels are inverted with Griffin-Lim (said once).

``--stream`` plays while it synthesizes: raw 16 kHz float32 little-endian samples go to stdout chunk by
chunk (``--stream --text "Hello." | aplay -r 16000 -f FLOAT_LE``), or with ``--out`` into a wav that grows
as they arrive; the audio is the offline synthesis of the same text (``muomni.synthesis.stream_synthesis``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings
from pathlib import Path

import muomni  # noqa: F401  (before torch: it sets the OpenMP wait policy torch reads when it loads)

# isort: split
import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from muomni.audio import SAMPLE_RATE, mel_basis, mel_to_png, save_wav
from muomni.checkpoint import CheckpointError
from muomni.config import ConfigError
from muomni.files import write_json
from muomni.load import load_talker, load_vocoder
from muomni.streaming import write_chunks
from muomni.synthesis import stream_synthesis, synthesize_with_mels
from muomni.synthesis_config import MEL_FROM, STREAM_CHUNK_FRAMES, SynthesisConfig
from muomni.training.device import select_device


def read_lines(path: Path, default_speaker: str | None) -> list[tuple[str | None, str]]:
    """(speaker, text) per non-comment line; a line with an empty text is an error naming the line."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SystemExit(f"error: {path}: no such text file") from None
    except UnicodeDecodeError as err:
        line = raw_line_number(path.read_bytes(), err.start)
        raise SystemExit(f"error: {path} line {line}: text is not UTF-8") from None
    lines = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        speaker, sep, text = line.partition("|")
        speaker, text = (speaker.strip(), text) if sep else (default_speaker, line)
        if not text.strip():
            raise SystemExit(f"error: {path} line {number}: empty text")
        lines.append((speaker, text.strip()))
    if not lines:
        raise SystemExit(f"error: {path}: no sentence in it (blank lines and # comments only)")
    return lines


def raw_line_number(data: bytes, offset: int) -> int:
    return data[:offset].count(b"\n") + 1


def slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "utterance"


def build_parser() -> argparse.ArgumentParser:
    """The command line: checkpoints, text, output, generation settings and the --stream options."""
    defaults = SynthesisConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--talker", required=True, help="Talker checkpoint or exported folder")
    parser.add_argument("--vocoder", help="HiFi-GAN checkpoint or exported folder, or 'universal' (HiFi-GAN V1's "
                                          "pretrained universal generator through a mel adapter; 'universal:stretch' "
                                          "for the faster adapter) (default: Griffin-Lim)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="a sentence or a paragraph")
    source.add_argument("--text-file", type=Path, help="one sentence or paragraph per line, optionally speaker|text")
    parser.add_argument("--speaker", help="speaker name or id (default: the first speaker)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--out", type=Path, help="output wav (one sentence)")
    target.add_argument("--out-dir", type=Path, help="output folder (default: outputs/tts)")
    parser.add_argument("--temperature", type=float, default=defaults.temperature, help="0 = greedy decoding")
    parser.add_argument("--top-k", type=int, default=defaults.top_k)
    parser.add_argument("--top-p", type=float, default=defaults.top_p)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds, help="longest audio per sentence")
    parser.add_argument("--griffin-lim-iters", type=int, default=defaults.griffin_lim_iters)
    parser.add_argument("--mel-from", choices=MEL_FROM, default=defaults.mel_from,
                        help="expected: the codec decodes each frame's expected code vectors under the Talker's "
                             "distribution (clearer); codes: the generated codes themselves")
    parser.add_argument("--batch", type=int, default=8, help="sentences generated together")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true",
                        help="compile the decoding step (CUDA graphs on a GPU); the first batch warms it up")
    parser.add_argument("--stream", action="store_true",
                        help="write audio while synthesizing: raw 16 kHz float32 PCM to stdout, or a growing --out wav")
    parser.add_argument("--chunk-frames", type=int, default=STREAM_CHUNK_FRAMES,
                        help="--stream: code frames (80 ms each) per chunk")
    parser.add_argument("--lookahead", type=int, default=None,
                        help="--stream: code frames waited for past a chunk (default: the codec decoder's receptive "
                             "field, which gives the offline audio; fewer start sooner with an edge error)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse and check the command line, load the checkpoints, then synthesize every line or stream one
    -> exit status (2 for a checkpoint or text it cannot use)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.stream and (args.text is None or args.out_dir is not None or args.compile):
        parser.error("--stream takes one --text, writes stdout or --out, and runs uncompiled")
    warnings.showwarning = lambda message, *_, **__: print(f"warning: {message}", file=sys.stderr)

    lines = [(args.speaker, args.text)] if args.text is not None else read_lines(args.text_file, args.speaker)
    if args.text is not None and not args.text.strip():
        parser.error("--text is empty")
    if args.out is not None and len(lines) > 1:
        parser.error(f"--out names one wav but {args.text_file} holds {len(lines)} sentences; use --out-dir")
    device = select_device(args.device)
    try:
        bundle = load_talker(args.talker, device)
        vocoder = load_vocoder(args.vocoder, device) if args.vocoder else None
    except (CheckpointError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.stream:
        return stream(args, bundle, vocoder)
    return synthesize_lines(args, lines, bundle, vocoder)


def synthesize_lines(args: argparse.Namespace, lines: list[tuple[str | None, str]], bundle, vocoder) -> int:
    """Every (speaker, text) line, --batch at a time -> a wav and a mel picture each, and the manifest."""
    out_dir = args.out.parent if args.out else (args.out_dir or Path("outputs/tts"))
    out_dir.mkdir(parents=True, exist_ok=True)
    vocoder_name = f"HiFi-GAN ({args.vocoder})" if vocoder is not None else f"Griffin-Lim ({args.griffin_lim_iters} it)"

    manifest = []
    bar = tqdm(total=len(lines), unit="sentence", disable=len(lines) < 2)
    for start in range(0, len(lines), args.batch):
        chunk = lines[start:start + args.batch]
        begin = time.perf_counter()
        try:
            mels, wavs = synthesize_with_mels(
                bundle, [t for _, t in chunk], [s if s is not None else 0 for s, _ in chunk], vocoder,
                n_iter=args.griffin_lim_iters, mel_from=args.mel_from, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p,
                seed=args.seed, max_frames=int(args.max_seconds * bundle.codec.cfg.frame_rate), compile=args.compile)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        elapsed = time.perf_counter() - begin
        total_audio = sum(len(w) for w in wavs) / SAMPLE_RATE
        for k, ((speaker, text), mel, wav) in enumerate(zip(chunk, mels, wavs)):
            index = start + k
            path = args.out or out_dir / f"{index:03d}_{slug(text)}.wav"
            save_wav(path, wav)
            mel_to_png(path.with_suffix(".png"), [mel], [text[:90]])
            seconds = len(wav) / SAMPLE_RATE
            manifest.append({"wav": str(path), "text": text, "speaker": speaker if speaker is not None else 0,
                             "duration": round(seconds, 3), "vocoder": vocoder_name, "mel_from": args.mel_from,
                             "rtf": round(elapsed / max(total_audio, 1e-9), 4)})
            bar.update(1)
            if len(lines) == 1:
                print(f"{path} ({seconds:.2f} s, real-time factor {manifest[-1]['rtf']:.3f}, {vocoder_name})")
    bar.close()
    manifest_path = args.out.with_suffix(".json") if args.out else out_dir / "manifest.json"
    write_json(manifest_path, {"talker": str(args.talker), "vocoder": vocoder_name, "items": manifest})
    if len(lines) > 1:
        print(f"{len(lines)} wavs in {out_dir}; manifest {manifest_path}")
    return 0


def stream(args: argparse.Namespace, bundle, vocoder) -> int:
    """--stream: chunks to stdout as raw float32 or into a growing 16-bit wav (--out), a summary on stderr."""
    out = None
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        out = sf.SoundFile(args.out, "w", SAMPLE_RATE, 1, subtype="PCM_16", format="WAV")
    if vocoder is None:
        mel_basis()  # Griffin-Lim's mel filters load librosa on first use (seconds): setup, as loading the Talker

    def write(chunk: np.ndarray) -> None:
        out.write(np.clip(chunk, -1.0, 1.0))
        out.flush()  # the header follows: the file plays up to here

    begin = time.perf_counter()
    try:
        first, samples = write_chunks(
            stream_synthesis(bundle, args.text, args.speaker, vocoder, chunk_frames=args.chunk_frames,
                             lookahead=args.lookahead, n_iter=args.griffin_lim_iters, mel_from=args.mel_from,
                             temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                             max_frames=int(args.max_seconds * bundle.codec.cfg.frame_rate)),
            write if out is not None else None, begin)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the player quit: nothing more to say, and nothing left to flush at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if out is not None:
            out.close()
    elapsed, seconds = time.perf_counter() - begin, samples / SAMPLE_RATE
    print(f"{args.out or 'stdout'}: {seconds:.2f} s streamed, first audio after {first or 0:.3f} s, real-time factor "
          f"{elapsed / max(seconds, 1e-9):.3f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
