"""What each kind of device can do, and the choices charnn makes for it: which device (auto: a
CUDA GPU, else Apple's MPS, else the CPU), how many CPU threads, autocast, fused and foreach
kernels, pinned memory, float64 on the device, gradient clipping, and the random-number states
a checkpoint saves. The process group of a multi-process run is charnn.distributed's alone.
"""

from __future__ import annotations

import math
import os

import torch

from charnn.errors import CharnnError


def pick_device(name: str) -> torch.device:
    """auto: a CUDA GPU, else Apple's MPS, else the CPU; a named device must be there."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CharnnError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CharnnError("--device mps was asked for but Apple's MPS is not available; use --device cpu or auto")
    return torch.device(name)


def set_threads(n: int) -> int:
    """Use n CPU threads (0: torch's choice), at most as many as the machine has cores.

    More threads than cores only slows torch down, and an absurd number (100,000) makes its
    thread pool crash the process; such a request is capped with a warning.
    """
    if not n:
        return torch.get_num_threads()
    cores = os.cpu_count() or 1
    if n > cores:
        from charnn.log import warn

        warn(f"--threads {n} is more than this machine's {cores} cores; using {cores}")
        n = cores
    torch.set_num_threads(n)
    return n


# ---- what each kind of device can do -------------------------------------------------------------


def torch_at_least(major: int, minor: int) -> bool:
    return tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (major, minor)


def foreach_ok(device_type: str) -> bool:
    """Multi-tensor (foreach) kernels for the gradient norm: CPU and CUDA have them; MPS does not
    (clip_grad_norm_(foreach=True) raises there), so it takes the per-tensor loop."""
    return device_type in ("cpu", "cuda")


def clip_gradients(params: list, grad_clip: float, grad_clamp: float, device_type: str) -> torch.Tensor:
    """char-rnn's element-wise clamp (when asked), then the global norm clip; returns the norm
    before clipping, which is also the divergence watch's. With no clipping asked, max_norm inf
    scales by 1."""
    if grad_clamp:
        for p in params:
            p.grad.clamp_(-grad_clamp, grad_clamp)
    return torch.nn.utils.clip_grad_norm_(params, grad_clip or math.inf, foreach=foreach_ok(device_type))


def fused_adamw_ok(device_type: str) -> bool:
    """Fused AdamW: CPU and CUDA since torch 2.4, MPS since 2.5."""
    if device_type in ("cpu", "cuda"):
        return torch_at_least(2, 4)
    return device_type == "mps" and torch_at_least(2, 5)


def pin_ok(device_type: str) -> bool:
    """Page-locked host memory for training batches, so their copy overlaps the step: CUDA only
    (pinning needs an accelerator's driver; MPS shares memory with the CPU, and the CPU copies
    nothing)."""
    return device_type == "cuda"


def eval_streams(device_type: str) -> int:
    """Parallel streams when scoring a text. A CPU is busy at 64 (more adds warm-up reads and no
    speed); a GPU is mostly idle at 64 batch rows of an LSTM step and keeps getting faster to a
    few hundred. Scores do not depend on it beyond float rounding (each piece reads a warm-up
    context first)."""
    return 64 if device_type == "cpu" else 256


def wide_float(device_type: str) -> torch.dtype:
    """The dtype of sums and read-backs kept on the device (evaluation's total, the divergence
    watch): float64, except on Apple MPS, which has no float64 (asking for it raises)."""
    return torch.float32 if device_type == "mps" else torch.float64


def autocast(device_type: str, precision: str):
    """bf16 autocast for --precision bf16, and no autocast context at all for fp32 (building a
    disabled one raises on MPS with torch < 2.5)."""
    import contextlib

    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_precision(precision: str, device_type: str) -> str:
    """--precision auto: bf16 on a CPU whose oneDNN has native bf16 (AVX512-BF16, AMX; most recent
    server and laptop CPUs), where the recurrence measured 1.3-1.45x faster; fp32 elsewhere (a CPU
    without bf16 units emulates it slowly; a GPU's bf16 made charnn's LSTM no faster)."""
    if precision != "auto":
        return precision
    if device_type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "bf16"
    return "fp32"


def rng_states(device_type: str) -> dict[str, torch.Tensor]:
    """This process's random-number states: the CPU's and, only when training there, its GPU's
    (asking CUDA on a CPU run would initialise it for nothing)."""
    out = {"cpu": torch.get_rng_state()}
    if device_type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state()
    elif device_type == "mps":
        out["mps"] = torch.mps.get_rng_state()
    return out


def set_rng_states(states: dict[str, torch.Tensor], device_type: str) -> None:
    torch.set_rng_state(states["cpu"])
    if device_type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"])
    elif device_type == "mps" and "mps" in states:
        torch.mps.set_rng_state(states["mps"])
