"""An embedded, deterministic noisy-speech corpus, so training and the study run with no download.

Speech is synthesized with a source-filter model: a glottal (Rosenberg) pulse train with a pitch
contour (declination, word accents) and cycle-to-cycle jitter/shimmer plus aspiration, through a
cascade of time-varying formant resonators gliding between vowel targets; unvoiced fricatives and
stop bursts are band-passed noise. Syllables get attack/decay envelopes (about 4-5 per second) and
words are separated by pauses. Speakers differ in pitch, pitch range, formant scale (vocal-tract
length), speaking rate, jitter and breathiness; train and test speakers are disjoint, as in Voice
Bank + DEMAND.

Noise: white, pink, brown, babble (4-6 other synthetic talkers in a room) and machinery (mains hum
harmonics with rotating-machine modulation over rumble). As in DEMAND, most of each ordinary clip's
noise power is sub-100 Hz rumble: only 10^(U(-24, -2)/10) of it lies in the named noise type (see
ABOVE_100HZ_DB; -5 dB hard clips get none). The SNR is measured over the whole clip on the written
16-bit files: train {0, 5, 10, 15} dB, test {2.5, 7.5, 12.5, 17.5} dB.

Measured (2 cores, CPU): the default 200 clips take about 15-20 s; mean PESQ-WB of noisy vs clean
on the ordinary test clips is 2.13-2.17 over seeds 0-2 (Voice Bank + DEMAND noisy test set: 1.97).
Reproduce with `python benchmarks/synthetic_pesq.py OUT`.

Durations: ordinary clips 1.5-4 s (some below the 2 s training crop, so tiling is exercised);
hard clips: `long_silence` 5.2-6.4 s with >= 2.2 s of silence before and after about 1 s of speech
(2 s crops can be speech-free), `near_silent` ordinary clips scaled to about -60 dBFS,
`low_snr` ordinary clips at -5 dB, `short` clips of 0.12-0.24 s. Speech is at -28 to -22 dBFS
(VB: about -23) over a pink room-tone floor 50 dB below it, so the clean files are never digital zero.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy import fft as sp_fft
from scipy import signal

from cmgan_lib import SAMPLE_RATE
from cmgan_lib.core.audio import resample_poly, write_wav

SR = SAMPLE_RATE
TRAIN_SNRS = (0.0, 5.0, 10.0, 15.0)
TEST_SNRS = (2.5, 7.5, 12.5, 17.5)
NOISE_TYPES = ("white", "pink", "brown", "babble", "machinery")
HARD_KINDS = (  # manifest hard_kind; "ordinary" for the rest
    "long_silence",
    "near_silent",
    "low_snr",
    "short",
)
N_TRAIN_SPEAKERS = 8
N_TEST_SPEAKERS = 2
N_VALID_SPEAKERS = 2  # held out from training and test: model selection never sees the test speakers
MANIFEST_COLUMNS = [
    "file",
    "split",
    "speaker",
    "snr_db",
    "noise_type",
    "speech_fraction",
    "duration_s",
    "hard_kind",
    "speech_source",
    "noise_above_100hz_db",
]
# Share of the noise power above 100 Hz (dB), drawn per ordinary clip from U(-24, -2): in the 25
# Voice Bank + DEMAND test pairs of shared/data the noise (noisy - clean) has a median of -11.4 dB
# of its power above 100 Hz (10th-90th percentile -22.9 to -5.1 dB); the rest is sub-100 Hz rumble
# (wind, traffic, ventilation) that barely reaches the ear or PESQ. Without it, every nominal SNR
# would be far harsher than the real corpus.
ABOVE_100HZ_DB = (-24.0, -2.0)

# Formant targets F1-F4 (Hz) of an adult male vocal tract (Hillenbrand et al. 1995 averages, rounded).
VOWELS = np.array(
    [
        [340, 2320, 3000, 3700],  # i  (heed)
        [430, 2020, 2650, 3600],  # I  (hid)
        [580, 1800, 2600, 3600],  # e  (head)
        [590, 1950, 2600, 3600],  # ae (had)
        [770, 1330, 2550, 3600],  # a  (hod)
        [650, 1000, 2550, 3500],  # O  (hawed)
        [500, 910, 2450, 3400],  # o  (hoed)
        [380, 1000, 2350, 3400],  # u  (who'd)
        [470, 1370, 1700, 3300],  # er (heard)
        [620, 1200, 2550, 3500],  # ^  (hud)
    ],
    dtype=np.float64,
)
BANDWIDTHS = np.array([80.0, 100.0, 150.0, 220.0])
# Unvoiced noise bands (Hz) and relative levels: s, sh, f/th, h-like (wide, weak), stop burst.
FRICATIVES = {
    "s": ((3800, 7800), 0.5),
    "sh": ((2000, 5500), 0.45),
    "f": ((1000, 7800), 0.15),
    "h": ((500, 5000), 0.12),
}
BLOCK = 80  # samples per control block (5 ms) for the time-varying filters


@dataclass(frozen=True)
class Speaker:
    """Voice parameters of one synthetic talker."""

    name: str
    f0: float  # median pitch (Hz)
    f0_span: float  # accent excursion (semitones)
    formant_scale: float  # 1 / relative vocal-tract length
    rate: float  # syllables per second
    jitter: float  # relative cycle-to-cycle period deviation
    shimmer: float  # relative cycle-to-cycle amplitude deviation
    breath: float  # aspiration noise relative to voicing
    open_quotient: float  # glottal open phase (fraction of period)


def make_speaker(name: str, rng: np.random.Generator) -> Speaker:
    """A random adult talker; half low-pitched/long tract, half high-pitched/short tract."""
    female = rng.random() < 0.5
    return Speaker(
        name=name,
        f0=float(rng.uniform(175, 240) if female else rng.uniform(90, 140)),
        f0_span=float(rng.uniform(2.0, 5.0)),
        formant_scale=float(rng.uniform(1.1, 1.2) if female else rng.uniform(0.92, 1.04)),
        rate=float(rng.uniform(3.8, 5.2)),
        jitter=float(rng.uniform(0.004, 0.012)),
        shimmer=float(rng.uniform(0.03, 0.08)),
        breath=float(rng.uniform(0.02, 0.08) if not female else rng.uniform(0.05, 0.12)),
        open_quotient=float(rng.uniform(0.5, 0.7) if not female else rng.uniform(0.6, 0.8)),
    )


def speakers_for(seed: int, split: str) -> list[Speaker]:
    """The disjoint speaker sets of each split, fixed by `seed`."""
    n, offset = {
        "train": (N_TRAIN_SPEAKERS, 0),
        "test": (N_TEST_SPEAKERS, N_TRAIN_SPEAKERS),
        "valid": (N_VALID_SPEAKERS, N_TRAIN_SPEAKERS + N_TEST_SPEAKERS),
    }[split]
    prefix = "s"
    return [
        make_speaker(f"{prefix}{offset + k + 1:02d}", np.random.default_rng([seed, 7919, offset + k])) for k in range(n)
    ]


# ----------------------------------------------------------------------------- speech synthesis


@dataclass
class _Plan:
    """Control tracks of one utterance at block rate, plus per-sample unvoiced events."""

    n: int
    voice_amp: np.ndarray  # per block
    f0: np.ndarray  # per block (Hz)
    formants: np.ndarray  # per block x 4 (Hz, before speaker scaling)
    fricatives: list[tuple[int, int, str, float]]  # start, length, kind, level
    active: np.ndarray  # per sample bool: speech present


def _raised_cosine_env(length: int, attack: int, release: int) -> np.ndarray:
    env = np.ones(length)
    attack, release = min(attack, length // 2), min(release, length // 2)
    if attack > 0:
        env[:attack] = 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
    if release > 0:
        env[length - release :] = 0.5 + 0.5 * np.cos(np.pi * np.arange(1, release + 1) / release)
    return env


def _plan_utterance(
    rng: np.random.Generator, spk: Speaker, duration: float, lead: float, trail: float, pauses: bool
) -> _Plan:
    """Lay out words and syllables over `duration` seconds with `lead`/`trail` silence."""
    n = max(int(round(duration * SR)), BLOCK)
    nb = n // BLOCK + 2
    voice_amp = np.zeros(nb)
    f0_acc = np.zeros(nb)  # accent in semitones
    key_t: list[float] = []  # formant keypoints (block index, vowel formants)
    key_f: list[np.ndarray] = []
    fricatives: list[tuple[int, int, str, float]] = []
    active = np.zeros(n, dtype=bool)
    start, stop = int(lead * SR), n - int(trail * SR)
    t = start
    prev_vowel = VOWELS[rng.integers(len(VOWELS))]
    while t < stop - int(0.08 * SR):
        n_syll = int(rng.choice([1, 1, 2, 2, 3]))
        stressed = int(rng.integers(n_syll))
        for s in range(n_syll):
            syl = int(SR / spk.rate * rng.uniform(0.75, 1.25))
            syl = min(syl, stop - t)
            if syl < int(0.06 * SR):
                break
            # onset consonant: fricative, stop burst or none (vowel/sonorant onset)
            onset_kind = rng.choice(["fric", "stop", "none", "none"])
            cons = 0
            if onset_kind == "fric" and syl > int(0.15 * SR):
                cons = int(rng.uniform(0.05, 0.1) * SR)
                kind = str(rng.choice(list(FRICATIVES)))
                fricatives.append((t, cons, kind, FRICATIVES[kind][1] * rng.uniform(0.6, 1.2)))
            elif onset_kind == "stop" and syl > int(0.12 * SR):
                cons = int(rng.uniform(0.03, 0.05) * SR)  # closure, then burst at the vowel onset
                fricatives.append((t + cons - int(0.012 * SR), int(0.015 * SR), "stop", rng.uniform(0.3, 0.6)))
            v0, v1 = t + cons, t + syl
            b0, b1 = v0 // BLOCK, max(v1 // BLOCK, v0 // BLOCK + 1)
            level = rng.uniform(0.85, 1.0) if s == stressed else rng.uniform(0.45, 0.75)
            env = _raised_cosine_env(b1 - b0, attack=int(rng.integers(2, 6)), release=int(rng.integers(4, 12)))
            voice_amp[b0:b1] = np.maximum(voice_amp[b0:b1], level * env)
            if s > 0 and cons == 0:  # sonorant onset inside a word: voicing runs on through a dip
                lo = max(b0 - 10, 0)
                voice_amp[lo : b0 + 4] = np.maximum(voice_amp[lo : b0 + 4], 0.3 * level)
            if s == stressed:
                bump = np.sin(np.pi * np.linspace(0, 1, b1 - b0)) * spk.f0_span * rng.uniform(0.6, 1.0)
                f0_acc[b0:b1] += bump
            # formants: glide from a consonant locus/previous vowel to the target, maybe a diphthong
            target = VOWELS[rng.integers(len(VOWELS))]
            locus = 0.5 * (prev_vowel + np.array([450.0, 1700.0, 2600.0, 3500.0]))
            key_t += [b0, b0 + min(8, (b1 - b0) // 2)]
            key_f += [locus, target]
            if rng.random() < 0.35:
                end = VOWELS[rng.integers(len(VOWELS))]
                key_t.append(b1)
                key_f.append(0.5 * (target + end))
                target = end
            prev_vowel = target
            # optional coda fricative
            if rng.random() < 0.2 and v1 - v0 > int(0.12 * SR):
                clen = int(rng.uniform(0.04, 0.08) * SR)
                kind = str(rng.choice(["s", "sh", "f"]))
                fricatives.append((v1 - clen, clen, kind, FRICATIVES[kind][1] * rng.uniform(0.5, 1.0)))
            active[t : t + syl] = True
            t += syl
        # pause between words (short or none when pauses are off, as in babble)
        t += int(rng.uniform(0.04, 0.3) * SR) if pauses else int(rng.uniform(0.0, 0.06) * SR)
    if not key_t:
        key_t, key_f = [0], [prev_vowel]
    key_t_arr = np.asarray(key_t, dtype=np.float64)
    order = np.argsort(key_t_arr, kind="stable")
    key_t_arr = key_t_arr[order]
    key_f_arr = np.asarray(key_f)[order]
    blocks = np.arange(nb)
    formants = np.stack([np.interp(blocks, key_t_arr, key_f_arr[:, k]) for k in range(4)], axis=1)
    # pitch: declination over the utterance, accents, slow wander
    decl = np.linspace(1.5, -2.0, nb)
    wander = signal.sosfiltfilt(signal.butter(2, 0.02, output="sos"), rng.standard_normal(nb)) * 6.0
    semis = decl + f0_acc + wander
    f0 = spk.f0 * 2.0 ** (semis / 12.0)
    return _Plan(n, voice_amp, f0, formants, fricatives, active)


def _glottal_source(rng: np.random.Generator, spk: Speaker, plan: _Plan) -> np.ndarray:
    """Differentiated Rosenberg pulses with jitter and shimmer, gated by the voicing envelope."""
    n = plan.n
    pos = (np.arange(n) + 0.5) / BLOCK
    f0 = np.interp(pos, np.arange(len(plan.f0)), plan.f0)
    amp = np.interp(pos, np.arange(len(plan.voice_amp)), plan.voice_amp)
    phase = np.cumsum(f0) / SR
    n_cycles = int(phase[-1]) + 2
    jit = 1.0 + spk.jitter * rng.standard_normal(n_cycles)
    shim = 1.0 + spk.shimmer * rng.standard_normal(n_cycles)
    cycle = np.floor(phase).astype(np.int64)
    phase = np.cumsum(f0 / jit[cycle]) / SR
    cycle = np.floor(phase).astype(np.int64)
    frac = phase - cycle
    tp = spk.open_quotient * 0.65  # opening part of the open phase
    tn = spk.open_quotient * 0.35  # closing part
    g = np.where(
        frac < tp,
        0.5 - 0.5 * np.cos(np.pi * frac / tp),
        np.where(frac < tp + tn, np.cos(0.5 * np.pi * (frac - tp) / tn), 0.0),
    )
    flow = g * amp * shim[np.minimum(cycle, n_cycles - 1)]
    src = np.diff(flow, prepend=0.0)  # lip radiation
    # aspiration: noise during the open phase, scaled to the voicing level
    asp = rng.standard_normal(n) * (0.3 + g) * amp * spk.breath * 0.05
    return src + asp


def _cascade_response(freqs: np.ndarray, bws: np.ndarray, nfft: int) -> np.ndarray:
    """Complex response on the rfft grid of cascaded unity-DC-gain two-pole resonators (Klatt 1980).

    `freqs`, `bws`: (frames, resonators) in Hz; returns (frames, nfft // 2 + 1), complex64.
    """
    r = np.exp(-np.pi * bws / SR)
    b = (2.0 * r * np.cos(2.0 * np.pi * freqs / SR)).astype(np.float32)
    c = (-(r**2)).astype(np.float32)
    z1 = np.exp(-2j * np.pi * np.arange(nfft // 2 + 1) / nfft).astype(np.complex64)
    z2 = z1 * z1
    h = np.ones((freqs.shape[0], len(z1)), dtype=np.complex64)
    for k in range(freqs.shape[1]):
        bk, ck = b[:, k : k + 1], c[:, k : k + 1]
        h *= (1.0 - bk - ck) / (1.0 - bk * z1 - ck * z2)
    return h


FRAME, HOP, NFFT = 320, 160, 1024  # 20 ms Hann frames, 50 % overlap, zero-padded (no wrap-around)


def _vocal_tract(src: np.ndarray, formants: np.ndarray, scale: float) -> np.ndarray:
    """Filter through 5 cascaded resonators whose frequencies follow `formants` (10 ms frames).

    Frame-wise overlap-add with zero padding: each Hann-windowed frame is convolved (linearly,
    the resonators ring out within the padding) with the cascade set to that frame's formants.
    """
    n = len(src)
    n_frames = -(-n // HOP) + 1
    padded = np.pad(src, (HOP, n_frames * HOP + FRAME))
    idx = np.arange(n_frames)[:, None] * HOP + np.arange(FRAME)[None, :]
    frames = padded[idx] * np.hanning(FRAME + 1)[:FRAME]
    centre = (np.arange(n_frames) * HOP) / BLOCK  # frame centre in blocks (after the HOP pad)
    fmt = np.stack([np.interp(centre, np.arange(len(formants)), formants[:, k]) for k in range(4)], 1)
    f5 = np.full((n_frames, 1), min(4500.0 * scale, 0.45 * SR))
    freqs = np.concatenate([np.minimum(fmt * scale, 0.44 * SR), f5], axis=1)
    bws = np.broadcast_to(np.append(BANDWIDTHS * np.sqrt(scale), 300.0), freqs.shape)
    spec = sp_fft.rfft(frames, NFFT) * _cascade_response(freqs, bws, NFFT)
    out_frames = sp_fft.irfft(spec, NFFT)
    out = np.zeros(n_frames * HOP + NFFT)
    for k in range(n_frames):
        out[k * HOP : k * HOP + NFFT] += out_frames[k]
    return out[HOP : HOP + n]


_FRIC_SOS: dict[str, np.ndarray] = {}


def _fric_sos(kind: str) -> np.ndarray:
    if kind not in _FRIC_SOS:
        if kind == "stop":
            _FRIC_SOS[kind] = signal.butter(2, 500, btype="highpass", fs=SR, output="sos")
        else:
            lo, hi = FRICATIVES[kind][0]
            _FRIC_SOS[kind] = signal.butter(3, (lo, hi), btype="bandpass", fs=SR, output="sos")
    return _FRIC_SOS[kind]


_HP = signal.butter(2, 70, btype="highpass", fs=SR, output="sos")


def synth_utterance(
    rng: np.random.Generator,
    spk: Speaker,
    duration: float,
    lead: float = 0.2,
    trail: float = 0.2,
    pauses: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One utterance (float64, arbitrary scale) and its per-sample speech-activity mask."""
    plan = _plan_utterance(rng, spk, duration, lead, trail, pauses)
    voiced = _vocal_tract(_glottal_source(rng, spk, plan), plan.formants, spk.formant_scale)
    voiced /= np.sqrt(np.mean(voiced[plan.active] ** 2)) + 1e-12 if plan.active.any() else 1.0
    out = voiced
    for start, length, kind, level in plan.fricatives:
        length = min(length, plan.n - start)
        if length <= 8:
            continue
        noise = signal.sosfilt(_fric_sos(kind), rng.standard_normal(length + 64))[64:]
        if kind == "stop":
            env = np.exp(-np.arange(length) / (0.004 * SR))
        else:
            env = _raised_cosine_env(length, length // 3, length // 3)
        noise *= env * level / (np.sqrt(np.mean(noise**2)) + 1e-12)
        out[start : start + length] += noise
    return signal.sosfilt(_HP, out), plan.active


# ----------------------------------------------------------------------------- espeak-ng speech

ESPEAK_WORDS = (
    "the a we you they she he it this that and but then when where how what time day night water "
    "house road city train river music people voice sound number morning evening window garden "
    "little large quiet bright cold warm green yellow early later always never often seven twelve "
    "open close carry follow listen remember answer travel speak read write bring leave believe"
).split()


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak_utterance(rng: np.random.Generator, spk: Speaker) -> np.ndarray:
    """A random sentence from espeak-ng (22.05 kHz) resampled to 16 kHz; voice and pitch from `spk`."""
    words = " ".join(rng.choice(ESPEAK_WORDS, size=int(rng.integers(4, 10))))
    variant = f"en-us+{'f' if spk.f0 > 160 else 'm'}{int(rng.integers(1, 5))}"
    pitch = int(np.clip((spk.f0 - 80) / 2.0, 0, 99))
    speed = int(120 + 15 * spk.rate)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "espeak.wav"
        cmd = ["espeak-ng", "-v", variant, "-p", str(pitch), "-s", str(speed), "-w", str(wav), words]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=60)
            audio, sr = sf.read(str(wav), dtype="float32", always_2d=True)
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            raise RuntimeError(f"espeak-ng failed ({' '.join(cmd)}): {exc}") from exc
    audio = audio[:, 0]
    if sr != SR:
        audio = resample_poly(audio, sr, SR)
    return audio.astype(np.float64)


def _activity(x: np.ndarray, floor_db: float = -35.0) -> np.ndarray:
    """Per-sample activity from 20 ms frame energy within `floor_db` of the loudest frame."""
    frame = 320
    n = len(x)
    pad = np.pad(x, (0, (-n) % frame))
    energy = np.mean(pad.reshape(-1, frame) ** 2, axis=1) + 1e-20
    on = 10 * np.log10(energy / energy.max()) > floor_db
    return np.repeat(on, frame)[:n]


# ----------------------------------------------------------------------------- noise


def _colored(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Gaussian noise with a 1/f^exponent power spectrum (0 white, 1 pink, 2 brown), 20 Hz high-pass."""
    m = sp_fft.next_fast_len(n, real=True)
    spec = sp_fft.rfft(rng.standard_normal(m))
    f = np.fft.rfftfreq(m, 1.0 / SR)
    f[0] = f[1]
    shape = np.where(f < 20.0, 0.0, f ** (-exponent / 2.0))
    return sp_fft.irfft(spec * shape, m)[:n]


def _room(rng: np.random.Generator, x: np.ndarray, rt60: float) -> np.ndarray:
    """A diffuse far-field version of `x`: convolved with exponentially decaying, low-passed noise."""
    n_ir = int(rt60 * SR)
    ir = rng.standard_normal(n_ir) * np.exp(-6.9 * np.arange(n_ir) / n_ir)
    ir = signal.sosfilt(signal.butter(1, 2500, fs=SR, output="sos"), ir)
    return signal.oaconvolve(x, ir)[: len(x)]


def _machinery(rng: np.random.Generator, n: int) -> np.ndarray:
    """Engine/ventilation-like noise: mains hum harmonics with rotating-machine modulation over rumble.

    Most of the power lies below a few hundred Hz, as in DEMAND's vehicle and machinery recordings.
    """
    t = np.arange(n) / SR
    mains = float(rng.choice([50.0, 60.0]))
    hum = np.zeros(n)
    for k in range(1, 40):
        f = mains * k
        if f > 2000:
            break
        hum += rng.uniform(0.3, 1.0) / k**1.5 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    rot = rng.uniform(8.0, 30.0)  # shaft rate (Hz)
    depth = rng.uniform(0.3, 0.7)
    mod = 1.0 + depth * np.sin(2 * np.pi * rot * t) + 0.3 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t)
    rumble = _colored(rng, n, 2.0)
    rumble_mod = 1.0 + 0.5 * np.sin(2 * np.pi * rot * 2 * t + rng.uniform(0, 6.3))
    hiss = _colored(rng, n, 1.0)  # broadband airflow, well below the rumble
    hum /= np.sqrt(np.mean(hum**2))
    rumble /= np.sqrt(np.mean(rumble**2))
    hiss /= np.sqrt(np.mean(hiss**2))
    mix = rng.uniform(0.3, 0.6)
    return mix * hum * mod + (1 - mix) * rumble * rumble_mod + 0.1 * hiss


def _babble(rng: np.random.Generator, n: int) -> np.ndarray:
    """4-6 other synthetic talkers speaking continuously, heard diffusely in a room (cafeteria-like)."""
    out = np.zeros(n)
    for k in range(int(rng.integers(4, 7))):
        spk = make_speaker(f"babble{k}", rng)
        x, _ = synth_utterance(rng, spk, n / SR + 0.3, lead=0.0, trail=0.0, pauses=False)
        x = x[int(rng.integers(0, int(0.3 * SR))) :][:n]
        x = np.pad(x, (0, n - len(x)))
        out += x / (np.sqrt(np.mean(x**2)) + 1e-12)
    return _room(rng, out, rng.uniform(0.4, 0.8)) + 0.3 * _colored(rng, n, 2.0) * np.sqrt(np.mean(out**2))


_RUMBLE_LP = signal.butter(4, 100, fs=SR, output="sos")


def rumble(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-RMS sub-100 Hz rumble with slow level changes (the bulk of DEMAND's noise power)."""
    x = signal.sosfilt(_RUMBLE_LP, _colored(rng, n + 2048, 2.0))[2048:]
    drift = np.interp(np.arange(n), np.linspace(0, n, 5), rng.uniform(-3, 3, 5))
    x = x * 10 ** (drift / 20)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def make_noise(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    """Unit-RMS noise of `kind` (see NOISE_TYPES), `n` samples, with slow level drift."""
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "pink":
        x = _colored(rng, n, 1.0)
    elif kind == "brown":
        x = _colored(rng, n, 2.0)
    elif kind == "babble":
        x = _babble(rng, n)
    elif kind == "machinery":
        x = _machinery(rng, n)
    else:
        raise ValueError(f"unknown noise type {kind!r}; choose from {NOISE_TYPES}")
    if kind in ("white", "pink", "brown"):  # DEMAND-like slow level drift (+-2 dB)
        drift = np.interp(np.arange(n), np.linspace(0, n, 6), rng.uniform(-2, 2, 6))
        x = x * 10 ** (drift / 20)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


# ----------------------------------------------------------------------------- mixing


def quantize16(x: np.ndarray) -> np.ndarray:
    """What a PCM_16 WAV written by write_wav reads back as (the exact soundfile round trip)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0), SR, subtype="PCM_16", format="WAV")
    buf.seek(0)
    return sf.read(buf, dtype="float64")[0]


def measured_snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    """Whole-clip SNR (dB) of a pair as the files hold it: clean power over (noisy - clean) power."""
    clean = np.asarray(clean, dtype=np.float64)
    residual = np.asarray(noisy, dtype=np.float64) - clean
    return float(10 * np.log10(np.sum(clean**2) / max(np.sum(residual**2), 1e-30)))


def mix_at_snr(
    clean: np.ndarray, noise: np.ndarray, snr_db: float, peak: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Scale `noise` so the quantized pair measures `snr_db` over the whole clip; returns (clean, noisy).

    Both are scaled down together if the mixture would exceed `peak`. The gain is corrected on the
    16-bit round trip, so the files measure the manifest SNR (quantization matters for quiet clips).
    """
    gain = np.sqrt(np.sum(clean**2) / (np.sum(noise**2) * 10 ** (snr_db / 10)))
    scale = 1.0
    for _ in range(4):
        noisy = clean + gain * noise
        scale = min(1.0, peak / np.max(np.abs(noisy)))
        cq, nq = quantize16(clean * scale), quantize16(noisy * scale)
        err = measured_snr(cq, nq) - snr_db
        if abs(err) < 0.01:
            break
        gain *= 10 ** (err / 20)
    return cq, nq


# ----------------------------------------------------------------------------- corpus


def _plan_split(seed: int, split: str, n: int, hard_fraction: float) -> list[dict]:
    """Balanced assignment of speaker, SNR, noise type and hard kind to each clip of a split."""
    rng = np.random.default_rng([seed, 104729, SPLIT_CODES[split]])
    snrs = TEST_SNRS if split == "test" else TRAIN_SNRS  # valid: held-out speakers at training SNRs, as on VB
    speakers = speakers_for(seed, split)
    n_hard = int(round(hard_fraction * n))
    hard = ["ordinary"] * n
    for j, i in enumerate(rng.permutation(n)[:n_hard]):
        hard[i] = HARD_KINDS[j % len(HARD_KINDS)]
    # independent balanced cycles, shuffled, so speaker, SNR and noise type are not confounded
    snr_of = np.resize(np.arange(len(snrs)), n)[rng.permutation(n)]
    noise_of = np.resize(np.arange(len(NOISE_TYPES)), n)[rng.permutation(n)]
    counts: dict[str, int] = {}
    rows = []
    for i in range(n):
        spk = speakers[i % len(speakers)]
        counts[spk.name] = counts.get(spk.name, 0) + 1
        rows.append(
            {
                "index": i,
                "file": f"{spk.name}_{counts[spk.name]:03d}.wav",
                "split": split,
                "speaker": spk,
                "snr_db": -5.0 if hard[i] == "low_snr" else snrs[snr_of[i]],
                "noise_type": NOISE_TYPES[noise_of[i]],
                "hard_kind": hard[i],
            }
        )
    return rows


SPLIT_CODES = {"train": 0, "test": 1, "valid": 2}


def make_clip(seed: int, row: dict, use_espeak: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    """Synthesize one (clean, noisy) pair, already quantized to 16 bits, and its manifest row."""
    rng = np.random.default_rng([seed, SPLIT_CODES[row["split"]], row["index"]])
    spk: Speaker = row["speaker"]
    kind = row["hard_kind"]
    source = "source-filter"
    if kind == "short":
        speech, active = synth_utterance(rng, spk, rng.uniform(0.12, 0.24), lead=0.01, trail=0.01)
    elif kind == "long_silence":
        lead, trail = rng.uniform(2.2, 2.7), rng.uniform(2.2, 2.7)
        speech, active = synth_utterance(rng, spk, lead + rng.uniform(0.8, 1.0) + trail, lead, trail)
    elif use_espeak:
        speech = espeak_utterance(rng, spk)
        active = _activity(speech)
        source = "espeak-ng"
    else:
        speech, active = synth_utterance(
            rng, spk, rng.uniform(1.5, 4.0), lead=rng.uniform(0.1, 0.35), trail=rng.uniform(0.1, 0.35)
        )
    n = len(speech)
    level_db = rng.uniform(-62, -58) if kind == "near_silent" else rng.uniform(-28, -22)
    # room-tone floor (about 50 dB below speech) so the clean reference is never digital zero
    floor = _colored(rng, n, 1.0)
    floor /= np.sqrt(np.mean(floor**2)) + 1e-12
    speech_rms = np.sqrt(np.mean(speech[active] ** 2)) if active.any() else np.sqrt(np.mean(speech**2))
    clean = speech / (speech_rms + 1e-12) + 10 ** (-50 / 20) * floor
    clean *= 10 ** (level_db / 20)
    noise = make_noise(rng, row["noise_type"], n)
    # low_snr clips keep all their noise audible, so -5 dB is hard; others get DEMAND-like rumble
    above_db = 0.0 if kind == "low_snr" else float(rng.uniform(*ABOVE_100HZ_DB))
    if above_db < 0.0:
        share = 10 ** (above_db / 10)
        noise = np.sqrt(share) * noise + np.sqrt(1 - share) * rumble(rng, n)
    clean_q, noisy_q = mix_at_snr(clean, noise, row["snr_db"])
    out = {
        "file": row["file"],
        "split": row["split"],
        "speaker": spk.name,
        "snr_db": row["snr_db"],
        "noise_type": row["noise_type"],
        "speech_fraction": round(float(active.mean()), 4),
        "duration_s": n / SR,  # exact: 16000 divides into a short decimal
        "hard_kind": kind,
        "speech_source": source,
        "noise_above_100hz_db": round(above_db, 2),
    }
    return clean_q, noisy_q, out


def _write_clip(out_dir: Path, seed: int, row: dict, use_espeak: bool) -> dict:
    clean, noisy, rec = make_clip(seed, row, use_espeak)
    write_wav(out_dir / row["split"] / "clean" / row["file"], clean.astype(np.float32), SR)
    write_wav(out_dir / row["split"] / "noisy" / row["file"], noisy.astype(np.float32), SR)
    return rec


def make_dataset(
    out_dir: str | os.PathLike,
    n_train: int = 160,
    n_test: int = 40,
    seed: int = 0,
    hard_fraction: float = 0.1,
    use_espeak: bool = False,
    progress: bool = True,
    n_jobs: int | None = None,
    n_valid: int = 0,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Write the synthetic corpus in the CMGAN layout and OUT/manifest.csv; return the manifest.

    `n_valid` > 0 adds a `valid/` split of held-out speakers (neither train nor test speakers), so model
    selection never looks at the test set. Adding it leaves the train and test clips byte-identical.

    Deterministic: the same arguments give byte-identical files (each clip has its own seeded
    generator, so `n_jobs` does not matter). `use_espeak` takes ordinary clips from espeak-ng when
    the binary is on PATH (with a warning and the built-in synthesizer otherwise).
    `n_jobs`: worker processes (default: all CPUs, at most 4; one for fewer than 24 clips).
    A folder that already holds a corpus (OUT/manifest.csv) is refused unless `overwrite`, which first
    deletes that corpus's WAVs and manifest; a folder with WAVs but no manifest (an interrupted build) is
    completed when the files match.
    """
    if n_train < 0 or n_test < 0 or n_valid < 0 or n_train + n_test + n_valid == 0:
        raise ValueError(f"need a positive number of clips, got n_train={n_train}, n_valid={n_valid}, n_test={n_test}")
    if not 0.0 <= hard_fraction <= 1.0:
        raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction}")
    if use_espeak and not espeak_available():
        warnings.warn("espeak-ng is not on PATH; using the built-in source-filter speech", stacklevel=2)
        use_espeak = False
    out = Path(out_dir)
    if (out / "manifest.csv").exists():
        if not overwrite:
            raise FileExistsError(f"{out}: already holds a corpus (manifest.csv); pass --overwrite "
                                  "(overwrite=True) to replace it, or choose another folder")  # fmt: skip
        for split in SPLIT_CODES:
            for sub in ("clean", "noisy"):
                for path in (out / split / sub).glob("*.wav"):
                    path.unlink()
        (out / "manifest.csv").unlink()
    rows = _plan_split(seed, "train", n_train, hard_fraction) + _plan_split(seed, "test", n_test, hard_fraction)
    rows += _plan_split(seed, "valid", n_valid, hard_fraction)  # after the others: their clips do not change
    planned = {(row["split"], row["file"]) for row in rows}
    stale = [
        str(path)
        for split in SPLIT_CODES
        for sub in ("clean", "noisy")
        if (out / split / sub).is_dir()
        for path in sorted((out / split / sub).glob("*.wav"))
        if (split, path.name) not in planned
    ]
    if stale:
        raise FileExistsError(
            f"{out} holds {len(stale)} WAV file(s) this corpus would not write (e.g. {stale[0]}); "
            "use an empty or new output folder so no stale clips mix in"
        )
    for split in SPLIT_CODES:
        if split == "valid" and not n_valid:
            continue
        for sub in ("clean", "noisy"):
            (out / split / sub).mkdir(parents=True, exist_ok=True)
    from joblib import Parallel, delayed
    from tqdm import tqdm

    # a process pool costs seconds to start: not worth it for a handful of clips
    jobs = n_jobs if n_jobs is not None else (1 if len(rows) < 24 else min(os.cpu_count() or 1, 4))
    tasks = (delayed(_write_clip)(out, seed, row, use_espeak) for row in rows)
    # disable=None: no bar when stderr is not a terminal (a run's train.log gets lines, not carriage returns)
    bar = tqdm(total=len(rows), desc="synthesize", unit="clip", disable=None if progress else True)
    records = []
    if jobs == 1:
        for task in tasks:
            fn, args, kwargs = task
            records.append(fn(*args, **kwargs))
            bar.update()
    else:
        for rec in Parallel(n_jobs=jobs, return_as="generator", batch_size=4)(tasks):
            records.append(rec)
            bar.update()
    bar.close()
    manifest = pd.DataFrame(records, columns=MANIFEST_COLUMNS)
    tmp = out / ".manifest.csv.tmp"
    manifest.to_csv(tmp, index=False)
    os.replace(tmp, out / "manifest.csv")  # the manifest marks a finished corpus: never seen half written
    return manifest


def ensure_corpus(out_dir: str | os.PathLike, **kwargs) -> Path:
    """The corpus at `out_dir`, built by `make_dataset(out_dir, **kwargs)` when it has no manifest yet.

    Why a lock: runs started together on a fresh machine (`ablate --cpu-runs 2`, parallel tests, two notebooks)
    would otherwise write the same default corpus at once; the second waits, then finds it finished."""
    import fcntl

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "manifest.csv").exists():
            make_dataset(out, **kwargs)
    return out
