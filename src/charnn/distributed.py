"""Many processes, one run: PyTorch's DistributedDataParallel as launched by ``torchrun``.

``torchrun --nproc_per_node N -m charnn train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; each
process then trains on its share of the parallel streams (rank r takes streams
[r*B/N, (r+1)*B/N) of the global batch B) and DDP averages the gradients, so N processes compute
what one process with batch B computes. Decisions that must agree (stop now? the validation loss)
are taken on rank 0 and broadcast; only rank 0 writes files. Without torchrun every method here
is a no-op for a single process.
"""

from __future__ import annotations

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
        if self.active and device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

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

    def close(self) -> None:
        if self._started and dist.is_initialized():
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
