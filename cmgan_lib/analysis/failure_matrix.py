"""The failure matrix (issue 20): each cause of PESQ failures the fix document names put on its own axis (input
SNR, estimate level, numeric form, constructed edge cases, speech fraction), on the same training crops as
`cmgan_lib.analysis.audit`, every failure classified by cause and by pesq's own error code; with the tables and verdicts
notebook 01 shows from it. Every rate comes with a 95% Wilson interval.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cmgan_lib.analysis.audit import as_clip_pairs, rate_table, score_reason_pairs
from cmgan_lib.analysis.stats import wilson
from cmgan_lib.data.crops import crop_pair
from cmgan_lib.scoring.pesq_worker import KNOWN_REASONS, PesqPool, score_many

# Issue 20: the fix document names four causes of PESQ failures ("silent audio segments, very low SNR samples,
# numerical precision issues in the PESQ library, edge cases in audio preprocessing"). The matrix puts each on an
# axis, on the same training crops, and classifies every failure by cause and by pesq's own error code.

SNRS_DB = (-10.0, -5.0, 0.0, 5.0, 10.0, 20.0)
GAINS = (1.0, 1e-2, 1e-4, 1e-6, 0.0)
FORMS = ("float32", "float64", "int16", "clipped")
FORM_GAINS = (1.0, 1e-3, 1e-6)
EDGE_CASES = (
    "too_short_crop", "nan_in_estimate", "inf_in_estimate", "nan_in_reference", "dc_offset_estimate",
    "dc_offset_reference", "pure_noise_estimate", "silent_reference",
)  # fmt: skip
SPEECH_FRACTION_EDGES = (0.0, 0.05, 0.25, 0.5, 0.75, 1.0)
SHORT_CROP = 3200  # 0.2 s: under the 1/4 s PESQ accepts
AXES = ("as is", "input SNR (dB)", "estimate level (gain)", "numeric form", "edge case", "speech fraction")
# The fix document's four causes and the axis that tests each.
DOCUMENT_CAUSES = {
    "silent audio segments": "speech fraction",
    "very low SNR samples": "input SNR (dB)",
    "numerical precision issues in the PESQ library": "numeric form",
    "edge cases in audio preprocessing": "edge case",
}
# pesq's `on_error=PesqError.RETURN_VALUES` codes (pesq 0.0.4, cypesq); NaN is what it returns for an all-zero or
# NaN estimate, where no code is set (the C code's level alignment divides by zero).
PESQ_CODES = {
    -1: "UNKNOWN", -2: "INVALID_SAMPLE_RATE", -3: "OUT_OF_MEMORY_REF", -4: "OUT_OF_MEMORY_DEG",
    -5: "OUT_OF_MEMORY_TMP", -6: "BUFFER_TOO_SHORT", -7: "NO_UTTERANCES_DETECTED",
}  # fmt: skip
Case = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def cause_of(reason: str | None) -> str | None:
    """The matrix's cause of a failure: the classifier's reason, with pesq_worker's 'other:' prefix dropped, so a
    failure PESQ's own errors reveal (e.g. 'nonfinite_reference') is a cause of its own, not 'other'."""
    if reason is None or (isinstance(reason, float) and math.isnan(reason)):
        return None
    return reason.removeprefix("other:")


def loudest_frame_energy(clip: np.ndarray, frame: int = 320) -> float:
    """Mean-square energy of the loudest 20 ms frame of a whole clip (the speech-fraction reference level)."""
    x = np.asarray(clip, dtype=np.float64)
    pad = np.pad(x, (0, (-len(x)) % frame))
    return float(np.max(np.mean(pad.reshape(-1, frame) ** 2, axis=1))) if len(x) else 0.0


def speech_fraction(crop: np.ndarray, clip_peak: float, floor_db: float = -40.0, frame: int = 320) -> float:
    """Share of the crop's 20 ms frames within `floor_db` of the clip's loudest frame: 0 for a crop that landed in
    a pause (relative to the clip, so a quiet clip is not all 'silence'), 1 for a crop of continuous speech."""
    x = np.asarray(crop, dtype=np.float64)
    n = len(x) // frame
    if n == 0 or clip_peak <= 0 or not np.all(np.isfinite(x)):
        return float("nan") if n == 0 or not np.all(np.isfinite(x)) else 0.0
    energy = np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)
    return float(np.mean(energy > clip_peak * 10 ** (floor_db / 10)))


def mix_at_crop_snr(clean: np.ndarray, noisy: np.ndarray, snr_db: float) -> np.ndarray:
    """clean + g * (noisy - clean) with g chosen so the crop measures `snr_db` (the clip's own noise, rescaled).

    A silent clean crop has no SNR: the noise stays at its own level (the reference is then silent anyway)."""
    c = np.asarray(clean, dtype=np.float64)
    noise = np.asarray(noisy, dtype=np.float64) - c
    pc, pn = float(np.sum(c**2)), float(np.sum(noise**2))
    g = math.sqrt(pc / (pn * 10 ** (snr_db / 10))) if pc > 0 and pn > 0 else 1.0
    return (c + g * noise).astype(np.float32)


def numeric_form(x: np.ndarray, form: str) -> np.ndarray:
    """The estimate in one numeric form: float32, float64, int16-rounded (what a 16-bit file holds, back as
    float), or hard-clipped at a quarter of its peak (12 dB of clipping)."""
    x = np.asarray(x, dtype=np.float64)
    if form == "float32":
        return x.astype(np.float32)
    if form == "float64":
        return x
    if form == "int16":
        return (np.clip(np.round(x * 32767.0), -32768, 32767) / 32767.0).astype(np.float32)
    if form == "clipped":
        a = 0.25 * float(np.max(np.abs(x))) if len(x) else 0.0
        return np.clip(x, -a, a).astype(np.float32)
    raise ValueError(f"unknown numeric form {form!r}; expected one of {FORMS}")


def _edge_case(name: str) -> Case:
    def nonfinite(x: np.ndarray, value: float) -> np.ndarray:
        y = np.array(x, dtype=np.float32, copy=True)
        y[len(y) // 2] = value
        return y

    def dc(x: np.ndarray) -> np.ndarray:
        return (x + np.float32(0.5 * float(np.max(np.abs(x))))).astype(np.float32)

    cases: dict[str, Case] = {
        "too_short_crop": lambda c, n, r: (c[:SHORT_CROP], n[:SHORT_CROP]),
        "nan_in_estimate": lambda c, n, r: (c, nonfinite(n, np.nan)),
        "inf_in_estimate": lambda c, n, r: (c, nonfinite(n, np.inf)),
        "nan_in_reference": lambda c, n, r: (nonfinite(c, np.nan), n),
        "dc_offset_estimate": lambda c, n, r: (c, dc(n)),
        "dc_offset_reference": lambda c, n, r: (dc(c), n),
        "pure_noise_estimate": lambda c, n, r: (c, (r.standard_normal(len(n)) * np.sqrt(np.mean(
            np.asarray(n, dtype=np.float64) ** 2))).astype(np.float32)),
        "silent_reference": lambda c, n, r: (np.zeros_like(c), n),
    }  # fmt: skip
    if name not in cases:
        raise ValueError(f"unknown edge case {name!r}; expected one of {EDGE_CASES}")
    return cases[name]


def matrix_cases(
    snrs_db: Sequence[float] = SNRS_DB,
    gains: Sequence[float] = GAINS,
    forms: Sequence[str] = FORMS,
    form_gains: Sequence[float] = FORM_GAINS,
    edge_cases: Sequence[str] = EDGE_CASES,
) -> list[tuple[str, str, float, Case]]:
    """(axis, level, order, make_pair) of every condition; make_pair(clean crop, noisy crop, rng) -> (reference,
    estimate). The estimate is the noisy crop transformed: what the discriminator's first labels score."""
    cases: list[tuple[str, str, float, Case]] = [("as is", "clean/noisy", 0.0, lambda c, n, r: (c, n))]
    for s in snrs_db:
        cases.append(("input SNR (dB)", f"{s:g}", float(s), lambda c, n, r, s=s: (c, mix_at_crop_snr(c, n, s))))
    for g in gains:
        cases.append(("estimate level (gain)", f"{g:g}", -float(g),
                      lambda c, n, r, g=g: (c, (np.asarray(n, dtype=np.float64) * g).astype(np.float32))))  # fmt: skip
    for k, form in enumerate(forms):
        numeric_form(np.zeros(1), form)  # refuse an unknown form before any crop is cut
        for j, g in enumerate(form_gains):

            def make(c, n, r, g=g, f=form):
                return c, numeric_form(np.asarray(n, dtype=np.float64) * g, f)

            cases.append(("numeric form", f"{form}, gain {g:g}", k * 10.0 + j, make))
    for k, name in enumerate(edge_cases):
        cases.append(("edge case", name, float(k), _edge_case(name)))
    return cases


def pesq_error_code(reference: np.ndarray, estimate: np.ndarray, sr: int = 16000) -> float:
    """What pesq returns with `on_error=PesqError.RETURN_VALUES`: the score, a negative error code (PESQ_CODES), or
    NaN where pesq computes no code (an all-zero or NaN estimate); an exception it still raises reads as NaN."""
    import pesq

    try:
        with np.errstate(all="ignore"):
            return float(pesq.pesq(sr, reference, estimate, "wb", on_error=pesq.PesqError.RETURN_VALUES))
    except Exception:  # noqa: BLE001 - the point is what a caller gets back, not why
        return float("nan")


def published_pesq_loss(reference: np.ndarray, estimate: np.ndarray, sr: int = 16000, return_values: bool = False):
    """`pesq_loss` as CMGAN, MP-SENet and SEMamba write it: PESQ-WB in a bare try/except that returns -1, so their
    `if -1 in pesq_score` check sees every exception. With `return_values` (pesq's `on_error=RETURN_VALUES`, which
    none of them uses) failures come back as negative codes or NaN instead, and the -1 check misses them."""
    import pesq

    mode = pesq.PesqError.RETURN_VALUES if return_values else pesq.PesqError.RAISE_EXCEPTION
    try:
        with np.errstate(all="ignore"):
            return pesq.pesq(sr, reference, estimate, "wb", on_error=mode)
    except Exception:  # noqa: BLE001 - the published bare `except:`
        return -1


def _matrix_pairs(pairs, cut_len, crops_per_clip, seed, cases, max_clips):
    """Per clip: its rows and (reference, estimate) arrays for every crop x case."""
    rng = np.random.default_rng(seed)
    for i, pair in enumerate(pairs[:max_clips] if max_clips else pairs):
        clean, noisy = pair.load()
        peak = loudest_frame_energy(clean)
        rows, refs, ests = [], [], []
        for k in range(crops_per_clip):
            c, n = crop_pair(clean, noisy, cut_len, rng)
            c, n = np.asarray(c, dtype=np.float32), np.asarray(n, dtype=np.float32)
            frac = speech_fraction(c, peak)
            case_rng = np.random.default_rng([seed, i, k])
            for axis, level, order, make in cases:
                ref, est = make(c, n, case_rng)
                rows.append({"clip": pair.name, "clip_index": i, "crop": k, "axis": axis, "level": level,
                             "order": order, "speech_fraction": frac, "samples": len(ref)})  # fmt: skip
                refs.append(ref)
                ests.append(est)
        yield rows, refs, ests


def failure_matrix(
    pairs: Sequence,
    cut_len: int,
    crops_per_clip: int = 1,
    max_clips: int | None = None,
    seed: int = 0,
    pool: PesqPool | None = None,
    dataset: str = "audit",
    progress: bool = False,
    **axes,
) -> pd.DataFrame:
    """One row per crop x condition of the matrix: PESQ of (reference, estimate), the classified `reason`, its
    `cause` (`cause_of`), pesq's own `pesq_code` for failures (RETURN_VALUES), and the reference crop's
    `speech_fraction`. `axes`: the levels of `matrix_cases` (snrs_db, gains, forms, form_gains, edge_cases).

    Cost: (1 + len(snrs) + len(gains) + len(forms) * len(form_gains) + len(edges)) PESQ calls per crop, 32 at the
    defaults; a failure costs one more call (its code). Sizes are parameters so notebooks stay fast."""
    if cut_len is None or int(cut_len) < 1:
        raise ValueError("cut_len is required (samples): audit at the crop the runs trained on")
    if crops_per_clip < 1:
        raise ValueError("crops_per_clip must be >= 1")
    clips = as_clip_pairs(pairs)
    cases = matrix_cases(**axes)
    total = len(clips[:max_clips] if max_clips else clips) * crops_per_clip * len(cases)
    bar = tqdm(total=total, desc=f"failure matrix ({dataset})", unit="pair", disable=not progress)
    out: list[dict] = []

    def collect(rows, refs, ests, results) -> None:
        for row, ref, est, (score, reason) in zip(rows, refs, ests, results, strict=True):
            row.update(pesq=score, reason=reason, cause=cause_of(reason))
            row["pesq_code"] = pesq_error_code(ref, est) if reason is not None else score
            out.append(row)
        bar.update(len(rows))

    in_flight: deque = deque()
    try:
        for rows, refs, ests in _matrix_pairs(clips, int(cut_len), crops_per_clip, seed, cases, max_clips):
            if pool is None:
                collect(rows, refs, ests, score_many(refs, ests))
                continue
            in_flight.append((rows, refs, ests, pool.submit(refs, ests)))
            while len(in_flight) > 2:
                rows_, refs_, ests_, handle = in_flight.popleft()
                collect(rows_, refs_, ests_, score_reason_pairs(*handle.result()))
        while in_flight:
            rows_, refs_, ests_, handle = in_flight.popleft()
            collect(rows_, refs_, ests_, score_reason_pairs(*handle.result()))
    finally:
        bar.close()
    df = pd.DataFrame(out)
    df.insert(0, "dataset", dataset)
    df["valid"] = df["reason"].isna()
    return df


def failure_matrices(sets: Sequence, cut_len: int, crops_per_clip: int = 1, max_clips: int | None = None,
                     seed: int = 0, pool: PesqPool | None = None, **axes) -> pd.DataFrame:  # fmt: skip
    """`failure_matrix` of every audit set (objects with `name` and `pairs`, e.g. `audit_sets`)."""
    return pd.concat([failure_matrix(s.pairs, cut_len, crops_per_clip, max_clips, seed, pool, dataset=s.name, **axes)
                      for s in sets], ignore_index=True)  # fmt: skip


def _speech_fraction_rows(matrix: pd.DataFrame, edges: Sequence[float] = SPEECH_FRACTION_EDGES) -> pd.DataFrame:
    """The 'as is' crops again, on the speech-fraction axis (level: the bin of the reference crop's fraction)."""
    base = matrix[matrix["axis"] == "as is"].copy()
    bins = pd.cut(base["speech_fraction"], list(edges), right=False, include_lowest=True)
    last = base["speech_fraction"] >= edges[-1]
    labels = [f"{iv.left:g}-{iv.right:g}" if isinstance(iv, pd.Interval) else "n/a" for iv in bins]
    orders = [float(iv.left) if isinstance(iv, pd.Interval) else 9.0 for iv in bins]
    base["level"] = [f"{edges[-1]:g}" if is_last else lab for lab, is_last in zip(labels, last, strict=True)]
    base["order"] = [float(edges[-1]) if is_last else o for o, is_last in zip(orders, last, strict=True)]
    base["axis"] = "speech fraction"
    return base


def matrix_table(matrix: pd.DataFrame, batch_size: int = 4) -> pd.DataFrame:
    """Per dataset x axis x level: failures overall and by cause with 95% Wilson intervals, and the published-rule
    skip rate at `batch_size` they imply (`rate_table` on `cause`); the speech-fraction axis bins the 'as is'
    crops by their reference's speech fraction."""
    full = pd.concat([matrix, _speech_fraction_rows(matrix)], ignore_index=True)
    table = rate_table(full, by=["dataset", "axis", "order", "level"], batch_size=batch_size, reason_col="cause")
    axis_rank = {a: k for k, a in enumerate(AXES)}
    table = table.assign(_a=table["axis"].map(axis_rank)).sort_values(["dataset", "_a", "order"], kind="stable")
    return table.drop(columns=["_a"]).rename(columns={"order": "level_order"}).reset_index(drop=True)


def matrix_causes(matrix: pd.DataFrame) -> list[str]:
    """Every cause the matrix can name: the classifier's known causes, then any new one it observed."""
    observed = sorted({c for c in matrix["cause"].dropna().unique() if c not in KNOWN_REASONS})
    return list(KNOWN_REASONS) + observed


def cause_verdicts(matrix: pd.DataFrame, max_conditions: int = 4) -> pd.DataFrame:
    """One generated verdict per cause: 'causes failures when <axis> is <level> (k of n ...)' for the conditions
    where it occurs (most frequent first), or 'no failure in n (95% upper bound x%)' over every scored pair."""
    from cmgan_lib.analysis.stats import format_rate

    full = pd.concat([matrix, _speech_fraction_rows(matrix)], ignore_index=True)
    full = full[full["axis"] != "as is"]  # the same crops as the speech-fraction axis
    rows = []
    for cause in matrix_causes(matrix):
        hit = full["cause"] == cause
        n_total = int((matrix["axis"] != "as is").sum())
        if not hit.any():
            verdict = f"no failure in {format_rate(wilson(0, n_total)).removeprefix('0 of ')}"
            rows.append(dict(cause=cause, failures=0, pairs=n_total, verdict=verdict))
            continue
        parts = []
        groups = full.groupby(["axis", "level"], sort=False)
        counts = [(a, lev, int((g["cause"] == cause).sum()), len(g)) for (a, lev), g in groups]
        counts = sorted([c for c in counts if c[2]], key=lambda c: (-c[2] / c[3], c[0], c[1]))
        for axis, level, k, n in counts[:max_conditions]:
            parts.append(f"{axis} is {level} ({format_rate(wilson(k, n))})")
        more = f"; and {len(counts) - max_conditions} more condition(s)" if len(counts) > max_conditions else ""
        verdict = "causes failures when " + "; ".join(parts) + more
        rows.append(dict(cause=cause, failures=int(hit.sum()), pairs=len(full), verdict=verdict))
    return pd.DataFrame(rows)


def axis_verdicts(matrix: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and axis: the levels where PESQ fails with their causes, or 'no failure in n (95% upper bound)'."""
    from cmgan_lib.analysis.stats import format_rate

    full = pd.concat([matrix, _speech_fraction_rows(matrix)], ignore_index=True)
    rows = []
    for (dataset, axis), g in full.groupby(["dataset", "axis"], sort=False):
        failed = g[g["cause"].notna()]
        if failed.empty:
            bound = format_rate(wilson(0, len(g))).removeprefix("0 of ")
            rows.append(dict(dataset=dataset, axis=axis, verdict=f"no failure in {bound}"))
            continue
        parts = []
        for level, lg in g.sort_values("order").groupby("level", sort=False):
            k = int(lg["cause"].notna().sum())
            if k:
                causes = ", ".join(f"{c} {n}" for c, n in lg["cause"].value_counts().items())
                parts.append(f"{level}: {format_rate(wilson(k, len(lg)))} [{causes}]")
        rows.append(dict(dataset=dataset, axis=axis, verdict="failures at " + "; ".join(parts)))
    return pd.DataFrame(rows)


def minus_one_table(matrix: pd.DataFrame) -> pd.DataFrame:
    """Per cause: how the descendants' `-1 in pesq_score` check sees its failures. Their `pesq_loss` turns every
    exception into -1 (caught); with pesq's RETURN_VALUES a failure comes back as its code (PESQ_CODES) or NaN,
    and only -1 is caught: the rest pass into the labels as (code - 1) / 3.5 or NaN."""
    failed = matrix[matrix["cause"].notna()]
    rows = []
    for cause, g in failed.groupby("cause", sort=True):
        codes = g["pesq_code"]
        named = codes.map(lambda v: "NaN (no code)" if not np.isfinite(v) else PESQ_CODES.get(int(v), f"{v:g}"))
        caught = int((codes == -1).sum())
        rows.append(dict(cause=cause, failures=len(g), pesq_codes=", ".join(f"{c} {n}" for c, n in
                                                                            named.value_counts().items()),
                         caught_by_minus_one_default=len(g), caught_by_minus_one_return_values=caught,
                         missed_with_return_values=len(g) - caught))  # fmt: skip
    return pd.DataFrame(rows)
