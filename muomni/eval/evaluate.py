"""The evaluation CLI: ``python -m muomni evaluate {codec,vocoder,tts} ...`` (docs/DESIGN.md §9).

Each subcommand loads its models and held-out data, makes every system's audio and reports: the
figures that need no recogniser come from ``muomni.metrics``, Griffin-Lim from
``muomni.models.griffinlim``, synthesis from ``muomni.synthesis``. Word error comes from the
recognisers of ``muomni.eval.asr`` (``--asr whisper,pocketsphinx``: Whisper by default where installed; the
first named headlines, the others are scored beside it on the same audio), normalised and counted by
``muomni.eval.wer``. Naturalness is rated beside it by DNSMOS (``--mos dnsmos``, the default where the 'eval' extra
is installed; ``muomni.eval.mos``). Every subcommand prints a table naming its recogniser(s) and writes a JSON report
with a per-utterance section (``muomni.eval.scoring``); with ``--out-dir`` it also writes every system's wavs, a mel
picture of each, and a listening page ``index.html`` beside them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from muomni.audio import SAMPLE_RATE, load_audio, log_mel
from muomni.config import DataConfig
from muomni.data.cache import mel_cache
from muomni.data.split import load_corpus
from muomni.data.tokenize import mel_cache_dir
from muomni.eval.asr import add_asr_arguments, parse_asr
from muomni.eval.listening import write_listening_page
from muomni.eval.mos import FIELDS, add_mos_arguments, resolve_mos
from muomni.eval.scoring import print_word_errors, score_systems
from muomni.load import load_codec, load_talker, load_vocoder
from muomni.metrics import codec_round_trip, mean_scores, vocoder_scores
from muomni.models.griffinlim import mel_to_wav
from muomni.pretrained import is_pretrained_name
from muomni.synthesis import synthesize_with_mels, vocode
from muomni.synthesis_config import MEL_FROM, SynthesisConfig

DEFAULTS = SynthesisConfig()  # the options' defaults: synthesis's (muomni.synthesis_config)
VOCODER_HELP = ("a train_vocoder.py checkpoint (file, run folder or exported folder), or 'universal' (HiFi-GAN V1's "
                "pretrained universal generator behind the default mel adapter; 'universal:stretch' for the other)")


def beside(model: str | Path, name: str) -> Path:
    """Where a report about a model goes: inside it when the model is a (run or exported) folder, else
    next to the checkpoint file."""
    model = Path(model)
    return model / name if model.is_dir() else model.parent / name


def vocoder_system(spec: str | Path, several: bool = False) -> str:
    """A vocoder argument's system name in reports: 'universal' / 'universal_stretch' for a pretrained name,
    'hifigan' for a checkpoint (with its run's name, 'hifigan_<run>', beside other vocoders)."""
    if is_pretrained_name(spec):
        return str(spec).replace(":", "_")
    if not several:
        return "hifigan"
    path = Path(spec)
    return f"hifigan_{path.name if path.is_dir() else path.parent.name}"


def report_path(vocoder: str | Path, kind: str) -> Path:
    """Where a report about a vocoder goes: beside it, or under outputs/ for a pretrained name."""
    if is_pretrained_name(vocoder):
        return Path("outputs") / f"{kind}_{vocoder_system(vocoder)}.json"
    return beside(vocoder, f"{kind}.json")


def mos_fields(scores: dict, system: str) -> dict[str, float]:
    """``{"dnsmos_ovrl": ..., ...}`` of a system in a scored report (empty without --mos)."""
    by_system = scores.get("mos", {}).get("by_system", {})
    return {f"dnsmos_{k}": by_system[system][k] for k in FIELDS} if system in by_system else {}


def print_table(rows: list[tuple[str, object]], title: str) -> None:
    width = max(len(k) for k, _ in rows)
    print(title)
    for key, value in rows:
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}  {text}")


# ----------------------------------------------------------------------------- codec


def evaluate_codec(args: argparse.Namespace) -> dict:
    """Held-out log-mel MSE, codebook usage/perplexity, bit/s and word error of (a) original and (b)
    codec round-trip mels, both through Griffin-Lim."""
    codec = load_codec(args.codec)
    corpus = load_corpus(DataConfig(path=args.data))
    mels = mel_cache(corpus.heldout, mel_cache_dir(args.data), "heldout")  # shared with train_codec.py
    figures, kept = codec_round_trip(codec, mels, corpus.heldout, args.limit)
    if not kept:
        raise ValueError(f"{args.data}: no held-out utterance long enough to evaluate")
    items = [item for item, _, _ in kept]  # word error on the first --limit (slow), both through Griffin-Lim
    systems = {"original": [mel_to_wav(mel) for _, mel, _ in kept], "codec": [mel_to_wav(rec) for _, _, rec in kept]}
    usage, perplexity = figures["usage"], figures["perplexity"]
    scores = score_systems(items, systems, args.asrs, args.out_dir or None, args.mos)
    wer = scores["wer_by_asr"][scores["asr"]["headline"]]
    report = {
        "codec": str(args.codec), "data": str(args.data), "utterances": figures["utterances"],
        "wer_utterances": len(items), "n_codebooks": codec.cfg.n_codebooks, "codebook_size": codec.cfg.codebook_size,
        "bitrate": codec.cfg.bitrate, "mse_std": figures["mse_std"], "mse_raw": figures["mse_raw"],
        "usage": usage, "perplexity": perplexity, "asr_headline": scores["asr"]["headline"],
        "wer_original": wer["original"], "wer_codec": wer["codec"], "wer_delta": wer["codec"] - wer["original"],
        **{f"{k}_original": v for k, v in mos_fields(scores, "original").items()},
        **{f"{k}_codec": v for k, v in mos_fields(scores, "codec").items()},
    }
    rows = [(k, v) for k, v in report.items() if k not in ("usage", "perplexity")]
    rows += [(f"usage[{q}]", u) for q, u in enumerate(usage)]
    rows += [(f"perplexity[{q}]", p) for q, p in enumerate(perplexity)]
    print_table(rows, f"codec evaluation (held-out split, Griffin-Lim on both sides; word error by "
                      f"{scores['asr']['headline']})")
    print_word_errors(scores, "codec")
    return {**report, **scores}


def add_codec_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("codec", help="codec reconstruction: mel MSE, codebook usage, bit/s, word error")
    p.add_argument("--codec", required=True, help="codec checkpoint (train_codec.py)")
    p.add_argument("--data", required=True, help="corpus folder; its held-out split is evaluated")
    p.add_argument("--limit", type=int, default=0,
                   help="word error on the first N held-out utterances only (MSE and usage use all)")
    p.add_argument("--out-dir", default="", help="folder for every system's wavs, mel pictures and index.html")
    add_asr_arguments(p)
    add_mos_arguments(p)
    p.add_argument("--out", "--json", dest="out", default="",
                   help="JSON report path (default: <codec dir>/eval_codec.json)")
    p.set_defaults(func=evaluate_codec, default_out=lambda a: beside(a.codec, "eval_codec.json"))


# ----------------------------------------------------------------------------- vocoder


def evaluate_vocoder(args: argparse.Namespace) -> dict:
    """Each vocoder and Griffin-Lim side by side on held-out utterances' original mels: mel L1, PESQ, STOI,
    word error, DNSMOS and real-time factor (compute seconds per second of audio; lower is faster)."""
    several = len(args.vocoder) > 1
    names = [vocoder_system(v, several) for v in args.vocoder]
    if len(set(names)) != len(names):
        raise ValueError(f"--vocoder: two of {args.vocoder} would be reported as the same system ({names})")
    vocoders = _load_vocoders(names, args.vocoder, args.n_iter)
    corpus = load_corpus(DataConfig(path=args.data))
    items = corpus.heldout[: args.limit] if args.limit else corpus.heldout
    reals, outs, scores, compute = _vocode_heldout(items, vocoders)
    if not items:
        raise ValueError(f"{args.data}: no held-out utterance to evaluate")
    seconds = sum(len(wav) / SAMPLE_RATE for wav in reals)
    asr = score_systems(items, {"ground_truth": reals, **outs}, args.asrs, args.out_dir or None, args.mos)
    wer = asr["wer_by_asr"][asr["asr"]["headline"]]
    report = {"vocoder": args.vocoder[0] if not several else args.vocoder, "vocoders": dict(zip(names, args.vocoder)),
              "data": str(args.data), "utterances": len(items), "audio_seconds": seconds,
              "griffinlim_iterations": args.n_iter, "threads": torch.get_num_threads(),
              "asr_headline": asr["asr"]["headline"], "wer_ground_truth": wer["ground_truth"],
              **{f"{k}_ground_truth": v for k, v in mos_fields(asr, "ground_truth").items()}}
    for name in vocoders:
        report[name] = mean_scores(scores[name])
        report[name]["wer"] = wer[name]
        report[name].update(mos_fields(asr, name))
        report[name]["rtf"] = compute[name] / seconds
    _print_vocoder_table(report, list(vocoders))
    print_word_errors(asr, "vocoder")
    return {**report, **asr}


def _load_vocoders(names: list[str], specs: list[str], n_iter: int) -> dict:
    """{system name: mel (T, 128) -> wav}: each --vocoder, then Griffin-Lim with ``n_iter`` iterations."""
    vocoders = {}
    for name, spec in zip(names, specs):
        generator = load_vocoder(spec)
        vocoders[name] = lambda mel, g=generator: vocode(mel, g)
    vocoders["griffinlim"] = lambda mel: mel_to_wav(mel, n_iter)
    return vocoders


def _vocode_heldout(items: list, vocoders: dict) -> tuple[list, dict, dict, dict]:
    """Every item's original mel through every vocoder -> (the original wavs, {system: wavs}, {system: per-item
    scores against the original}, {system: compute seconds}). Each output is cut to its original's length."""
    reals = []
    outs = {name: [] for name in vocoders}
    scores = {name: [] for name in vocoders}
    compute = dict.fromkeys(vocoders, 0.0)
    for item in items:
        wav = load_audio(item.path)
        mel = log_mel(wav)[0]  # (T, 128)
        reals.append(wav)
        for name, vocoder in vocoders.items():
            start = time.perf_counter()
            out = vocoder(mel)[: len(wav)].cpu().numpy()
            compute[name] += time.perf_counter() - start
            outs[name].append(out)
            scores[name].append(vocoder_scores(wav, out))
    return reals, outs, scores, compute


def _print_vocoder_table(report: dict, systems: list[str]) -> None:
    """The report as a table: a row per metric every system has, a column per system."""
    metrics = [k for k in report[systems[0]] if all(k in report[n] for n in systems)]
    print(f"vocoder evaluation: {report['utterances']} held-out utterances ({report['audio_seconds']:.1f} s) of "
          f"{report['data']}, original mels; ground-truth word error {report['wer_ground_truth']:.4f} "
          f"({report['asr_headline']}); real-time factor on {report['threads']} threads")
    width = max(12, *(len(n) for n in systems))
    print(f"  {'metric':<12}  " + "  ".join(f"{n:>{width}}" for n in systems))
    for k in metrics:
        print(f"  {k:<12}  " + "  ".join(f"{report[n][k]:>{width}.4f}" for n in systems))


def add_vocoder_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vocoder", help="HiFi-GAN(s) vs Griffin-Lim: mel L1, PESQ, STOI, word error, DNSMOS, "
                                       "real-time factor")
    p.add_argument("--vocoder", required=True, nargs="+",
                   help=f"one or more vocoders, each {VOCODER_HELP}; all are scored on the same utterances")
    p.add_argument("--data", required=True, help="corpus folder; its held-out split is evaluated")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N held-out utterances")
    p.add_argument("--n-iter", type=int, default=DEFAULTS.griffin_lim_iters, help="Griffin-Lim iterations")
    p.add_argument("--out-dir", default="", help="folder for every system's wavs, mel pictures and index.html")
    add_asr_arguments(p)
    add_mos_arguments(p)
    p.add_argument("--out", "--json", dest="out", default="",
                   help="JSON report path (default: <first vocoder's dir>/eval_vocoder.json, or "
                        "outputs/eval_vocoder_universal.json for a pretrained name)")
    p.set_defaults(func=evaluate_vocoder, default_out=lambda a: report_path(a.vocoder[0], "eval_vocoder"))


# ----------------------------------------------------------------------------- tts (Talker)


def evaluate_tts(args: argparse.Namespace) -> dict:
    """Synthesize held-out texts with a Talker checkpoint (text -> codes -> mel -> vocoder or Griffin-Lim):
    word error of the synthesized and of the original audio, duration ratio, real-time factor. With a
    vocoder, Griffin-Lim on the same mels is scored beside it. Wavs, mel pictures and index.html go to --out-dir."""
    bundle = load_talker(args.talker)
    vocoder = load_vocoder(args.vocoder) if args.vocoder else None
    name = f"tts_{vocoder_system(args.vocoder)}" if vocoder is not None else "tts_griffinlim"
    corpus = load_corpus(DataConfig(path=args.data))
    items = corpus.heldout[: args.limit] if args.limit else corpus.heldout
    if not items:
        raise ValueError(f"{args.data}: no held-out utterance to synthesize")
    out_dir = Path(args.out_dir) if args.out_dir else beside(args.talker, "eval_tts")
    systems: dict[str, list[np.ndarray]] = {"ground_truth": [], name: []}
    if vocoder is not None:
        systems["tts_griffinlim"] = []
    compute = seconds = 0.0
    for start in range(0, len(items), args.batch):
        chunk = items[start:start + args.batch]
        speaker_ids = [bundle.speakers.index(it.speaker) if it.speaker in bundle.speakers else 0 for it in chunk]
        t0 = time.perf_counter()
        mels, outs = synthesize_with_mels(bundle, [it.text for it in chunk], speaker_ids, vocoder, n_iter=args.n_iter,
                                          mel_from=args.mel_from, temperature=args.temperature,
                                          top_k=args.top_k or None, seed=args.seed, compile=args.compile)
        compute += time.perf_counter() - t0
        systems[name] += outs
        seconds += sum(len(w) for w in outs) / SAMPLE_RATE
        if vocoder is not None:
            systems["tts_griffinlim"] += [mel_to_wav(m, args.n_iter).reshape(-1).cpu().numpy() for m in mels]
        systems["ground_truth"] += [load_audio(it.path) for it in chunk]
    scores = score_systems(items, systems, args.asrs, out_dir, args.mos)
    wer = scores["wer_by_asr"][scores["asr"]["headline"]]
    report = {
        "talker": str(args.talker), "step": bundle.step,
        "vocoder": vocoder_system(args.vocoder) if vocoder is not None else "griffinlim",
        "data": str(args.data), "utterances": len(items), "temperature": args.temperature, "mel_from": args.mel_from,
        "asr_headline": scores["asr"]["headline"], "wer": wer[name], "wer_ground_truth": wer["ground_truth"],
        **({"wer_griffinlim": wer["tts_griffinlim"]} if vocoder is not None else {}),
        "duration_ratio": sum(len(w) for w in systems[name]) / max(sum(len(r) for r in systems["ground_truth"]), 1),
        "rtf": compute / max(seconds, 1e-9), "audio_seconds": seconds, "out_dir": str(out_dir),
        **mos_fields(scores, name), **{f"{k}_ground_truth": v for k, v in mos_fields(scores, "ground_truth").items()},
    }
    print_table(list(report.items()), f"tts evaluation (held-out texts; word error by {scores['asr']['headline']})")
    print_word_errors(scores, "tts")
    return {**report, **scores}


def add_tts_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tts", help="Talker text-to-speech on held-out texts: word error, duration ratio, RTF")
    p.add_argument("--talker", required=True, help="Talker checkpoint (train_talker.py); carries its codec")
    p.add_argument("--data", required=True, help="corpus folder; its held-out texts are synthesized")
    p.add_argument("--vocoder", default="", help=f"{VOCODER_HELP} (default: Griffin-Lim)")
    p.add_argument("--out-dir", default="",
                   help="folder for the wavs, mel pictures and index.html (default: <talker dir>/eval_tts)")
    add_asr_arguments(p)
    add_mos_arguments(p)
    p.add_argument("--limit", type=int, default=0, help="synthesize only the first N held-out texts")
    p.add_argument("--batch", type=int, default=8, help="texts generated together")
    p.add_argument("--temperature", type=float, default=DEFAULTS.temperature, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=DEFAULTS.top_k or 0)  # 0: none
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--compile", action="store_true", help="compile the decoding step (CUDA graphs on a GPU)")
    p.add_argument("--n-iter", type=int, default=DEFAULTS.griffin_lim_iters, help="Griffin-Lim iterations")
    p.add_argument("--mel-from", choices=MEL_FROM, default=DEFAULTS.mel_from,
                   help="decode the expected code vectors (default) or the generated codes (infer_tts.py --help)")
    p.add_argument("--out", "--json", dest="out", default="",
                   help="JSON report path (default: <talker dir>/eval_tts.json)")
    p.set_defaults(func=evaluate_tts, default_out=lambda a: beside(a.talker, "eval_tts.json"))


# Each stage registers its subcommand here: add_<stage>_parser(sub) sets func and default_out.
PARSERS = [add_codec_parser, add_vocoder_parser, add_tts_parser]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m muomni evaluate", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in PARSERS:
        add(sub)
    args = parser.parse_args(argv)
    try:
        args.asrs = parse_asr(args.asr, args.asr_model)
        args.mos = resolve_mos(args.mos)
    except (ValueError, ImportError) as err:
        parser.error(str(err))
    report = {"kind": args.command, **args.func(args)}
    out = Path(args.out) if args.out else Path(args.default_out(args))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    page_dir = report.get("out_dir") or args.out_dir
    if page_dir:
        page = write_listening_page(Path(page_dir) / "index.html", [report], f"muomni {args.command} evaluation")
        print(f"listening page: {page}")
    return report


if __name__ == "__main__":
    main()
