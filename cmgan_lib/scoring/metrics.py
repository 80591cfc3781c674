"""PESQ, CSIG, CBAK, COVL, segmental SNR and STOI as Loizou's MATLAB `composite.m` computes them.

The composite measures follow the MATLAB reference (Loizou, "Speech Enhancement: Theory and Practice"):
audio arrives as `wavread` gives it, floats in [-1, 1]; `eps` is added to both signals; WSS and LLR average
the lowest 95 % of their per-frame values; segmental SNR averages every frame, clipped to [-10, 35] dB;
CSIG/CBAK/COVL are the unclipped linear regressions. PESQ is ITU P.862.2 (wide band) from the `pesq`
package; STOI is Taal's `stoi.m` ported here, because pystoi resamples with Octave's filter and misses the
MATLAB reference by up to 4e-3. LLR and segmental SNR are gain-invariant; WSS is not quite (its 1e-10 energy
floor), in MATLAB as here, which is why the input scale must be defined: int16 / 32768 == wavread's floats.

The field's usual Python port divides by 32768 inside WSS, which is right for int16 arrays but, fed floats in
[-1, 1] as the published CMGAN evaluation does, pushes quiet critical-band energies under WSS's 1e-10 floor
and overstates CSIG/CBAK/COVL. `legacy_float_scale=True` reproduces that (and the port's [1, 5] clipping) so
published tables can be explained; the default is the MATLAB-correct value.

Everything per frame is vectorized over frames (numpy), so the composite measures cost a fraction of PESQ.
"""

from __future__ import annotations

import math
import os
import re
from functools import lru_cache

import numpy as np
import pandas as pd

METRIC_NAMES: tuple[str, ...] = ("pesq", "csig", "cbak", "covl", "ssnr", "stoi")

_EPS = float(np.spacing(1))  # MATLAB's eps, added to both signals as composite.m does
_ALPHA = 0.95  # WSS and LLR keep the lowest 95 % of frames
_LEGACY_SCALE = 32768.0  # the published port's int16-to-float division, applied to audio already in [-1, 1]

# Klatt's critical bands as tabulated in Loizou's wss.m (centre frequency and bandwidth, Hz).
_CENT_FREQ = np.array(
    [50.0, 120.0, 190.0, 260.0, 330.0, 400.0, 470.0, 540.0, 617.372, 703.378, 798.717, 904.128, 1020.38,
     1148.30, 1288.72, 1442.54, 1610.70, 1794.16, 1993.93, 2211.08, 2446.71, 2701.97, 2978.04, 3276.17,
     3597.63]
)  # fmt: skip
_BANDWIDTH = np.array(
    [70.0, 70.0, 70.0, 70.0, 70.0, 70.0, 70.0, 77.3724, 86.0056, 95.3398, 105.411, 116.256, 127.914,
     140.423, 153.823, 168.154, 183.457, 199.776, 217.153, 235.631, 255.255, 276.072, 298.126, 321.465,
     346.136]
)  # fmt: skip


class MetricsError(ValueError):
    """A pair that cannot be scored; `reason` is a short stable code for the evaluator's CSV.

    Reasons: ``silent_reference``, ``silent_enhanced``, ``too_short``, ``pesq_failed``, ``stoi_failed``,
    ``non_finite``, ``bad_input``.
    """

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


# --------------------------------------------------------------------------------------------- input scale


def to_float(audio: np.ndarray) -> np.ndarray:
    """Float64 at MATLAB `wavread` scale: integer PCM divided by its full scale (int16 by 32768), floats kept.

    A defined scale is what makes int16 and float input give the same composite values.
    """
    a = np.asarray(audio)
    if a.ndim == 2 and min(a.shape) == 1:  # (n, 1) as soundfile's always_2d gives, or (1, n)
        a = a.reshape(-1)
    if a.ndim != 1:
        raise MetricsError("bad_input", f"expected mono 1-D audio, got shape {a.shape}")
    if np.issubdtype(a.dtype, np.signedinteger):
        return a.astype(np.float64) / float(2 ** (8 * a.dtype.itemsize - 1))
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float64)
    raise MetricsError("bad_input", f"unsupported sample type {a.dtype}")


def _matlab_round(x: float) -> int:
    """MATLAB's round (half away from zero) for x >= 0; Python's round would go to even."""
    r = math.floor(x)
    return r + 1 if x - r >= 0.5 else r


def _trimmed_mean(values: np.ndarray, alpha: float = _ALPHA) -> float:
    """Mean of the lowest round(alpha * n) values (NaN sorts last, as in MATLAB)."""
    keep = _matlab_round(values.size * alpha)
    return float(np.mean(np.sort(values)[:keep]))


# ------------------------------------------------------------------------------------------------- framing


def _frame_params(sr: int) -> tuple[int, int]:
    winlength = int(round(30 * sr / 1000))
    return winlength, winlength // 4


def _power(spec: np.ndarray) -> np.ndarray:
    """|X|^2 without the square root that np.abs would take (a third of the WSS time)."""
    return spec.real**2 + spec.imag**2


def _hann_frames(x: np.ndarray, sr: int) -> np.ndarray:
    """(n_frames, win) frames at 75 % overlap times Loizou's Hanning window; n = floor((L - win) / hop)."""
    win, hop = _frame_params(sr)
    n_frames = (x.size - win) // hop if x.size >= win else 0
    if n_frames <= 0:
        raise MetricsError("too_short", f"{x.size} samples give no {win}-sample analysis frame")
    window = 0.5 * (1.0 - np.cos(2.0 * np.pi * np.arange(1, win + 1) / (win + 1)))
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:n_frames]
    return frames * window


# --------------------------------------------------------------------------------------------------- WSS


@lru_cache(maxsize=8)
def _crit_filter(sr: int) -> tuple[np.ndarray, int]:
    """Gaussian critical-band filters over the first n_fft/2 bins, zero below their -30 dB point."""
    win, _ = _frame_params(sr)
    n_fft = int(2 ** math.ceil(math.log2(2 * win)))
    half = n_fft // 2
    max_freq = sr / 2
    min_factor = math.exp(-30.0 / (2.0 * 2.303))
    f0 = np.floor(_CENT_FREQ / max_freq * half)[:, None]
    bw = (_BANDWIDTH / max_freq * half)[:, None]
    norm = np.log(_BANDWIDTH[0]) - np.log(_BANDWIDTH)[:, None]
    j = np.arange(half)[None, :]
    filt = np.exp(-11.0 * ((j - f0) / bw) ** 2 + norm)
    filt[filt <= min_factor] = 0.0
    filt.setflags(write=False)
    return filt, n_fft


def wss_frames(clean: np.ndarray, processed: np.ndarray, sr: int = 16000) -> np.ndarray:
    """Per-frame weighted spectral slope distance (Klatt 1982, Loizou's wss.m), vectorized over frames."""
    filt, n_fft = _crit_filter(sr)
    half = n_fft // 2
    kmax, klocmax = 20.0, 1.0

    def band_db(frames: np.ndarray) -> np.ndarray:
        energy = _power(np.fft.rfft(frames, n_fft, axis=1)[:, :half]) @ filt.T
        return 10.0 * np.log10(np.maximum(energy, 1e-10))

    def weights(energy: np.ndarray, slope: np.ndarray) -> np.ndarray:
        # Nearest peak: for a rising band search right, else left, with the reference's exact indexing.
        n_slope = slope.shape[1]
        idx = np.arange(n_slope)
        rising = slope > 0
        next_fall = np.minimum.accumulate(np.where(rising, n_slope, idx)[:, ::-1], axis=1)[:, ::-1]
        prev_rise = np.maximum.accumulate(np.where(rising, idx, -1), axis=1)
        peak_idx = np.where(rising, next_fall - 1, prev_rise + 1)
        loc_peak = np.take_along_axis(energy, peak_idx, axis=1)
        e = energy[:, :n_slope]
        w_max = kmax / (kmax + energy.max(axis=1, keepdims=True) - e)
        w_locmax = klocmax / (klocmax + loc_peak - e)
        return w_max * w_locmax

    ec = band_db(_hann_frames(clean, sr))
    ep = band_db(_hann_frames(processed, sr))
    sc = np.diff(ec, axis=1)
    sp = np.diff(ep, axis=1)
    w = 0.5 * (weights(ec, sc) + weights(ep, sp))
    return np.sum(w * (sc - sp) ** 2, axis=1) / np.sum(w, axis=1)


# --------------------------------------------------------------------------------------------------- LLR


def _autocorr(frames: np.ndarray, order: int) -> np.ndarray:
    n = frames.shape[1]
    return np.stack([np.einsum("ij,ij->i", frames[:, : n - k], frames[:, k:]) for k in range(order + 1)], 1)


def _levinson(r: np.ndarray) -> np.ndarray:
    """LPC polynomials [1, -a_1 .. -a_p] per row of autocorrelations (Levinson-Durbin, looping over order)."""
    n_frames, p1 = r.shape
    order = p1 - 1
    a = np.zeros((n_frames, order))
    err = r[:, 0].copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(order):
            acc = np.einsum("ij,ij->i", a[:, :i], r[:, i:0:-1]) if i else 0.0
            k = (r[:, i + 1] - acc) / err
            prev = a[:, :i].copy()
            a[:, i] = k
            if i:
                a[:, :i] = prev - k[:, None] * prev[:, ::-1]
            err = (1.0 - k * k) * err
    return np.concatenate([np.ones((n_frames, 1)), -a], axis=1)


def llr_frames(clean: np.ndarray, processed: np.ndarray, sr: int = 16000) -> np.ndarray:
    """Per-frame log-likelihood ratio of LPC models (Loizou's llr.m), vectorized over frames."""
    order = 10 if sr < 10000 else 16
    fc = _hann_frames(clean, sr)
    fp = _hann_frames(processed, sr)
    rc = _autocorr(fc, order)
    a_clean = _levinson(rc)
    a_proc = _levinson(_autocorr(fp, order))
    lag = np.abs(np.subtract.outer(np.arange(order + 1), np.arange(order + 1)))
    toeplitz_c = rc[:, lag]
    num = np.einsum("fi,fij,fj->f", a_proc, toeplitz_c, a_proc)
    den = np.einsum("fi,fij,fj->f", a_clean, toeplitz_c, a_clean)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(num / den)


# -------------------------------------------------------------------------------------------------- SSNR


def segsnr_frames(clean: np.ndarray, processed: np.ndarray, sr: int = 16000) -> np.ndarray:
    """Per-frame segmental SNR in dB clipped to [-10, 35] (Loizou's comp_snr.m), vectorized over frames."""
    fc = _hann_frames(clean, sr)
    fp = _hann_frames(processed, sr)
    signal = np.sum(fc**2, axis=1)
    noise = np.sum((fc - fp) ** 2, axis=1)
    return np.clip(10.0 * np.log10(signal / (noise + _EPS) + _EPS), -10.0, 35.0)


# ------------------------------------------------------------------------------------------ PESQ and STOI


def pesq_wb(clean: np.ndarray, enhanced: np.ndarray, sr: int = 16000) -> float:
    """Wide-band PESQ (P.862.2 MOS-LQO); failures become MetricsError('pesq_failed')."""
    from pesq import PesqError, pesq

    try:
        return float(pesq(sr, clean, enhanced, "wb"))
    except PesqError as exc:  # NoUtterancesError, BufferTooShortError, ...
        raise MetricsError("pesq_failed", f"{type(exc).__name__}: {exc}") from exc
    except ValueError as exc:  # unsupported rate
        raise MetricsError("pesq_failed", str(exc)) from exc


@lru_cache(maxsize=8)
def _matlab_resample_filter(p: int, q: int, n: int = 10, beta: float = 5.0) -> np.ndarray:
    """MATLAB `resample`'s default anti-aliasing filter: firls of order 2*n*max(p,q) times kaiser(., 5)."""
    from scipy.signal import firls
    from scipy.signal.windows import kaiser

    pqmax = max(p, q)
    fc = 1.0 / (2 * pqmax)
    length = 2 * n * pqmax + 1
    h = firls(length, [0.0, 2 * fc, 2 * fc, 1.0], [1.0, 1.0, 0.0, 0.0]) * kaiser(length, beta)
    h = p * h / np.sum(h)
    h.setflags(write=False)
    return h


def resample_matlab(x: np.ndarray, sr_out: int, sr_in: int) -> np.ndarray:
    """MATLAB's `resample(x, p, q)` (not Octave's, which pystoi copies): STOI depends on it at 1e-3."""
    from scipy.signal import upfirdn

    g = math.gcd(int(sr_out), int(sr_in))
    p, q = int(sr_out) // g, int(sr_in) // g
    h = _matlab_resample_filter(p, q)
    half = (h.size - 1) // 2
    nz = q - half % q  # delay so that downsampling by q hits the centre tap
    delay = (half + nz) // q
    lx = x.size
    ly = -(-lx * p // q)
    nz1 = 0
    while -(-((lx - 1) * p + nz + h.size + nz1) // q) - delay < ly:
        nz1 += 1
    h = np.concatenate([np.zeros(nz), h, np.zeros(nz1)])
    return upfirdn(h, x, p, q)[delay : delay + ly]


@lru_cache(maxsize=4)
def _thirdoct(fs: int, nfft: int, num_bands: int, min_freq: float) -> np.ndarray:
    """1/3-octave band matrix of stoi.m's thirdoct (edges snapped to the nearest FFT bin)."""
    f = np.linspace(0, fs, nfft + 1)[: nfft // 2 + 1]
    k = np.arange(num_bands)
    centre = 2.0 ** (k / 3) * min_freq
    lo = np.sqrt(centre * 2.0 ** ((k - 1) / 3) * min_freq)
    hi = np.sqrt(centre * 2.0 ** ((k + 1) / 3) * min_freq)
    a = np.zeros((num_bands, f.size))
    for i in range(num_bands):
        a[i, np.argmin((f - lo[i]) ** 2) : np.argmin((f - hi[i]) ** 2)] = 1.0
    a.setflags(write=False)
    return a


# stoi.m constants: 10 kHz, 256-sample frames, 512-point FFT, 15 bands from 150 Hz, 30-frame segments,
# -15 dB lower SDR bound, 40 dB speech dynamic range.
_STOI_FS, _STOI_N, _STOI_NFFT, _STOI_BANDS, _STOI_MINF = 10000, 256, 512, 15, 150.0
_STOI_SEG, _STOI_BETA, _STOI_RANGE = 30, -15.0, 40.0


def _stoi_frames(x: np.ndarray) -> np.ndarray:
    """Hanning-windowed frames at 50 % overlap, starts 0, K, ... < len - N (stoi.m's `1:K:(length(x)-N)`)."""
    n, hop = _STOI_N, _STOI_N // 2
    starts = np.arange(0, x.size - n, hop)
    w = 0.5 * (1.0 - np.cos(2.0 * np.pi * np.arange(1, n + 1) / (n + 1)))
    return np.lib.stride_tricks.sliding_window_view(x, n)[starts] * w


def stoi(clean: np.ndarray, enhanced: np.ndarray, sr: int = 16000) -> float:
    """Classic STOI exactly as Taal's stoi.m, vectorized; too little speech raises MetricsError.

    pystoi resamples with Octave's filter and misses the MATLAB reference by up to 4e-3 on the shared tracks;
    this port (MATLAB `resample`) agrees with it to the reference's printed precision.
    """
    x, y = np.asarray(clean, np.float64), np.asarray(enhanced, np.float64)
    if sr != _STOI_FS:
        x, y = resample_matlab(x, _STOI_FS, sr), resample_matlab(y, _STOI_FS, sr)
    n, hop = _STOI_N, _STOI_N // 2
    if x.size <= n + hop:
        raise MetricsError("too_short", f"{x.size} samples at 10 kHz: too short for STOI")
    # Drop frames more than 40 dB below the loudest clean frame, then overlap-add the rest (N = 2 * hop).
    xf, yf = _stoi_frames(x), _stoi_frames(y)
    with np.errstate(divide="ignore"):
        energy = 20.0 * np.log10(np.linalg.norm(xf, axis=1) / np.sqrt(n))
    keep = (energy - energy.max() + _STOI_RANGE) > 0
    xf, yf = xf[keep], yf[keep]

    def overlap_add(frames: np.ndarray) -> np.ndarray:
        out = np.zeros((frames.shape[0] + 1, hop))
        out[:-1] += frames[:, :hop]
        out[1:] += frames[:, hop:]
        return out.reshape(-1)

    obm = _thirdoct(_STOI_FS, _STOI_NFFT, _STOI_BANDS, _STOI_MINF)
    half = _STOI_NFFT // 2 + 1

    def bands(sig: np.ndarray) -> np.ndarray:
        return np.sqrt(_power(np.fft.rfft(_stoi_frames(sig), _STOI_NFFT, axis=1)[:, :half]) @ obm.T).T

    xb, yb = bands(overlap_add(xf)), bands(overlap_add(yf))
    if xb.shape[1] < _STOI_SEG:
        raise MetricsError(
            "stoi_failed", f"only {xb.shape[1]} speech frames after silence removal (STOI needs {_STOI_SEG})"
        )
    xseg = np.lib.stride_tricks.sliding_window_view(xb, _STOI_SEG, axis=1)  # (bands, segments, N)
    yseg = np.lib.stride_tricks.sliding_window_view(yb, _STOI_SEG, axis=1)
    tiny = np.finfo(np.float64).eps  # keeps an all-zero enhanced signal finite (MATLAB would give NaN)
    scale = np.linalg.norm(xseg, axis=2, keepdims=True) / (np.linalg.norm(yseg, axis=2, keepdims=True) + tiny)
    y_prime = np.minimum(yseg * scale, xseg * (1.0 + 10.0 ** (-_STOI_BETA / 20.0)))
    xn = xseg - xseg.mean(axis=2, keepdims=True)
    yn = y_prime - y_prime.mean(axis=2, keepdims=True)
    xn = xn / (np.linalg.norm(xn, axis=2, keepdims=True) + tiny)
    yn = yn / (np.linalg.norm(yn, axis=2, keepdims=True) + tiny)
    return float(np.mean(np.sum(xn * yn, axis=2)))


# --------------------------------------------------------------------------------------------- composite


def composite(
    pesq_mos: float,
    llr_mean: float,
    wss_dist: float,
    segsnr: float,
    clip: bool = False,
) -> tuple[float, float, float]:
    """Hu & Loizou (2008) regressions; MATLAB does not clip to [1, 5], the published Python port does."""
    csig = 3.093 - 1.029 * llr_mean + 0.603 * pesq_mos - 0.009 * wss_dist
    cbak = 1.634 + 0.478 * pesq_mos - 0.007 * wss_dist + 0.063 * segsnr
    covl = 1.594 + 0.805 * pesq_mos - 0.512 * llr_mean - 0.007 * wss_dist
    if clip:
        csig, cbak, covl = (min(5.0, max(1.0, v)) for v in (csig, cbak, covl))
    return csig, cbak, covl


def compute_metrics(
    clean: np.ndarray,
    enhanced: np.ndarray,
    sr: int = 16000,
    legacy_float_scale: bool = False,
    clip_composites: bool | None = None,
) -> dict[str, float]:
    """PESQ, CSIG, CBAK, COVL, SSNR, STOI of `enhanced` against `clean` (trimmed to the shorter).

    int16 arrays are divided by 32768, floats are taken as [-1, 1]: both give identical values.
    `legacy_float_scale=True` reproduces the published port fed float audio (WSS on x / 32768, composites
    clipped to [1, 5]). `clip_composites` overrides the clipping alone (default: off unless legacy).
    Raises MetricsError (with `.reason`) when the pair cannot be scored.
    """
    x = to_float(clean)
    y = to_float(enhanced)
    n = min(x.size, y.size)
    x, y = x[:n], y[:n]
    if n < sr // 4:  # PESQ's minimum; the frame measures need far less
        raise MetricsError("too_short", f"{n} samples; at least {sr // 4} (0.25 s) are needed")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise MetricsError("non_finite", "audio contains NaN or inf")
    if not np.any(x):
        raise MetricsError("silent_reference", "the clean reference is all zeros")
    if not np.any(y):  # PESQ divides by the joint peak and fails; a model that outputs silence is recorded
        raise MetricsError("silent_enhanced", "the enhanced signal is all zeros")
    if clip_composites is None:
        clip_composites = legacy_float_scale

    pesq_mos = pesq_wb(x, y, sr)
    stoi_val = stoi(x, y, sr)

    xe, ye = x + _EPS, y + _EPS  # composite.m: data = data(1:len) + eps
    if legacy_float_scale:
        wss_dist = _trimmed_mean(wss_frames(xe / _LEGACY_SCALE, ye / _LEGACY_SCALE, sr))
    else:
        wss_dist = _trimmed_mean(wss_frames(xe, ye, sr))
    llr_mean = _trimmed_mean(llr_frames(xe, ye, sr))
    ssnr = float(np.mean(segsnr_frames(xe, ye, sr)))
    csig, cbak, covl = composite(pesq_mos, llr_mean, wss_dist, ssnr, clip=clip_composites)

    out = {"pesq": pesq_mos, "csig": csig, "cbak": cbak, "covl": covl, "ssnr": ssnr, "stoi": stoi_val}
    bad = [k for k, v in out.items() if not math.isfinite(v)]
    if bad:
        raise MetricsError("non_finite", f"{', '.join(bad)} not finite (degenerate enhanced audio?)")
    return out


# ------------------------------------------------------------------------------------------ reference logs


def read_reference_log(path: str | os.PathLike) -> pd.DataFrame:
    """Per-track metrics from the MATLAB log (blocks, 3 decimals) or the Python log (one tab line per track).

    Returns a DataFrame indexed by track name with columns METRIC_NAMES; the logs' own averages are dropped.
    """
    text = open(path, encoding="utf-8", errors="replace").read()
    rows: dict[str, dict[str, float]] = {}
    for block in text.split("Track name:")[1:]:
        name = block.split(None, 1)[0]
        row: dict[str, float] = {}
        pesq_m = re.search(r"MOS-LQO\):\s*=\s*(-?[\d.]+)", block) or re.search(r"PESQ:\s*(-?[\d.]+)", block)
        if pesq_m:
            row["pesq"] = float(pesq_m.group(1))
        for key in METRIC_NAMES[1:]:
            m = re.search(rf"{key.upper()}\s*[:=]\s*(-?[\d.]+)", block)
            if m:
                row[key] = float(m.group(1))
        if len(row) == len(METRIC_NAMES):
            rows[name] = row
    if not rows:
        raise ValueError(f"{path}: no per-track metrics found")
    df = pd.DataFrame.from_dict(rows, orient="index")[list(METRIC_NAMES)]
    df.index.name = "track"
    return df
