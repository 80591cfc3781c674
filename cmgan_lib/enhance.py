"""Full-track enhancement exactly as the published CMGAN evaluation does it, and the `cmgan enhance` command."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cmgan_lib import SAMPLE_RATE
from cmgan_lib.audio import AudioError, read_wav, write_wav
from cmgan_lib.dsp import COMPRESS, HOP, N_FFT, power_compress, power_uncompress, rms_normalizer
from cmgan_lib.dsp import istft as _istft
from cmgan_lib.dsp import stft as _stft
from cmgan_lib.models import TSCNet

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The requested device, or the best available one (CUDA, then MPS, then CPU)."""
    if device is not None:
        return torch.device(device)
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
    num_channel = state["dense_encoder.conv_1.0.weight"].shape[0]
    num_features = state["mask_decoder.prelu_out.weight"].shape[0]
    model = TSCNet(num_channel=num_channel, num_features=num_features)
    model.load_state_dict(state, strict=True)
    return model.to(resolve_device(device)).eval()


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
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


@torch.no_grad()
def enhance_batch(model: torch.nn.Module, audio: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP,
                  compress: float = COMPRESS) -> torch.Tensor:  # fmt: skip
    """(k, samples) of RMS-normalized audio -> the generator's estimates, same length: STFT, power-law compression,
    the model, and back (the one path for enhancement and the audit's estimates)."""
    spec = power_compress(_stft(audio, n_fft, hop), compress).permute(0, 1, 3, 2)  # (k, 2, T, F)
    est_real, est_imag = model(spec)
    est = power_uncompress(est_real.permute(0, 1, 3, 2), est_imag.permute(0, 1, 3, 2), compress).squeeze(1)
    return _istft(est, n_fft, hop, length=audio.shape[-1])


@torch.no_grad()
def enhance_track(model: torch.nn.Module, noisy: np.ndarray, cut_len: int = SAMPLE_RATE * 16) -> np.ndarray:
    """Enhance a whole 16 kHz track as the published evaluation does; runs on the model's device.

    Scale by c = sqrt(N / sum(x^2)); pad to a multiple of the hop by repeating the first samples; longer than
    `cut_len`: reshape into k equal chunks (k = ceil(len / cut_len) raised until it divides 100); STFT,
    compress, model, decompress, iSTFT; divide by c; flatten and trim. On out-of-memory, retry with more,
    smaller chunks and say so.

    One deliberate difference: iSTFT is given the chunk length. The published code omits it, so when
    padded_len / k is not a multiple of the hop (e.g. 40,100 samples in 4 chunks) it returns fewer samples
    than the input and fails its own length assertion; wherever it works, both give the same samples.
    """
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
    for attempt, k in enumerate(counts):
        try:
            est = enhance_batch(model, x.reshape(k, -1))
            break
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
    est = est / c
    return est.flatten()[:length].float().cpu().numpy()


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
) -> EnhanceResult:
    """Enhance a WAV or a folder of WAVs into `output_dir`; bad files get one line each and are skipped."""
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
            noisy = read_wav(f, allow_silent=False)
            est = enhance_track(model, noisy, cut_len=cut_len)
            problem = output_problem(est)
            if problem:
                raise ValueError(problem)
        except (AudioError, ValueError) as exc:
            problem = exc.problem if isinstance(exc, AudioError) else str(exc)
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
