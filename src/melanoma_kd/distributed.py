"""What the training loop needs to run as one of N DDP processes, and nothing more.

Outside a process group every helper here is the identity of a single process (rank 0 of 1), so
the one-process loop runs exactly the code it always ran. Under ``torchrun`` (see ``launch.py``):

* **Sharding** — every rank takes the epoch's global order (the order one process would draw),
  pads it with its own first entries to a multiple of the world size and keeps every N-th entry
  from its rank on, as ``DistributedSampler`` does. The ranks' j-th batches of size B together
  are the one-process run's j-th batch of size N·B. Items keep their own train index, so the
  augmented view (a function of seed, epoch, index) and the cached teacher output (looked up by
  epoch and index) are the ones a single process would use.
* **Gradients** — ``DistributedDataParallel`` averages them; parameters stay identical.
  BatchNorm normalises each rank's own batch (no SyncBatchNorm), so only for models without it
  is N processes × batch B exactly one process × batch N·B.
* **Validation** — BatchNorm buffers are copied from rank 0 (what DDP does before its next
  forward anyway), every rank scores the full validation set, and rank 0's metrics are
  broadcast, so the best-epoch choice, the LR schedule and early stopping agree on every rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of this process; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(order: list[int], rank: int, world: int) -> list[int]:
    """Rank ``rank``'s share of ``order``: padded to a multiple of ``world``, every world-th."""
    pad = -len(order) % world
    padded = order + (order * world)[:pad]  # repeated: the order may be shorter than the pad
    return padded[rank::world]


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` under DistributedDataParallel in a process group, else ``module`` itself.

    DDP starts every rank from rank 0's weights; each rank then gets its own RNG stream, so
    ranks do not share dropout masks.
    """
    rank, world = rank_and_world()
    if world == 1:
        return module
    ids = [torch.cuda.current_device()] if device.type == "cuda" else None
    wrapped = DistributedDataParallel(module, device_ids=ids)
    torch.manual_seed(torch.initial_seed() + rank)
    return wrapped


def sum_across(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks."""
    if rank_and_world()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def from_rank0(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Rank 0's ``values`` (same keys on every rank) on every rank."""
    if rank_and_world()[1] == 1:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return dict(zip(values, t.tolist(), strict=True))


def sync_buffers(module: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    if rank_and_world()[1] == 1:
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=0)
