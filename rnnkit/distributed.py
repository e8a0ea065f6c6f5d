"""Data-parallel training on :class:`rnnkit.training.Trainer` with ``torch.distributed``, launched by torchrun.

Every process (rank r of R) holds a full copy of the model. At each step every rank draws the *same* batch
(the trainer seeds each epoch's order from (seed, epoch), the same on every rank), keeps its own shard of the
rows (:func:`shard_batch`: rank r takes the r-th of R contiguous slices), computes the loss and gradients on
it, and the gradients are combined across ranks before clipping and the optimiser step:

    g = sum_r n_r g_r / sum_r n_r

where g_r is the gradient of rank r's mean loss over its n_r items (tokens, sequences). This is the gradient
of the mean loss over the whole global batch, so R processes train the same weights as one process with the
same global batch (up to float summation order); with equal shards it is DistributedDataParallel's average.

Why not wrap the model in ``torch.nn.parallel.DistributedDataParallel``: DDP synchronises gradients only for
computations that go through its ``forward``, but the task protocol lets a task call any model method
(``model.step``, ``model.loss``, submodules), and a wrapped model would change the checkpoint's parameter
names (``module.`` prefix). The all-reduce here (one flat bucket per step, after ``backward``) is DDP's
reduction done at the one point every task shares, and checkpoints stay interchangeable with 1-process runs.

Everything else is the ordinary trainer: rank 0 writes ``config.json``, ``metrics.jsonl`` and the
checkpoints in ``run_dir``; the other ranks run in a scratch directory that is removed at the end (their
files would be identical copies). Evaluation runs on every rank (the models are identical, so early-stopping
and plateau decisions agree without communication); the logged training loss is rank 0's shard's loss.
Decisions that could differ between ranks are agreed on collectively: a non-finite loss on any rank skips the
step on all ranks, and the time budget stops all ranks when one runs out. ``resume`` reads rank 0's last
checkpoint on every rank.

In a worker script (run by torchrun, which sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)::

    from rnnkit.distributed import init_distributed, make_trainer
    init_distributed()                                    # gloo on CPU, nccl on GPUs
    task = build_task(...)                                # the same task, built the same way, on every rank
    make_trainer(task, "runs/lm", epochs=5).train()       # DistributedTrainer when WORLD_SIZE > 1

One machine, 4 processes (``rnnkit train --nproc 4`` runs this)::

    torchrun --standalone --nproc-per-node 4 -m rnnkit.cli train lm --data tiny-shakespeare --out runs/lm

Several machines, with torchrun's rendezvous (run the same command on every node; ``--nnodes`` nodes of
``--nproc-per-node`` processes; HOST:PORT is one node reachable by all, ``--rdzv-id`` names the job)::

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 --rdzv-id lm1 \\
        -m rnnkit.cli train lm --data tiny-shakespeare --out /shared/runs/lm

The global batch is the task's batch size; each process takes batch_size / world_size rows, so a run can
move between 1 and R processes without changing what it learns. ``run_dir`` must be on a file system rank 0
can write (and, to resume, that every node can read). On GPUs set ``LOCAL_RANK``'s device before building the
model (``init_distributed`` does ``torch.cuda.set_device``); the task must put the model and its batches on
``torch.cuda.current_device()``.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from rnnkit.checks import check_size
from rnnkit.training import Trainer, TrainingConfig, TrainResult

__all__ = [
    "init_distributed",
    "is_distributed",
    "rank_and_world_size",
    "shard_batch",
    "DistributedTask",
    "DistributedTrainer",
    "make_trainer",
    "launch_command",
]


def is_distributed() -> bool:
    """Whether this process is one of several (a process group is up, or torchrun set WORLD_SIZE > 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(backend: str | None = None) -> tuple[int, int]:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR, ...).

    ``backend``: "gloo" (CPU) or "nccl" (GPUs); default nccl if CUDA is available, else gloo. Returns
    (rank, world size). Calling it again in an initialised process is a no-op.
    """
    if dist.is_initialized():
        return rank_and_world_size()
    missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ValueError(f"init_distributed expects torchrun's environment variables; {missing} are not set "
                         "(launch with torchrun, or `rnnkit train --nproc N`)")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return rank_and_world_size()


def shard_batch(batch: Any, rank: int, world_size: int) -> Any:
    """Rank ``rank``'s share of a batch: the rank-th of ``world_size`` contiguous slices of its rows.

    A batch is a tensor (rows along dim 0), a list of row indices or items, or a tuple / list / dict of those,
    all with the same number of rows (sliced alike); other values (ints, strings, None) are kept whole.
    Slices differ in size by at most one row; every rank needs at least one row.
    """
    rows = _count_rows(batch)
    if rows is None:
        raise ValueError(f"cannot shard a batch of type {type(batch).__name__}: expected a tensor, a list of rows, "
                         "or a tuple/list/dict of them (give DistributedTask a shard= function for others)")
    if rows < world_size:
        raise ValueError(f"a batch of {rows} rows cannot be split among {world_size} processes; expected at "
                         f"least one row per process (batch_size >= {world_size})")
    start, stop = rank * rows // world_size, (rank + 1) * rows // world_size
    return _slice_rows(batch, start, stop, rows)


def _count_rows(batch: Any) -> int | None:
    if isinstance(batch, Tensor):
        return batch.shape[0] if batch.dim() > 0 else None
    if isinstance(batch, Mapping):
        counts = {_count_rows(value) for value in batch.values()} - {None}
    elif isinstance(batch, (tuple, list)):
        if all(not isinstance(item, (Tensor, tuple, list, Mapping)) for item in batch):
            return len(batch)  # a list of row indices or items
        counts = {_count_rows(item) for item in batch} - {None}
    else:
        return None
    if len(counts) != 1:
        return None  # nothing to slice, or parts that disagree on the number of rows
    return counts.pop()


def _slice_rows(batch: Any, start: int, stop: int, rows: int) -> Any:
    if isinstance(batch, Tensor):
        return batch[start:stop] if batch.dim() > 0 and batch.shape[0] == rows else batch
    if isinstance(batch, Mapping):
        return type(batch)({key: _slice_rows(value, start, stop, rows) for key, value in batch.items()})
    if isinstance(batch, (tuple, list)):
        if all(not isinstance(item, (Tensor, tuple, list, Mapping)) for item in batch):
            return batch[start:stop] if len(batch) == rows else batch
        parts = [_slice_rows(item, start, stop, rows) for item in batch]
        return type(batch)(*parts) if hasattr(batch, "_fields") else type(batch)(parts)  # namedtuples too
    return batch


class DistributedTask:
    """A :class:`~rnnkit.training.TrainTask` seen by one rank: its shard of each batch, gradients combined.

    Everything the task has (``model``, ``evaluate``, ``begin_step``, ``primary_metric``, ...) is passed
    through; ``train_batches`` yields this rank's shard of every batch, and ``loss`` remembers the shard's
    item count for :meth:`synchronize_gradients`.

    Args:
        task: the task, built identically on every rank.
        shard: ``shard(batch, rank, world_size) -> batch`` for batch types :func:`shard_batch` does not know.
    """

    def __init__(self, task: Any, shard: Callable[[Any, int, int], Any] | None = None) -> None:
        self.task = task
        self.shard = shard or shard_batch
        self.rank, self.world_size = rank_and_world_size()
        self._items = 0

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found on the wrapper: the task's model, evaluate, begin_step, ...
        if name == "task":
            raise AttributeError(name)
        return getattr(self.task, name)

    def train_batches(self, epoch: int, rng) -> Iterable[Any]:
        batches = self.task.train_batches(epoch, rng)
        shards = (self.shard(batch, self.rank, self.world_size) for batch in batches)
        return _Sized(shards, len(batches)) if hasattr(batches, "__len__") else shards

    def loss(self, batch: Any, carry: Any) -> tuple[Tensor, int, Any]:
        loss, n_items, carry = self.task.loss(batch, carry)
        # Agree on skipping: if any rank's loss is not finite, every rank reports NaN (the trainer then skips
        # the step on all ranks instead of some ranks waiting forever in the gradient all-reduce).
        finite = torch.tensor([1.0 if math.isfinite(float(loss.detach())) else 0.0])
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item() == 0.0:
            loss = torch.full_like(loss, math.nan)
        self._items += int(n_items)  # all batches of this step (gradient accumulation: several)
        return loss, n_items, carry

    def begin_step(self, step: int) -> None:
        self._items = 0
        if hasattr(self.task, "begin_step"):
            self.task.begin_step(step)

    def synchronize_gradients(self) -> None:
        """Replace each rank's gradients by g = sum_r n_r g_r / sum_r n_r (one all-reduce of a flat buffer).

        A parameter without a gradient on every rank keeps none (as in a 1-process run)."""
        parameters = [p for p in self.task.model.parameters() if p.requires_grad]
        if not parameters:
            return
        reference = parameters[0]
        weight = float(self._items)
        pieces = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) * weight for p in parameters]
        has_grad = torch.tensor([float(p.grad is not None) for p in parameters], device=reference.device)
        flat = torch.cat([*pieces, has_grad, torch.tensor([weight], device=reference.device)])  # one bucket
        dist.all_reduce(flat)
        total_items = flat[-1]
        if total_items <= 0:
            raise ValueError("the ranks' loss() calls reported 0 items in total; expected n_items > 0")
        offset = 0
        for parameter, used in zip(parameters, flat[-1 - len(parameters):-1].tolist(), strict=True):
            size = parameter.numel()
            if used > 0:
                grad = (flat[offset:offset + size] / total_items).view_as(parameter)
                if parameter.grad is None:
                    parameter.grad = grad.clone()
                else:
                    parameter.grad.copy_(grad)
            offset += size


class _Sized:
    """An iterable with the length of the batches it shards (the trainer's progress bar and cosine schedule)."""

    def __init__(self, iterable: Iterable[Any], size: int) -> None:
        self.iterable, self.size = iterable, size

    def __iter__(self):
        return iter(self.iterable)

    def __len__(self) -> int:
        return self.size


class DistributedTrainer(Trainer):
    """:class:`~rnnkit.training.Trainer` for one rank of a data-parallel run (see the module docstring).

    Same arguments as the Trainer; the task is wrapped in :class:`DistributedTask` (pass ``shard=`` for
    batches :func:`shard_batch` cannot split). Needs an initialised process group (:func:`init_distributed`).
    Rank 0 works in ``run_dir``; the other ranks in a scratch directory removed when training ends.
    """

    def __init__(self, task: Any, run_dir: str | Path, settings: TrainingConfig | None = None, *,
                 shard: Callable[[Any, int, int], Any] | None = None, **options: Any) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("DistributedTrainer needs a process group: call init_distributed() first "
                             "(in a process started by torchrun)")
        self.rank, self.world_size = rank_and_world_size()
        self.main_run_dir = Path(run_dir)
        self._scratch = None if self.rank == 0 else Path(tempfile.mkdtemp(prefix=f"rnnkit-rank{self.rank}-"))
        if self.rank != 0:
            options["on_event"] = None  # callbacks (live curves, the web app) hear rank 0 only
            if settings is not None:
                settings = TrainingConfig(**{**settings.to_dict(), "progress": False})
            else:
                options["progress"] = False
        distributed_task = task if isinstance(task, DistributedTask) else DistributedTask(task, shard)
        super().__init__(distributed_task, self._scratch or run_dir, settings, **options)
        # Start from rank 0's weights, as DDP does, even if ranks built their models with different seeds.
        for tensor in self.model.state_dict().values():
            dist.broadcast(tensor, src=0)

    def train(self, *, overwrite: bool = False) -> TrainResult:
        try:
            return super().train(overwrite=overwrite or self.rank != 0)
        finally:
            self._clean_up()

    def resume(self) -> TrainResult:
        dist.barrier()  # rank 0's checkpoint is complete before the others read it
        if self._scratch is not None:
            shutil.copytree(self.main_run_dir / "checkpoints", self._scratch / "checkpoints", dirs_exist_ok=True)
        try:
            return super().resume()
        finally:
            self._clean_up()

    def _clip_gradients(self) -> float:
        # The one hook every step passes between backward and the optimiser: combine the ranks' gradients
        # (identical afterwards), then clip as in a 1-process run.
        self.task.synchronize_gradients()
        return super()._clip_gradients()

    def _out_of_time(self) -> str | None:
        local = super()._out_of_time()
        out = torch.tensor([1.0 if local else 0.0])
        dist.all_reduce(out, op=dist.ReduceOp.MAX)  # all ranks stop at the same step
        return "time_budget" if out.item() > 0 else None

    def _clean_up(self) -> None:
        dist.barrier()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


def make_trainer(task: Any, run_dir: str | Path, settings: TrainingConfig | None = None,
                 **options: Any) -> Trainer:
    """A :class:`DistributedTrainer` when this process is one of several (torchrun with > 1 process; the
    process group is initialised if needed), else a plain :class:`~rnnkit.training.Trainer`."""
    if is_distributed():
        init_distributed()
        return DistributedTrainer(task, run_dir, settings, **options)
    return Trainer(task, run_dir, settings, **options)


def launch_command(nproc: int, argv: list[str], *, module: str = "rnnkit.cli") -> list[str]:
    """The command that runs ``python -m module *argv`` in ``nproc`` processes on this machine with torchrun
    (``--standalone``: a local rendezvous on a free port). ``rnnkit train ... --nproc N`` runs it with the
    arguments minus ``--nproc``."""
    check_size("nproc", nproc)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", module, *argv]
