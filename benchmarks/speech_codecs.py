"""Our audio codec beside Codec2 and Opus on the FSDD test split, in one run (issue #15):
payload bitrate, narrowband PESQ, STOI and the digit classifier's intelligibility.

    python benchmarks/speech_codecs.py                      # the shipped `fsdd` model, 300 clips
    python benchmarks/speech_codecs.py --run runs/fsdd-rvq  # a run folder (one row per level)
    python benchmarks/speech_codecs.py --clips 30           # a smoke test

Needs the `speech` and `codec` extras (``pip install -e ".[speech,codec]"``) and, for the peers,
the system packages ``codec2`` (``c2enc`` / ``c2dec``) and ``opus-tools`` (``opusenc`` /
``opusdec``; Debian/Ubuntu: ``apt-get install codec2 opus-tools``). It installs nothing: a peer
whose tools are absent is skipped, saying so (and the JSON's ``skipped`` lists it).

The clips: the test split as the model reads it (``model.sample_rate`` 8 kHz, peak-normalised,
clips over ``model.length`` cut to their loudest window); every codec codes each clip's real
samples and every measure reads them (zero padding beyond). Rows:

* ``reference``: the clips themselves (PESQ of a clip against itself, ~4.5; STOI 1).
* ``vqvae``: the codec of ``vqvae compress`` (``vqvae.codec``): the test clips with their digit
  labels (as ``vqvae compress RUN SPEC --split test`` codes them) into one archive, decoded back
  from it. ``bitrate_bps`` = 8 · payload bytes (the range-coded streams and their sizes) / the
  seconds of real audio; the codec codes each clip's whole ``model.length`` window, padding
  included, so ``bitrate_bps_window`` (the same bytes over the windows) is given too, beside
  the prior's ideal (``prior_nll_bps``, over real seconds). A model with L residual levels gives
  one row per depth k (the first k levels, decoded by ``model.decode_indices``), coded where the
  codec codes the first k levels (``Codec.compress_codes`` of the truncated stack), else at the
  raw rate: every code of every window at log2 K bits, over the real seconds (``bitrate_kind``
  says which, and why; ``raw_bitrate_bps`` = codes/s · k · log2 K).
* ``codec2`` (modes 3200, 2400, 1200): 16-bit 8-kHz raw PCM (written directly: the clips are
  8-kHz already, so no sox), followed by ``CODEC2_FLUSH`` zeros that flush the decoder's delay
  (150-220 samples measured here) and padded to whole frames, ``c2enc MODE`` headerless,
  ``c2dec MODE``; bitrate = 8 · the coded file's bytes / the real seconds (above the mode on
  short clips: whole frames, and the flush).
* ``opus`` (6, 8, 12 kbit/s): ``opusenc --bitrate B`` on the 16-bit WAV with opusenc's defaults
  (VBR, 20-ms frames, complexity 10), ``opusdec --rate 8000`` (pre-skip and end trimming are
  opusdec's). ``bitrate_bps`` counts only the audio packets' bytes, parsed from the Ogg pages
  (no OpusHead/OpusTags header packets, no page headers); ``file_bitrate_bps`` the whole
  .opus file (opusenc pads OpusTags: ~17 kbit/s more on 0.4-s clips).

Alignment: each row's decoded clips are shifted by one delay per setting, the lag in
[0, ``MAX_DELAY``] samples that best correlates the 5-ms energy envelopes of all clips
(``delay_samples``; Codec2's decoder lags by ~20 ms, Opus and ours by 0). PESQ aligns by itself;
STOI and the classifier do not.

Measures (``vqvae.metrics.audio``): ``pesq`` = mean narrowband PESQ over the clips PESQ scores
(``pesq_scored``; it refuses clips under 1/4 s and clips without a detected utterance, the same
clips for every row), ``stoi`` = STOI of each speaker's clips concatenated, mean over speakers;
``intelligibility`` = the digit classifier's accuracy on the decoded clips / on the real clips
(the classifier shipped with the model, or RUN/classifier/ that ``vqvae evaluate`` trains).

Writes ``benchmarks/results/speech_codecs.json`` (``rows`` of ``{codec, setting, bitrate_bps,
pesq, stoi, intelligibility, ...}`` and ``settings``: CPU, date, command, clip count) and
``speech_codecs.png`` (bitrate against PESQ), and prints the table. One CPU thread by default.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vqvae import zoo
from vqvae.codec import Archive, Codec
from vqvae.data.audio import read_wav, write_wav
from vqvae.errors import VQVAEError
from vqvae.evaluation import LogMelClassifier, class_accuracy
from vqvae.metrics.audio import pesq_nb, stoi_per_speaker
from vqvae.pipeline.run import RunDir
from vqvae.pipeline.stages import family_of
from vqvae.threads import cpu_name

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RATE = 8000  # Codec2 and narrowband PESQ are 8-kHz
CODEC2_MODES = {"3200": 160, "2400": 160, "1200": 320}  # mode -> samples per frame
OPUS_KBPS = [6, 8, 12]
CODEC2_FLUSH = 240  # samples of zeros after each clip (30 ms), coded and counted
MAX_DELAY = 400  # samples (50 ms) searched for each setting's delay
ENVELOPE = 40  # samples (5 ms) of the energy envelope the delay is found on


# --------------------------------------------------------------------------- helpers
def run_tool(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def to_pcm(x: np.ndarray) -> np.ndarray:
    """Float samples -> 16-bit PCM (``write_wav``'s scaling)."""
    return np.clip(np.round(x.astype(np.float64) * 32768), -32768, 32767).astype("<i2")


def ogg_packets(data: bytes) -> list[bytes]:
    """The packets of an Ogg stream (RFC 3533): each page is "OggS", version, header type,
    granule position (8), serial (4), sequence (4), CRC (4), the segment count and the lacing
    values; a packet is the segments up to the first lacing value under 255."""
    packets, current, pos = [], b"", 0
    while pos < len(data):
        if data[pos : pos + 4] != b"OggS":
            raise ValueError(f"no Ogg page at byte {pos}")
        count = data[pos + 26]
        lacing = data[pos + 27 : pos + 27 + count]
        body = pos + 27 + count
        for size in lacing:
            current += data[body : body + size]
            body += size
            if size < 255:
                packets.append(current)
                current = b""
        pos = body
    return packets


def opus_audio_bytes(data: bytes) -> int:
    """Bytes of an Ogg Opus file's audio packets (RFC 7845: the first two packets are the
    OpusHead and OpusTags headers)."""
    packets = ogg_packets(data)
    if not (packets[0].startswith(b"OpusHead") and packets[1].startswith(b"OpusTags")):
        raise ValueError("not an Ogg Opus stream")
    return sum(len(p) for p in packets[2:])


def delay(reference: list[np.ndarray], decoded: list[np.ndarray]) -> int:
    """The lag in [0, MAX_DELAY] (samples the decoded clips trail by) that maximises the
    correlation of the 5-ms energy envelopes over all clips."""
    box = np.ones(ENVELOPE) / ENVELOPE
    best, best_r = 0, -np.inf
    env = [
        (np.convolve(r**2, box, "same"), np.convolve(d**2, box, "same"))
        for r, d in zip(reference, decoded, strict=True)
    ]
    for lag in range(MAX_DELAY + 1):
        a = np.concatenate([er[: len(er) - lag] for er, _ in env])
        b = np.concatenate([ed[lag : lag + len(er) - lag] for er, ed in env])
        r = float(np.corrcoef(a, b[: len(a)])[0, 1]) if len(b) >= len(a) else -np.inf
        if r > best_r:
            best, best_r = lag, r
    return best


def padded(clips: list[np.ndarray], length: int, lag: int = 0) -> np.ndarray:
    """Decoded clips (each at least its real length + ``lag``) -> (N, length), zero beyond
    each clip's real samples, shifted left by ``lag``."""
    return np.stack([np.pad(c[lag:][:length], (0, max(0, length - len(c[lag:])))) for c in clips])


# --------------------------------------------------------------------------- the codecs
def codec2(mode: str, clips: list[np.ndarray], tmp: Path) -> tuple[list[np.ndarray], int]:
    """Decoded clips (zero-padded as coded) and the coded bytes of all clips."""
    frame, out, total = CODEC2_MODES[mode], [], 0
    for x in clips:
        n = len(x) + CODEC2_FLUSH
        pcm = np.zeros(n + (-n) % frame, "<i2")
        pcm[: len(x)] = to_pcm(x)
        pcm.tofile(tmp / "in.raw")
        run_tool("c2enc", mode, str(tmp / "in.raw"), str(tmp / "out.bit"))
        run_tool("c2dec", mode, str(tmp / "out.bit"), str(tmp / "out.raw"))
        total += (tmp / "out.bit").stat().st_size
        out.append(np.fromfile(tmp / "out.raw", "<i2").astype(np.float32) / 32768)
    return out, total


def opus(kbps: int, clips: list[np.ndarray], tmp: Path) -> tuple[list[np.ndarray], int, int]:
    """Decoded clips, the audio packets' bytes and the .opus files' bytes of all clips."""
    out, audio, files = [], 0, 0
    for x in clips:
        write_wav(tmp / "in.wav", x, RATE)
        run_tool("opusenc", "--quiet", "--bitrate", str(kbps), str(tmp / "in.wav"),
                 str(tmp / "out.opus"))  # fmt: skip
        run_tool("opusdec", "--quiet", "--rate", str(RATE), str(tmp / "out.opus"),
                 str(tmp / "out.wav"))  # fmt: skip
        data = (tmp / "out.opus").read_bytes()
        audio += opus_audio_bytes(data)
        files += len(data)
        out.append(read_wav(tmp / "out.wav", RATE))
    return out, audio, files


# --------------------------------------------------------------------------- the measures
class Scorer:
    """PESQ, STOI and intelligibility of decoded clips against the test split's."""

    def __init__(self, test, classifier) -> None:
        self.test, self.classifier = test, classifier
        self.ref, self.lengths = test.waveforms, test.lengths
        self.seconds = float(test.lengths.sum()) / RATE
        self.accuracy = None
        if classifier is not None:
            self.accuracy = class_accuracy(classifier, self.ref, test.labels)

    def row(self, codec: str, setting: str, decoded: np.ndarray, bits: float | None, **extra):
        t = self.test
        mask = np.arange(decoded.shape[1])[None, :] < self.lengths[:, None]
        decoded = (decoded * mask).astype(np.float32)  # only the real samples are scored
        start = time.perf_counter()
        pesq = pesq_nb(self.ref, decoded, RATE, self.lengths)
        stoi = stoi_per_speaker(self.ref, decoded, RATE, t.speakers, self.lengths)
        intelligibility = accuracy = None
        if self.classifier is not None:
            accuracy = class_accuracy(self.classifier, decoded, t.labels)
            intelligibility = accuracy / max(self.accuracy, 1e-12)
        row = {
            "codec": codec,
            "setting": setting,
            "bitrate_bps": None if bits is None else bits / self.seconds,
            "pesq": pesq.mean,
            "stoi": stoi,
            "intelligibility": intelligibility,
            "pesq_scored": pesq.scored,
            "pesq_unscored": pesq.unscored,
            "class_accuracy": accuracy,
            **extra,
            "measure_s": round(time.perf_counter() - start, 2),
        }
        print(json.dumps(row), flush=True)
        return row


def our_rows(run: Path, family, model, test, scorer: Scorer) -> list[dict]:
    """The codec's row; for L residual levels one row per depth k (the codec coding the first
    k levels where it can, else the raw rate, saying why in ``bitrate_kind``)."""
    c = model.config
    level = family.code_levels(model)[0]
    k_size, depth = level.codebook_size, level.residual_levels
    start = time.perf_counter()
    codes = family.encode(model, family.inputs(test, model))
    codec, why = None, "raw: no prior to drive the entropy coder"
    if family.has_priors(RunDir(run), model):
        try:
            codec = Codec.from_run(run)
        except VQVAEError as exc:
            why = f"raw: {exc}"
    rows = []
    for k in range(1, depth + 1) if depth else [None]:
        setting = f"K={k_size}, {c.codes_per_second:g} codes/s"
        level_codes = codes
        if k is not None:
            setting += f", {k} of {depth} levels"
            level_codes = [codes[0][:, :k]]
        raw = c.codes_per_second * (k or 1) * math.log2(k_size)
        if codec is not None:
            try:
                rows.append(coded_row(codec, level_codes, test, scorer, setting, raw, start))
                continue
            except (VQVAEError, ValueError) as exc:  # a codec that cannot code this depth
                codec, why = None, f"raw: {exc}"
        decoded = family.decode(model, level_codes)
        raw_bits = len(test) * c.length / c.sample_rate * raw  # every code of every window
        rows.append(scorer.row("vqvae", setting, decoded, raw_bits, bitrate_kind=why,
                               raw_bitrate_bps=raw, delay_samples=0))  # fmt: skip
    return rows


def coded_row(codec, codes, test, scorer: Scorer, setting: str, raw: float, start: float):
    """Compress ``codes`` with the test labels into one archive, decode it back, score it."""
    c = codec.model.config
    labels = codec.coded_labels(codes, test.labels)
    archive = codec.compress_codes(codes, labels)
    coded = time.perf_counter()
    out = codec.decompress_archive(archive)
    decoded_s = time.perf_counter() - coded
    payload = Archive.from_bytes(archive, "archive").payload_bytes
    nll = float(codec.item_bits(codes, labels).sum())
    windows = len(test) * c.length / c.sample_rate
    return scorer.row(
        "vqvae", setting, out.outputs, 8 * payload,
        bitrate_kind="coded (range coder driven by the prior)",
        file_bitrate_bps=8 * len(archive) / scorer.seconds,
        bitrate_bps_window=8 * payload / windows,
        raw_bitrate_bps=raw,
        prior_nll_bps=nll / scorer.seconds,
        delay_samples=0,
        encode_s=round(coded - start, 2),
        decode_s=round(decoded_s, 2),
    )  # fmt: skip


# --------------------------------------------------------------------------- output
def table(rows: list[dict]) -> str:
    def f(v, digits):
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"

    lines = [
        "| codec | setting | payload bit/s | PESQ (nb) | STOI | intelligibility |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        rate = "–" if r["bitrate_bps"] is None else f"{r['bitrate_bps']:,.0f}"
        lines.append(
            f"| {r['codec']} | {r['setting']} | {rate} | {f(r['pesq'], 2)} | "
            f"{f(r['stoi'], 3)} | {f(r['intelligibility'], 3)} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, clips: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5), layout="constrained")
    for codec, style in (("vqvae", "o"), ("codec2", "s--"), ("opus", "^--")):
        pts = sorted(
            (r["bitrate_bps"] / 1000, r["pesq"], r["setting"])
            for r in rows
            if r["codec"] == codec and r["bitrate_bps"] is not None
        )
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=codec)
        for x, y, setting in pts:
            ax.annotate(setting, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ref = [r["pesq"] for r in rows if r["codec"] == "reference"]
    if ref:
        ax.axhline(ref[0], color="grey", lw=0.8, ls=":", label="reference (clip vs itself)")
    ax.set(
        xlabel="payload bitrate (kbit/s)",
        ylabel="narrowband PESQ (mean over scored clips)",
        title=f"FSDD test split ({clips} clips)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = p.add_mutually_exclusive_group()
    which.add_argument("--pretrained", default="fsdd", help="a shipped model (default: fsdd)")
    which.add_argument("--run", type=Path, help="a run folder with a model (and a prior)")
    p.add_argument("--data", help="data spec (default: the model's own)")
    p.add_argument("--clips", type=int, help="only the first N test clips (a smoke test)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS / "speech_codecs.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    run = args.run if args.run else zoo.pretrained_run(args.pretrained)
    config, spec = RunDir(run).read_config()
    family = family_of(config)
    model = family.load_model(RunDir(run))
    if model.config.sample_rate != RATE:
        raise SystemExit(f"the peers and narrowband PESQ need 8-kHz audio; the model's is "
                         f"{model.config.sample_rate} Hz")  # fmt: skip
    data = family.load_data(args.data or spec, config.model)
    test = data.test
    if args.clips:
        for name in ("waveforms", "lengths", "labels", "speakers", "files"):
            value = getattr(test, name)
            setattr(test, name, None if value is None else value[: args.clips])
    classifier_dir = Path(run) / zoo.CLASSIFIER
    classifier = None
    if (classifier_dir / "config.json").is_file():
        classifier = LogMelClassifier.from_pretrained(classifier_dir)
    else:
        print(f"no classifier in {classifier_dir} (run `vqvae evaluate`): no intelligibility")
    scorer = Scorer(test, classifier)
    clips = [w[:n] for w, n in zip(test.waveforms, test.lengths, strict=True)]
    rows = [scorer.row("reference", "real clips", test.waveforms, None,
                       class_accuracy=scorer.accuracy)]  # fmt: skip
    rows += our_rows(Path(run), family, model, test, scorer)

    skipped = []
    tools = {"codec2": ("c2enc", "c2dec"), "opus": ("opusenc", "opusdec")}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for peer, needs in tools.items():
            missing = [t for t in needs if shutil.which(t) is None]
            if missing:
                message = f"{peer}: skipped, {' and '.join(missing)} not found on PATH"
                print(message)
                skipped.append(message)
                continue
            settings = CODEC2_MODES if peer == "codec2" else OPUS_KBPS
            for setting in settings:
                start = time.perf_counter()
                extra = {}
                if peer == "codec2":
                    decoded, payload = codec2(setting, clips, tmp)
                    name = str(setting)
                    extra["file_bitrate_bps"] = 8 * payload / scorer.seconds  # headerless
                else:
                    decoded, payload, files = opus(setting, clips, tmp)
                    name = f"{setting} kbit/s"
                    extra["file_bitrate_bps"] = 8 * files / scorer.seconds
                seconds = time.perf_counter() - start
                lag = delay(clips, decoded)
                rows.append(scorer.row(
                    peer, name, padded(decoded, test.waveforms.shape[1], lag), 8 * payload,
                    **extra, delay_samples=lag, tail_samples_lost=sum(
                        max(0, len(c) + lag - len(d)) for d, c in zip(decoded, clips, strict=True)
                    ),
                    codec_s=round(seconds, 2),
                ))  # fmt: skip

    result = {
        "benchmark": "speech_codecs",
        "settings": {
            "machine": cpu_name(),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["python", "benchmarks/speech_codecs.py", *(argv or sys.argv[1:])]),
            "model": str(args.run) if args.run else f"pretrained {args.pretrained}",
            "data": args.data or spec,
            "clips": len(test),
            "real_seconds": scorer.seconds,
            "threads": args.threads,
            "torch": torch.__version__,
            "tools": {t: _version(t) for t in ("opusenc", "c2enc") if shutil.which(t) is not None},
            "skipped": skipped,
        },
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, args.out.with_suffix(".png"), len(test))
    print(table(rows))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def _version(tool: str) -> str:
    """The tool's version line (opusenc --version; c2enc prints none: its package's)."""
    if tool == "opusenc":
        out = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
        return out.splitlines()[0] if out else "unknown"
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "codec2"],
                             capture_output=True, text=True)  # fmt: skip
        return f"codec2 {out.stdout.strip()}" if out.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
