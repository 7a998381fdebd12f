r"""Losses that see the whole batch under data parallelism: region statistics synchronised across ranks.

Under data parallelism every rank holds a slice of the batch. A global (dataset-level) Dice computed on
a slice scores only that slice, so with small per-GPU batches it silently turns into a per-image loss.
:func:`sync_statistics` makes the per-class statistics of every rank visible to every rank, with the
gradient flowing back through the collective, so a loss computed on them is the single-process loss of
the concatenated batch. The losses call it for ``distributed=True``.

Design (one collective pattern per need, each chosen as the cheapest correct one):

- ``"global"`` alone: each rank pools its slice to (1, C) first, then one autograd all-reduce SUM of the
  stacked (3, 1, C) tp, fp, fn and one all-reduce MAX of ``target_max`` (which carries no gradient).
  Traffic is 4 C numbers whatever the batch size.
- ``"image"``, ``"class"`` or a mix: the per-image rows are needed, so every rank gathers the stacked
  (B_r, 4, C) statistics of all ranks. The batch sizes are exchanged first (uneven batches, B_r = 0
  allowed); every rank pads its rows to the largest B_r, writes them into its own slot of a zero
  (N, max B_r, 4, C) buffer and one autograd all-reduce SUM fills every slot (an all-gather whose
  backward is an all-reduce of the gradient, correct on every backend and subgroup: the autograd
  all_gather's gloo backward fails on subgroups). The padding rows are cut off before anything is summed
  or averaged, so they cannot enter a mean. The gathered rows also serve ``"global"`` in a mix: their
  sum over images is the global sum. Two small collectives forward (sizes, rows), one backward.

Gradient scaling: every rank computes the same full-batch loss L. In backward the collectives sum the
gradient contributions of all N ranks, so the gradient reaching rank r's logits is N times the matching
slice of the single-process gradient dL/dlogits. DistributedDataParallel averages parameter gradients
over the N ranks, (1/N) sum_r N dL/dtheta|_r = dL/dtheta: with DDP the parameter gradient equals the
single-process gradient on the whole batch exactly, and no rescaling is needed. (Summing gradients
yourself instead of averaging would give N times it.)
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from softseg._checks import check_choice
from softseg.aggregation import LEVELS
from softseg.statistics import RegionStatistics

__all__ = ["check_distributed_options", "resolve_process_group", "sync_statistics"]


def check_distributed_options(distributed: object, process_group: object) -> None:
    """Validate ``distributed`` and ``process_group`` without touching the process group (safe at construction).

    The losses' options: sync iff ``distributed``, over ``process_group`` (``None``: the default group).

    Convention:
        - ``distributed`` must be a bool (``TypeError`` otherwise, no truthiness).
        - ``process_group`` must be ``None`` or a ``torch.distributed.ProcessGroup`` (``TypeError``), and is
          only accepted together with ``distributed=True`` (``ValueError``: it would be silently ignored).
          The NON_GROUP_MEMBER that ``new_group`` returns on ranks outside the group is a ``ValueError``.
        - Whether a group is initialised is checked at call time, by :func:`resolve_process_group`.

    Example:
        >>> check_distributed_options(True, None)         # fine even before init_process_group
        >>> check_distributed_options(False, object())
        Traceback (most recent call last):
        ...
        ValueError: process_group is set but distributed=False, so it would be ignored; ...
    """
    if not isinstance(distributed, bool):
        raise TypeError(f"distributed must be a bool; got {type(distributed).__name__}")
    if process_group is None:
        return
    if not distributed:
        raise ValueError(
            "process_group is set but distributed=False, so it would be ignored; "
            "pass distributed=True to synchronise the statistics over it"
        )
    if dist.is_available() and _is_non_member(process_group):
        rank = dist.get_rank() if dist.is_initialized() else "unknown"
        raise ValueError(
            f"this process (global rank {rank}) is not a member of process_group "
            "(torch.distributed.new_group returns NON_GROUP_MEMBER on the other ranks); call the loss only "
            "on the ranks of the group it synchronises over"
        )
    if not dist.is_available() or not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(
            "process_group must be a torch.distributed.ProcessGroup (e.g. from torch.distributed.new_group) "
            f"or None for the default group; got {type(process_group).__name__}"
        )


def _is_non_member(process_group: object) -> bool:
    # new_group() hands ranks outside the group a sentinel int instead of a ProcessGroup.
    sentinel = dist.GroupMember.NON_GROUP_MEMBER
    return process_group is sentinel or (type(process_group) is type(sentinel) and process_group == sentinel)


def resolve_process_group(process_group: dist.ProcessGroup | None) -> dist.ProcessGroup:
    """The group to synchronise over: ``process_group``, or the default group, which must be initialised.

    group = process_group if it is given, else torch.distributed.group.WORLD.

    Convention:
        - ``RuntimeError`` when torch.distributed is unavailable, or when ``process_group`` is None and no
          default group is initialised; the message says to call ``init_process_group`` or pass a group.
        - ``ValueError`` when this process is not a member of ``process_group``.

    Example:
        >>> import torch.distributed as dist
        >>> dist.is_initialized()
        False
        >>> resolve_process_group(None)
        Traceback (most recent call last):
        ...
        RuntimeError: distributed=True but no default process group is initialised; call ...
    """
    if not dist.is_available():
        raise RuntimeError(
            "distributed=True needs torch.distributed, which this PyTorch build does not provide; "
            "use distributed=False"
        )
    if process_group is None:
        if not dist.is_initialized():
            raise RuntimeError(
                "distributed=True but no default process group is initialised; call "
                "torch.distributed.init_process_group(...) first (torchrun + DDP, PyTorch Lightning and "
                "Fabric do this for you), or pass process_group= explicitly"
            )
        return dist.group.WORLD
    check_distributed_options(True, process_group)
    if dist.get_rank(process_group) < 0:
        raise ValueError(
            f"this process (global rank {dist.get_rank()}) is not a member of process_group; "
            "call the loss only on the ranks of the group it synchronises over"
        )
    return process_group


def _run_eagerly(function: Callable) -> Callable:
    """``torch.compiler.disable(function)``, made at the first call: under torch.compile a graph break.

    The decorator imports ``torch._dynamo`` (about a second), which ``import softseg`` (and with it the
    ``softseg`` command's ``--help``) should not pay for when nothing is synchronised.
    """
    disabled = None

    @functools.wraps(function)
    def call(*args, **kwargs):
        nonlocal disabled
        if disabled is None:
            disabled = torch.compiler.disable(function)
        return disabled(*args, **kwargs)

    return call


@_run_eagerly  # eager collectives: under torch.compile this is a graph break, not an error
def sync_statistics(
    stats: RegionStatistics,
    *,
    levels: Iterable[str] = ("global",),
    process_group: dist.ProcessGroup | None = None,
) -> RegionStatistics:
    r"""Statistics of the whole batch across all ranks, differentiable, for the aggregation ``levels``.

    With rank r holding the (B_r, C) statistics of its slice:

    .. math::

        \text{global only:}\quad tp_c = \sum_r \sum_{b \in r} tp_{bc}\ \text{(same for fp, fn)},\quad
        \max_c = \max_r \max_{b \in r} \text{target\_max}_{bc}

        \text{image / class / mix:}\quad \text{rows} = \operatorname{concat}_r (tp, fp, fn,
        \text{target\_max})_{b \in r}

    Convention:
        - ``stats``: :class:`~softseg.statistics.RegionStatistics` of this rank's slice, each (B_r, C),
          float32 or float64; B_r may differ between ranks and may be 0. C and the dtype must be the same on
          every rank (a different C raises ``ValueError`` on every rank, so none hangs).
        - ``levels``: the aggregation levels that will use the result (``"global"``, ``"image"``,
          ``"class"``). Only ``"global"``: returns pooled (1, C) statistics. Otherwise returns the
          (sum_r B_r, C) rows of every image of every rank, in rank order, the same on every rank.
        - ``process_group``: the group to synchronise over; ``None`` is the default group, which must be
          initialised (``RuntimeError`` otherwise, saying how to fix it).
        - Gradients: the collectives are autograd-aware and sum gradients over ranks in backward, so rank
          r's inputs receive N times their slice of the single-process gradient; DDP's averaging over the
          N ranks turns that into exactly the single-process parameter gradient.
        - Every rank of the group must call it (a rank that raises before the collective leaves the others
          waiting until the process group's timeout).

    Example:
        >>> import tempfile, torch, torch.distributed as dist
        >>> store = tempfile.NamedTemporaryFile(delete=False).name
        >>> dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
        >>> stats = RegionStatistics(*(torch.tensor([[1.0, 2.0], [3.0, 0.0]]) for _ in range(4)))
        >>> sync_statistics(stats, levels=["global"]).tp          # pooled over images and ranks
        tensor([[4., 2.]])
        >>> sync_statistics(stats, levels=["image", "class"]).tp.shape
        torch.Size([2, 2])
        >>> dist.destroy_process_group()
    """
    levels = tuple(levels)
    if not levels:
        raise ValueError("levels must name at least one aggregation level; got none")
    for level in levels:
        check_choice("levels", level, LEVELS)
    group = resolve_process_group(process_group)
    # torch.distributed.nn.functional is the public autograd-aware API (all_reduce's backward all-reduces
    # the gradient) on every backend and every torch >= 2.2. Recent PyTorch marks it deprecated in favour of
    # the private torch.distributed._functional_collectives, whose all_reduce has autograd only in recent
    # releases, so keep it and silence only that FutureWarning.
    import torch.distributed.nn.functional as collectives

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional", category=FutureWarning)
        if set(levels) == {"global"}:
            return _sum_over_ranks(stats.sum_images(), group, collectives)
        return _gather_images(stats, group, collectives)


def _sum_over_ranks(pooled: RegionStatistics, group: dist.ProcessGroup, collectives) -> RegionStatistics:
    counts = collectives.all_reduce(torch.stack((pooled.tp, pooled.fp, pooled.fn)), group=group)
    target_max = pooled.target_max.detach().clone()  # presence only: no gradient, a plain in-place MAX
    dist.all_reduce(target_max, op=dist.ReduceOp.MAX, group=group)
    return RegionStatistics(counts[0], counts[1], counts[2], target_max)


def _gather_images(stats: RegionStatistics, group: dist.ProcessGroup, collectives) -> RegionStatistics:
    rows = torch.stack(tuple(stats), dim=1)  # (B_r, 4, C): one collective for all four statistics
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    local_shape = torch.tensor([rows.shape[0], rows.shape[2]], dtype=torch.int64, device=rows.device)
    shapes = [torch.empty_like(local_shape) for _ in range(world)]
    dist.all_gather(shapes, local_shape, group=group)
    sizes = [int(shape[0]) for shape in shapes]
    classes = [int(shape[1]) for shape in shapes]
    if len(set(classes)) > 1:
        raise ValueError(
            f"distributed=True needs the same number of scored classes on every rank; got {classes} "
            "(ranks in order)"
        )
    largest = max(sizes)
    if largest == 0:
        return stats  # nothing anywhere: the empty local statistics are the whole batch
    # Every rank writes its rows, zero-padded to the largest batch, into its own slot of a
    # (world, largest, 4, C) buffer of zeros; an autograd all-reduce SUM then fills in every slot. This is
    # an all-gather whose backward (an all-reduce of the gradient) works on every backend and subgroup;
    # the autograd all_gather's gloo backward fails on subgroups, and the buffer is a few KB.
    slots = F.pad(rows.unsqueeze(0), (0, 0, 0, 0, 0, largest - rows.shape[0], rank, world - 1 - rank))
    slots = collectives.all_reduce(slots, group=group)
    # Cut every rank's padding off before anything is summed or averaged: padded rows never count.
    rows = torch.cat([slots[r, :size] for r, size in enumerate(sizes)])
    return RegionStatistics(*rows.unbind(1))
