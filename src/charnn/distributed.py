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
        if self.active and device.type == "mps":
            raise CharnnError(
                "torchrun cannot share Apple's MPS between processes; train in one process "
                "(plain charnn train) or pass --device cpu"
            )
        if self.active and device.type == "cuda":
            if self.local_rank >= torch.cuda.device_count():
                gpus = torch.cuda.device_count()
                raise CharnnError(
                    f"{int(os.environ.get('LOCAL_WORLD_SIZE', self.local_rank + 1))} processes on this "
                    f"machine but only {gpus} GPU{'s' if gpus != 1 else ''}; use torchrun "
                    f"--nproc_per_node {gpus}"
                )
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
            raise CharnnError(
                f"--batch-size {batch_size} must be divisible by the {self.world} processes; use a multiple of {self.world}"
            )
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
