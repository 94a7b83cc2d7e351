"""Training on several processes with PyTorch's launcher: ``torchrun ... -m acvm train NAME``.

    torchrun --standalone --nproc_per_node 2 -m acvm train siamfc --device cpu

starts two processes; each runs the same ``acvm train`` with ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` set. :func:`acvm.training.fit` then trains a
:class:`~torch.nn.parallel.DistributedDataParallel` copy of the model in every process (backend
``gloo`` on the CPU, ``nccl`` on CUDA, one GPU per process, ``LOCAL_RANK``'s): every process draws
*different* training pairs (the rank is part of the data stream's seed), DDP averages the gradients,
so all copies take the same optimiser step, and only rank 0 shows the progress bar and writes the
checkpoint and the weights file.

**Batch size.** ``--batch-size B`` (and a trainer's ``batch_size``) is per process: one step
averages the gradients of ``B × WORLD_SIZE`` samples. The recipe's learning rate is not rescaled;
``meta["world_size"]`` records how many processes trained the weights.

Without the launcher (``WORLD_SIZE`` unset or 1) every function here is a no-op and single-process
training is exactly what it was (the shipped weights stay reproducible).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["world", "local_rank", "init", "is_distributed", "is_main", "barrier", "wrap",
           "has_unused_parameters", "mean", "cleanup"]


def world() -> tuple[int, int]:
    """``(rank, world_size)`` from the environment torchrun sets (``RANK``, ``WORLD_SIZE``); ``(0, 1)`` otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return 0, 1
    return int(os.environ.get("RANK", "0") or 0), size


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK``, 0 without the launcher): its GPU."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def init(device: str | torch.device | None = None) -> None:
    """Join the process group when ``WORLD_SIZE > 1`` (once; later calls do nothing).

    ``gloo`` for the CPU, ``nccl`` for CUDA (after ``torch.cuda.set_device(LOCAL_RANK)``, so that
    ``"cuda"`` means this process's GPU). The rendezvous comes from ``MASTER_ADDR`` and
    ``MASTER_PORT`` (torchrun sets them). A no-op in a single process.
    """
    _, size = world()
    if size <= 1 or not dist.is_available() or dist.is_initialized():
        return
    dev = _device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(local_rank())
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, init_method="env://")


def is_distributed() -> bool:
    """Whether this process trains together with others (``WORLD_SIZE > 1`` and :func:`init` done)."""
    return world()[1] > 1 and dist.is_available() and dist.is_initialized()


def is_main() -> bool:
    """Whether this is rank 0 (always true in a single process): the one that prints and writes files."""
    return world()[0] == 0


def barrier() -> None:
    """Wait until every process gets here (a no-op in a single process)."""
    if not is_distributed():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


class _DDP(torch.nn.parallel.DistributedDataParallel):
    """DDP that also answers for the wrapped model's attributes.

    The loss functions take ``model`` and call ``model(z, x)`` (DDP's forward: that is what
    synchronises the gradients) and then read attributes of the network, e.g. ``model.settings``
    or ``model.head.xs``; plain DDP only has ``.module``. Attributes DDP itself lacks are looked up
    on ``.module``, so a loss sees the model it was written for. Only the forward may compute the
    loss: a loss that calls another method of the model (``model.features(x)``) to make its output
    would bypass DDP's gradient synchronisation (none of the course's losses does).
    """

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if "module" not in modules:
                raise
            return getattr(modules["module"], name)


def wrap(model: torch.nn.Module, device: str | torch.device | None = None,
         find_unused_parameters: bool = False) -> torch.nn.Module:
    """``model`` as a :class:`~torch.nn.parallel.DistributedDataParallel` (that still answers for the
    model's attributes, see :class:`_DDP`) when distributed; ``model`` itself otherwise.

    DDP broadcasts rank 0's parameters and buffers to the others when it is made and averages the
    gradients of the parameters that require grad in every ``backward`` (frozen ones are left
    alone). ``find_unused_parameters`` is needed only when some of those get no gradient (MDNet's
    unused ``conv4``); see :func:`has_unused_parameters`. ``model`` must already be on ``device``.
    """
    if world()[1] <= 1:
        return model
    if not is_distributed():
        raise RuntimeError("WORLD_SIZE > 1 but no process group: call acvm.distributed.init(device) first")
    dev = _device(device)
    ids = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else None
    return _DDP(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


def has_unused_parameters(model: torch.nn.Module, loss_fn, batch) -> bool:
    """Whether some parameter that requires grad gets no gradient from ``loss_fn(model, batch)``.

    A dry run: the gradients are computed with ``torch.autograd.grad`` (nothing is written to
    ``.grad``), the random state is restored and so are the buffers (batch-norm statistics).
    The answer is agreed by all processes (any of them finding one), since every process must make
    DDP with the same ``find_unused_parameters``.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    buffers = [b.detach().clone() for b in model.buffers()]
    dev = next(iter(params)).device if params else torch.device("cpu")
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        loss = loss_fn(model, batch)
        grads = torch.autograd.grad(loss, params, allow_unused=True) if params else []
    with torch.no_grad():
        for b, saved in zip(model.buffers(), buffers):
            b.copy_(saved)
    flag = torch.tensor([float(any(g is None for g in grads))], device=dev)
    if is_distributed():
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def mean(value: torch.Tensor) -> float:
    """The mean of a scalar over all processes (the value itself in a single process)."""
    if not is_distributed():
        return float(value)
    t = value.detach().reshape(1).to(torch.float64, copy=True)
    dist.all_reduce(t)
    return float(t) / dist.get_world_size()


def cleanup() -> None:
    """Leave the process group (when one was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
