"""Many processes, one run: PyTorch's DistributedDataParallel as launched by ``torchrun``.

``torchrun --nproc_per_node N -m charnn train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; each
process then trains on its share of the parallel streams (rank r takes streams
[r*B/N, (r+1)*B/N) of the global batch B) and DDP averages the gradients, so N processes compute
what one process with batch B computes. Decisions that must agree (stop now? the validation loss)
are taken on rank 0 and broadcast; only rank 0 writes files. Without torchrun every method here
is a no-op for a single process.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta

import torch
import torch.distributed as dist

from charnn.errors import CharnnError


class Dist:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.active = self.world > 1
        self._started = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def start(self, device: torch.device) -> None:
        if not self.active or dist.is_initialized():
            self._started = False
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
        self._started = True

    def device(self, device: torch.device) -> torch.device:
        """Each process takes its own GPU; on the CPU they share it."""
        if self.active and device.type == "mps":
            raise CharnnError("torchrun cannot share Apple's MPS between processes; train in one process "
                              "(plain charnn train) or pass --device cpu")
        if self.active and device.type == "cuda":
            if self.local_rank >= torch.cuda.device_count():
                gpus = torch.cuda.device_count()
                raise CharnnError(f"{int(os.environ.get('LOCAL_WORLD_SIZE', self.local_rank + 1))} processes on this "
                                  f"machine but only {gpus} GPU{'s' if gpus != 1 else ''}; use torchrun "
                                  f"--nproc_per_node {gpus}")
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def gather_objects(self, obj) -> list:
        """Every rank's obj, in rank order (on every rank)."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def shard(self, batch_size: int) -> tuple[int, int]:
        """(first stream, number of streams) of this process in a global batch."""
        if batch_size % self.world:
            raise CharnnError(f"--batch-size {batch_size} must be divisible by the {self.world} processes; "
                              f"use a multiple of {self.world}")
        per = batch_size // self.world
        return self.rank * per, per

    def broadcast(self, value: float, device) -> float:
        """Rank 0's value, everywhere."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.broadcast(t, 0)
        return float(t.item())

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return t
        t = t.detach().clone()
        dist.all_reduce(t)
        return t / self.world

    def gather_streams(self, t: torch.Tensor) -> torch.Tensor:
        """(L, b, H) per process -> (L, world * b, H) in rank order (the global batch)."""
        if not self.active:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts, dim=1)

    def wrap(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        if not self.active:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def close(self, finished: bool = False) -> None:
        """finished: every rank got to the end of the run. Then they all arrive before any tears the
        group down (a gloo rank that destroyed its group while rank 0 was still finishing was seen
        to abort, "terminate called without an active exception", on a loaded machine). After a
        failure there is no barrier: the other ranks may be inside another collective."""
        if self._started and dist.is_initialized():
            if finished:
                try:
                    dist.barrier()
                except RuntimeError:  # another rank failed after all
                    pass
            dist.destroy_process_group()
            self._started = False


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
