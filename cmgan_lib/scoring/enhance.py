"""Full-track enhancement exactly as the published CMGAN evaluation does it, and the `cmgan enhance` command."""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cmgan_lib import SAMPLE_RATE
from cmgan_lib.core.audio import AudioError, read_wav, write_wav
from cmgan_lib.core.dsp import COMPRESS, HOP, N_FFT, power_compress, power_uncompress, rms_normalizer
from cmgan_lib.core.dsp import istft as _istft
from cmgan_lib.core.dsp import stft as _stft
from cmgan_lib.models import TSCNet

log = logging.getLogger(__name__)


class DeviceUnavailableError(ValueError):
    """The requested device does not exist in this torch build or on this machine."""


def _checked_device(device: str | torch.device) -> torch.device:
    """torch.device(device), refused in one line when this torch or this machine cannot use it (torch itself
    fails later, mid-run, with `AssertionError: Torch not compiled with CUDA enabled`). `gpu` means cuda."""
    name = str(device)
    text = name.replace("gpu", "cuda", 1) if name.split(":")[0] == "gpu" else name
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise DeviceUnavailableError(f"device={name!r}: not a device name (use cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            raise DeviceUnavailableError(f"device={name!r}: this torch ({torch.__version__}) has no CUDA (a CPU-only "
                                         "build); use device=cpu, or install a CUDA build of torch")  # fmt: skip
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if dev.index is not None and dev.index >= count or count == 0:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            where = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
            raise DeviceUnavailableError(f"device={name!r}: this machine has {count} usable CUDA device(s){where}")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceUnavailableError(f"device={name!r}: this torch ({torch.__version__}) has no MPS on this machine "
                                     "(Apple silicon only); use device=cpu")  # fmt: skip
    elif dev.type != "cpu":
        try:
            torch.empty(0, device=dev)
        except (AssertionError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
            raise DeviceUnavailableError(f"device={name!r}: this torch ({torch.__version__}) cannot use it "
                                         f"({reason})") from None  # fmt: skip
    return dev


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The requested device (refused in one line when unusable here), or the best available one (CUDA, then MPS,
    then CPU)."""
    if device is not None:
        return _checked_device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class UntrustedCheckpointError(ValueError):
    """A checkpoint that only loads by unpickling, which can run arbitrary code."""


def _load_checkpoint_file(path: Path, trust: bool = False) -> dict:
    """weights_only=True (tensors and plain containers only); full unpickling only when the user trusts it."""
    import pickle
    import zipfile

    if trust:  # the user vouched for the file: any pickle, zip or legacy format
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not zipfile.is_zipfile(path):  # not torch.save's zip format: garbage (or a legacy file: needs trust)
            raise
        raise UntrustedCheckpointError(
            f"{path}: this checkpoint needs unpickling, which can run arbitrary code; if you trust its source, "
            f"pass --trust-checkpoint (trust_checkpoint=True) to load it anyway ({str(exc).splitlines()[0]})"
        ) from None


def generator_state_dict(checkpoint: str | os.PathLike | dict, trust: bool = False) -> dict[str, torch.Tensor]:
    """The generator weights of an official raw state dict or of this project's checkpoint (key "generator").

    Refuses weights that are not finite: a model with NaN in a weight or a BatchNorm buffer writes
    constant audio for every input.
    """
    name = str(checkpoint) if not isinstance(checkpoint, dict) else "<dict>"
    if isinstance(checkpoint, dict):
        obj = checkpoint
    else:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: checkpoint file does not exist")
        try:
            obj = _load_checkpoint_file(path, trust)
        except UntrustedCheckpointError:
            raise
        except Exception as exc:
            raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, dict) and "generator" in obj:
        obj = obj["generator"]
    if not isinstance(obj, dict) or "dense_encoder.conv_1.0.weight" not in {k.removeprefix("module.") for k in obj}:
        raise ValueError(f"{name}: no CMGAN generator state dict found (expected key dense_encoder.conv_1.0.weight)")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{name}: {len(bad)} tensor(s) hold NaN or inf (first: {bad[0]}); this model cannot enhance")
    return state


def load_generator(
    checkpoint: str | os.PathLike | dict, device: str | torch.device | None = None, trust: bool = False
) -> TSCNet:
    """TSCNet in eval mode on `device`, its size inferred from the weights, loaded with strict=True.

    `trust=True` allows a checkpoint that needs unpickling (only for files from a source you trust).
    """
    state = generator_state_dict(checkpoint, trust)
    name = str(checkpoint) if not isinstance(checkpoint, dict) else "<dict>"
    dev = resolve_device(device)  # an unusable device is refused before the model is built
    sizes = {key: state[key].shape[0] if torch.is_tensor(state.get(key)) and state[key].dim() else None
             for key in ("dense_encoder.conv_1.0.weight", "mask_decoder.prelu_out.weight")}  # fmt: skip
    if None in sizes.values():
        key = next(k for k, v in sizes.items() if v is None)
        raise ValueError(f"{name}: not a CMGAN generator this code can load: no tensor {key} (it sets the size)")
    blocks = len({k.split(".")[0] for k in state if re.match(r"TSCB_\d+\.", k)}) or 4  # none: the mismatch names them
    model = TSCNet(num_channel=sizes["dense_encoder.conv_1.0.weight"],
                   num_features=sizes["mask_decoder.prelu_out.weight"], num_tscb=blocks)  # fmt: skip
    problem = state_dict_mismatch(model.state_dict(), state)
    if problem:
        raise ValueError(f"{name}: not a CMGAN generator this code can load: {problem}")
    model.load_state_dict(state, strict=True)
    return model.to(dev).eval()


def state_dict_mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str | None:
    """The first difference between a model's state dict and a checkpoint's (a missing or unexpected key, or a
    tensor of another shape), in words, or None when load_state_dict(strict=True) will take it.
    Why: torch lists every mismatch in one multi-line RuntimeError; the first one names the problem."""
    missing = [k for k in expected if k not in given and not k.endswith("num_batches_tracked")]  # BatchNorm fills it
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return f"missing key {missing[0]}{more}"
    unexpected = [k for k in given if k not in expected]
    if unexpected:
        more = f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""
        return f"unexpected key {unexpected[0]}{more}"
    for key, want in expected.items():
        if key not in given:
            continue
        got = given[key]
        if not torch.is_tensor(got) or got.shape != want.shape:
            shape = tuple(got.shape) if torch.is_tensor(got) else type(got).__name__
            return f"{key} has shape {shape}, the model built from its other weights expects {tuple(want.shape)}"
    return None


def _chunk_counts(padded_len: int, cut_len: int) -> list[int]:
    """Chunk counts to try: the published one (ceil(len / cut_len) raised until it divides 100), then larger
    divisors of the padded length (fallbacks for out-of-memory), each chunk at least n_fft long."""
    if padded_len <= cut_len:
        first = 1
    else:
        first = int(np.ceil(padded_len / cut_len))
        while 100 % first != 0:
            first += 1
    counts = [first]
    counts += [
        k for k in range(first + 1, padded_len // N_FFT + 1) if padded_len % k == 0 and (padded_len // k) % HOP == 0
    ]
    return counts


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError | MemoryError) or "out of memory" in text or "can't allocate" in text


@torch.no_grad()
def enhance_batch(model: torch.nn.Module, audio: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP,
                  compress: float = COMPRESS) -> torch.Tensor:  # fmt: skip
    """(k, samples) of RMS-normalized audio -> the generator's estimates, same length: STFT, power-law compression,
    the model, and back (the one path for enhancement and the audit's estimates)."""
    spec = power_compress(_stft(audio, n_fft, hop), compress).permute(0, 1, 3, 2)  # (k, 2, T, F)
    est_real, est_imag = model(spec)
    est = power_uncompress(est_real.permute(0, 1, 3, 2), est_imag.permute(0, 1, 3, 2), compress).squeeze(1)
    return _istft(est, n_fft, hop, length=audio.shape[-1])


OLA_SECONDS = 4.0  # the longest overlap-add chunk by default: 2x the training crop; cost grows with its square
OLA_OVERLAP = 0.5  # seconds of cross-fade between overlap-add chunks


@torch.no_grad()
def enhance_track(model: torch.nn.Module, noisy: np.ndarray, cut_len: int = SAMPLE_RATE * 16,
                  max_chunk_seconds: float | None = None, budget: int | None = None) -> np.ndarray:  # fmt: skip
    """Enhance a whole 16 kHz track as the published evaluation does where memory allows; runs on the model's
    device.

    Scale by c = sqrt(N / sum(x^2)); pad to a multiple of the hop by repeating the first samples; longer than
    `cut_len`: reshape into k equal chunks (k = ceil(len / cut_len) raised until it divides 100); STFT,
    compress, model, decompress, iSTFT; divide by c; flatten and trim. On out-of-memory, retry with more,
    smaller chunks and say so.

    Memory: the published chunks run as one batch when they fit in `budget` bytes (default: half the free
    memory of the device, `cmgan_lib.scoring.memory`), one after another when only one fits (the same samples), and
    otherwise (a chunk longer than fits, or than `max_chunk_seconds`) the track is enhanced in overlapping
    chunks cross-faded together (`_overlap_add`), so a long recording never asks for more than the machine has.

    One deliberate difference: iSTFT is given the chunk length. The published code omits it, so when
    padded_len / k is not a multiple of the hop (e.g. 40,100 samples in 4 chunks) it returns fewer samples
    than the input and fails its own length assertion; wherever it works, both give the same samples.
    """
    from cmgan_lib.scoring.memory import enhance_bytes, longest_chunk, memory_budget

    noisy = np.asarray(noisy, dtype=np.float32)
    if noisy.ndim != 1 or noisy.size == 0:
        raise ValueError(f"noisy must be a non-empty 1-D array, got shape {noisy.shape}")
    if not np.any(noisy):
        raise ValueError("noisy is all zeros: the published normalization sqrt(N / sum(x^2)) is undefined")
    if noisy.size <= N_FFT // 2:
        raise ValueError(f"too short to enhance: {noisy.size} samples (the STFT needs more than {N_FFT // 2})")
    device = next(model.parameters()).device
    x = torch.from_numpy(noisy).to(device).unsqueeze(0)
    c = rms_normalizer(x)  # (1,)
    x = x * c[:, None]
    length = x.shape[-1]
    padded_len = int(np.ceil(length / HOP)) * HOP
    x = torch.cat([x, x[:, : padded_len - length]], dim=-1)
    counts = _chunk_counts(padded_len, cut_len)
    chunk = padded_len // counts[0]
    if max_chunk_seconds is not None:
        limit = max(N_FFT, int(max_chunk_seconds * SAMPLE_RATE) // HOP * HOP)
        group = counts[0] if chunk <= limit else 0
    else:
        budget = memory_budget(device) if budget is None else budget
        per_chunk = enhance_bytes(model, 1, chunk)
        group = min(counts[0], budget // per_chunk) if per_chunk else counts[0]
        limit = longest_chunk(model, budget, int(OLA_SECONDS * SAMPLE_RATE))
    if group < 1:  # one published chunk does not fit: overlapping chunks of `limit` samples
        est = _overlap_add(model, x[0, :length], limit, budget)
    elif group < counts[0]:  # the published chunks one group at a time: the same samples, less memory
        log.info("enhancing %d samples in %d chunks, %d at a time (memory)", length, counts[0], group)
        est = torch.cat([enhance_batch(model, part) for part in x.reshape(counts[0], -1).split(int(group))])
    else:
        est = _published_batch(model, x, counts, length, device)
    est = est / c
    return est.flatten()[:length].float().cpu().numpy()


def _published_batch(model, x: torch.Tensor, counts: list[int], length: int, device: torch.device) -> torch.Tensor:
    """All published chunks as one batch; on out-of-memory, more and smaller chunks (said in a warning)."""
    for attempt, k in enumerate(counts):
        try:
            return enhance_batch(model, x.reshape(k, -1))
        except RuntimeError as exc:  # torch.OutOfMemoryError is one; other errors are re-raised
            if not _is_oom(exc) or attempt == len(counts) - 1:
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            log.warning(
                "out of memory enhancing %d samples in %d chunk(s) on %s; retrying with %d chunks",
                length,
                k,
                device,
                counts[attempt + 1],
            )
    raise AssertionError("unreachable")


def ola_starts(length: int, chunk: int, overlap: int) -> list[int]:
    """Chunk starts covering [0, length): a step of chunk - overlap, the last chunk ending at `length`."""
    if length <= chunk:
        return [0]
    step = max(HOP, chunk - overlap)
    starts = list(range(0, length - chunk, step))
    return [*starts, length - chunk]


def _overlap_add(model, x: torch.Tensor, chunk: int, budget: int | None) -> torch.Tensor:
    """Enhance normalized audio `x` (samples,) in chunks of `chunk` samples that overlap by OLA_OVERLAP seconds,
    each weighted by a window that rises and falls linearly over its overlaps (never reaching 0), the sum
    divided by the summed weights: every sample is a convex mix of the chunks that saw it."""
    from cmgan_lib.scoring.memory import enhance_bytes

    length = x.shape[-1]
    chunk = min(chunk, length)
    overlap = min(int(OLA_OVERLAP * SAMPLE_RATE) // HOP * HOP, chunk // 2)
    starts = ola_starts(length, chunk, overlap)
    ramp = torch.linspace(0.0, 1.0, overlap + 2, device=x.device)[1:-1] if overlap else None
    out = torch.zeros(length, device=x.device)
    weight = torch.zeros(length, device=x.device)
    per_chunk = enhance_bytes(model, 1, chunk)
    group = max(1, (budget // per_chunk) if budget and per_chunk else 1)
    log.info("enhancing %d samples in %d overlapping chunks of %d samples", length, len(starts), chunk)
    for first in range(0, len(starts), group):
        batch = starts[first : first + group]
        est = enhance_batch(model, torch.stack([x[s : s + chunk] for s in batch]))
        for s, e in zip(batch, est, strict=True):
            w = torch.ones(chunk, device=x.device)
            if ramp is not None and s > 0:
                w[:overlap] = ramp
            if ramp is not None and s + chunk < length:
                w[-overlap:] = torch.minimum(w[-overlap:], ramp.flip(0))
            out[s : s + chunk] += w * e
            weight[s : s + chunk] += w
    return out / weight


def memory_note(exc: BaseException) -> str:
    """One line for a failed file; out-of-memory says what to do about it."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if _is_oom(exc):
        return f"out of memory ({text[:160]}); try a smaller --max-chunk-seconds"
    return text


def output_problem(est: np.ndarray) -> str | None:
    """Why an enhanced track must not be written as a success (non-finite or constant samples), or None."""
    if not np.all(np.isfinite(est)):
        return f"the model's output has {int((~np.isfinite(est)).sum())} NaN/inf sample(s); nothing written"
    if est.size and np.all(est == est[0]):
        return f"the model's output is constant ({float(est[0]):.6g}); nothing written"
    return None


def refuse_overwriting_inputs(files: list[Path], output_dir: Path) -> None:
    """Raise when writing `output_dir/<name>` would replace one of the input files."""
    inputs = {f.resolve() for f in files}
    clash = [f for f in files if (output_dir / f.name).resolve() in inputs]
    if clash:
        raise ValueError(
            f"{output_dir}: the output folder would overwrite input file(s) (e.g. {clash[0]}); "
            "choose an output folder other than the input's"
        )


@dataclass
class EnhanceResult:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def list_wavs(path: str | os.PathLike) -> list[Path]:
    """A single file, or the *.wav files of a folder in sorted order."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() == ".wav")
    return [path]


def enhance_files(
    checkpoint: str | os.PathLike,
    inputs: str | os.PathLike,
    output_dir: str | os.PathLike,
    device: str | None = None,
    cut_len: int = SAMPLE_RATE * 16,
    trust_checkpoint: bool = False,
    max_chunk_seconds: float | None = None,
    resample: bool = False,
) -> EnhanceResult:
    """Enhance a WAV or a folder of WAVs into `output_dir`; bad files get one line each and are skipped (also one
    that runs out of memory: the others are still enhanced). `resample`: other sample rates are converted to
    16 kHz on load (the model's rate; the output is 16 kHz) instead of refused."""
    files = list_wavs(inputs)
    out = Path(output_dir)
    refuse_overwriting_inputs(files, out)
    model = load_generator(checkpoint, device, trust=trust_checkpoint)
    result = EnhanceResult()
    if not files:
        print(f"error: {inputs}: no .wav files in this folder", file=sys.stderr)
        result.failed.append((Path(inputs), "no .wav files"))
    for f in tqdm(files, desc="enhance", unit="file", disable=len(files) < 2):
        try:
            noisy = read_wav(f, allow_silent=False, resample=resample)
            est = enhance_track(model, noisy, cut_len=cut_len, max_chunk_seconds=max_chunk_seconds)
            problem = output_problem(est)
            if problem:
                raise ValueError(problem)
        except (AudioError, ValueError, RuntimeError, MemoryError) as exc:
            problem = exc.problem if isinstance(exc, AudioError) else memory_note(exc)
            tqdm.write(f"error: {f}: {problem}", file=sys.stderr)
            result.failed.append((f, problem))
            continue
        target = out / f.name
        write_wav(target, est)
        result.written.append(target)
    print(
        f"enhanced {len(result.written)} of {len(result.written) + len(result.failed)} file(s) into {out}; "
        f"{len(result.failed)} failed"
    )
    return result
