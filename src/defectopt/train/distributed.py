"""Process group set-up for `torchrun --nproc-per-node N -m defectopt ...`, and device choice.

One process per rank runs the same command. Rank 0 alone touches the DB and writes files; the
other ranks get what they need from rank 0 (`from_main`), so they never open a write
transaction. Without torchrun (no WORLD_SIZE) everything here is a no-op single process.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from defectopt.errors import DefectoptError

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` = CUDA when present, else CPU; `cuda` without a GPU is a user error."""
    requested = (requested or "auto").lower()
    if requested not in ("auto", "cpu", "cuda"):
        raise DefectoptError(f"unknown --device '{requested}'; use auto, cpu or cuda")
    if requested == "cuda" and not torch.cuda.is_available():
        raise DefectoptError("--device cuda requested but no CUDA device is available (use --device cpu or auto)")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))


_CONTEXT: DistContext | None = None


def context(device: str = "auto") -> DistContext:
    """The process's rank/world/device; initialises the process group once under torchrun."""
    global _CONTEXT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if _CONTEXT is not None and (_CONTEXT.world_size == world):
        wanted = resolve_device(device, _CONTEXT.local_rank)
        if wanted.type == _CONTEXT.device.type:
            return _CONTEXT
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if dev.type == "cuda" else "gloo"
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            dist.init_process_group(backend=backend)
            atexit.register(_shutdown)
    _CONTEXT = DistContext(rank, world, local_rank, dev)
    return _CONTEXT


def _shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # at interpreter exit the peer may already be gone
            pass


def current_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return current_rank() == 0


def from_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only and hand its result (or its user error) to every rank.

    A DefectoptError on rank 0 is re-raised on every rank with the same message, so no rank
    is left waiting in a collective. Values travel with torch's object broadcast between our
    own processes (never from files).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return fn()
    payload: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            payload[0] = ("ok", fn())
        except DefectoptError as exc:
            payload[0] = ("error", str(exc))
        except BaseException as exc:
            payload[0] = ("error", f"rank 0 failed: {type(exc).__name__}: {exc}")
            dist.broadcast_object_list(payload, src=0)
            raise
    dist.broadcast_object_list(payload, src=0)
    status, value = payload[0]
    if status == "error":
        raise DefectoptError(value)
    return value


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
