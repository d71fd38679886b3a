"""Training in several processes started by ``torchrun``: who is who, and the collectives used.

``torchrun --standalone --nproc-per-node N -m lnlclean audit …`` starts N copies of the
command. Each reads the inputs, trains its share of every mini-batch (the networks are
wrapped in DistributedDataParallel, see :mod:`lnlclean.engine`) and keeps the whole
per-sample state; only rank 0 writes files and shows progress. Collectives run on ``nccl``
for CUDA tensors and ``gloo`` for CPU tensors.

Outside torchrun (no ``WORLD_SIZE`` above 1 in the environment) :func:`current` is a world of
one process and every collective returns its input, so single-process code pays nothing.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# Ranks wait for rank 0 while it decodes the image cache, which can take an hour on millions of images.
COLLECTIVE_TIMEOUT = timedelta(hours=3)


@dataclass(frozen=True)
class World:
    """The processes of one run.

    Attributes:
        rank: this process's number, 0 … size − 1 (``RANK``).
        size: the number of processes (``WORLD_SIZE``).
        local_rank: this process's number on its machine (``LOCAL_RANK``); it picks the GPU.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Returns True for rank 0, the process that writes outputs and progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Returns True when the run has more than one process."""
        return self.size > 1

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Returns the element-wise sum of `tensor` over all processes (a new tensor; `tensor` itself when alone)."""
        if not self.distributed:
            return tensor
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    def row_mean(self, rows: torch.Tensor) -> torch.Tensor:
        """Returns the mean of `rows` (B×K) over the rows of every process: the mean of the whole mini-batch (K)."""
        if not self.distributed:
            return rows.mean(dim=0)
        total = self.sum(torch.cat([rows.sum(dim=0), rows.new_tensor([len(rows)])]))
        return total[:-1] / total[-1]

    def max_ints(self, *values: int) -> list[int]:
        """Returns the element-wise maximum of `values` over all processes, so every process takes the same decision."""
        if not self.distributed:
            return list(values)
        flags = torch.tensor(values, dtype=torch.int64)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return flags.tolist()

    def broadcast_from_main(self, tensors: Iterable[torch.Tensor]) -> None:
        """Overwrites each of `tensors` with rank 0's values (e.g. batch-norm statistics). Returns None."""
        if self.distributed:
            for tensor in tensors:
                dist.broadcast(tensor, src=0)

    def barrier(self) -> None:
        """Waits until every process gets here. Returns None."""
        if self.distributed:
            dist.all_reduce(torch.zeros(1))  # on the CPU (gloo) group, whatever the training device

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Runs the body on rank 0 first and on the other ranks after it, e.g. to build a shared cache once."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def gather_cpu(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Returns `tensor` (a CPU tensor of the same shape on every process) from every process, in rank order."""
        if not self.distributed:
            return [tensor]
        gathered = [torch.empty_like(tensor) for _ in range(self.size)]
        dist.all_gather(gathered, tensor.contiguous())
        return gathered

    def gather_rows(self, index: torch.Tensor, rows: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (index, rows) of every process, one row per sample index.

        `index` (int64, b) and `rows` (b×R uint8) are this process's; `capacity` ≥ b is the
        largest b of any process (collectives need equal sizes, so shorter ones are padded).
        When two processes send the same index, the row of the higher rank is kept, so every
        process resolves it the same way.
        """
        if not self.distributed:
            return index, rows
        padding = capacity - len(index)
        sent = torch.cat([index.contiguous().view(torch.uint8).view(-1, 8), rows], dim=1)
        sent = torch.nn.functional.pad(sent, (0, 0, 0, padding), value=255)  # index −1 marks padding
        received = [torch.empty_like(sent) for _ in range(self.size)]
        dist.all_gather(received, sent)
        everything = torch.cat(received)
        all_index = everything[:, :8].contiguous().view(torch.int64).view(-1)
        valid = all_index >= 0
        return keep_last(all_index[valid], everything[valid, 8:])


def keep_last(index: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (index, rows) with one entry per distinct index: its last occurrence in `index`."""
    unique, inverse = torch.unique(index, return_inverse=True)
    if len(unique) == len(index):
        return index, rows
    positions = torch.arange(len(index), device=index.device)
    last = torch.zeros(len(unique), dtype=torch.int64, device=index.device).scatter_reduce(
        0, inverse, positions, "amax"
    )
    return index[last], rows[last]


_CURRENT: World | None = None


def current() -> World:
    """Returns this process's World, joining torchrun's process group on first use when ``WORLD_SIZE`` > 1."""
    global _CURRENT
    if _CURRENT is None:
        _CURRENT = _join(int(os.environ.get("WORLD_SIZE", "1")))
    return _CURRENT


def _join(size: int) -> World:
    if size <= 1:
        return World()
    world = World(rank=int(os.environ["RANK"]), size=size, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and dist.is_nccl_available()
        if use_cuda and world.local_rank < torch.cuda.device_count():
            torch.cuda.set_device(world.local_rank)
        backend = "cpu:gloo,cuda:nccl" if use_cuda else "gloo"
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
        atexit.register(_leave)
    return world


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
