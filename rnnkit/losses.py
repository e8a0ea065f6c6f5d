"""The output layer and its cross-entropy as one operation, without the (N, V) logits in memory.

:func:`linear_cross_entropy` gives what ``F.cross_entropy(F.linear(x, W, b), y, ...)`` gives, loss and
gradients, but works through the N rows in chunks small enough to stay in cache: for each chunk it forms the
logits z = x W^T + b, the loss of each row from log-sum-exp, and, when a backward will follow, the gradient of
the loss with respect to z at once (softmax(z) - q, q the target distribution), which it multiplies into the
gradients of x, W and b before moving on. The full (N, V) logits, their log-softmax and the gradient of each
never exist; the three matrix products are the same as the unfused layer's. The backward then only scales the
gradients by the incoming gradient of the loss, a scalar, so the loss must be reduced ("mean" or "sum").

For a translation model's output layer (V of several thousand, N = batch x target length) the unfused layer
writes and reads several (N, V) tensors of float32 per step; ``benchmarks/peers/step_profile.py`` measures the
difference. :meth:`rnnkit.seq2seq.Seq2Seq.teacher_forced_loss` uses it for training.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.checks import check_probability

__all__ = ["linear_cross_entropy"]

_CHUNK_ELEMENTS = 1 << 20  # logits per chunk: 4 MiB of float32, about one core's share of the last-level cache


def linear_cross_entropy(
    features: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    targets: Tensor,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """``F.cross_entropy(F.linear(features, weight, bias), targets, ignore_index=..., label_smoothing=...,
    reduction=...)`` computed chunk by chunk, its gradients included (see the module docstring).

    Args:
        features: (N, F) floating inputs of the output layer.
        weight: (V, F) the output layer's weight; bias: (V,) or None.
        targets: (N,) integer target ids in [0, V), or ``ignore_index`` for positions that count for nothing.
        label_smoothing: epsilon in [0, 1): the target distribution is (1 - epsilon) one_hot(y) + epsilon / V.
        reduction: "mean" (over the positions not ignored; NaN if there are none, as in PyTorch) or "sum".
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum' (the backward scales by a scalar), got {reduction!r}")
    epsilon = check_probability("label_smoothing", label_smoothing)
    if features.dim() != 2 or weight.dim() != 2 or features.shape[1] != weight.shape[1]:
        raise ValueError(
            f"features must be (N, F) and weight (V, F) with the same F, got {tuple(features.shape)} and "
            f"{tuple(weight.shape)}"
        )
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must be (V,) = ({weight.shape[0]},), got {tuple(bias.shape)}")
    if targets.dim() != 1 or targets.shape[0] != features.shape[0] or targets.is_floating_point():
        raise ValueError(
            f"targets must be an (N,) integer tensor with N={features.shape[0]}, got {targets.dtype} "
            f"{tuple(targets.shape)}"
        )
    inputs = (features, weight) if bias is None else (features, weight, bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        return _LinearCrossEntropy.apply(features, weight, bias, targets, ignore_index, epsilon, reduction)
    loss, _ = _chunked(features, weight, bias, targets, ignore_index, epsilon, reduction, gradients=False)
    return loss


def _chunked(
    features: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, ignore_index: int, epsilon: float,
    reduction: str, *, gradients: bool,
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor | None] | None]:
    """The reduced loss and, with ``gradients``, d loss / d (features, weight, bias) for an incoming gradient 1."""
    rows, vocab = features.shape[0], weight.shape[0]
    keep = targets != ignore_index  # (N,)
    count = int(keep.sum())
    # each kept row's weight in the reduced loss: 1 / count ("mean"; NaN with no row, as in PyTorch) or 1
    scale = (1.0 / count if count else float("nan")) if reduction == "mean" else 1.0
    row_weights = keep.to(features.dtype) * scale  # (N,)
    safe_targets = torch.where(keep, targets, torch.zeros_like(targets))  # any valid index for ignored rows
    if bool(((safe_targets < 0) | (safe_targets >= vocab)).any()):
        raise ValueError(f"targets must be in [0, {vocab}) or ignore_index={ignore_index}")
    total = features.new_zeros(())
    grads = None
    if gradients:
        grad_features = features.new_empty(features.shape)  # contiguous, for mm(out=)
        grad_weight = torch.zeros_like(weight)
        grad_bias = None if bias is None else torch.zeros_like(bias)
        grads = (grad_features, grad_weight, grad_bias)
    chunk = max(1, _CHUNK_ELEMENTS // vocab)
    for start in range(0, rows, chunk):
        x = features[start:start + chunk]  # (C, F)
        y = safe_targets[start:start + chunk, None]  # (C, 1)
        w = row_weights[start:start + chunk]  # (C,)
        logits = x @ weight.t() if bias is None else torch.addmm(bias, x, weight.t())  # z: (C, V)
        lse = torch.logsumexp(logits, dim=1)  # (C,)
        nll = lse - logits.gather(1, y).squeeze(1)  # -log p(y)
        if epsilon:  # -sum_v q(v) log p(v) = (1 - eps) (-log p(y)) + eps mean_v(-log p(v))
            nll = (1.0 - epsilon) * nll + epsilon * (lse - logits.mean(dim=1))
        total = total + (nll * w).sum()
        if not gradients:
            continue
        grad = logits.sub_(lse[:, None]).exp_()  # softmax(z), in place of z: (C, V)
        grad.scatter_add_(1, y, grad.new_full(y.shape, -(1.0 - epsilon)))  # - (1 - eps) one_hot(y)
        if epsilon:
            grad.sub_(epsilon / vocab)  # - eps / V
        grad.mul_(w[:, None])  # d loss / d z
        torch.mm(grad, weight, out=grad_features[start:start + chunk])
        grad_weight.addmm_(grad.t(), x)
        if grad_bias is not None:
            grad_bias.add_(grad.sum(dim=0))
    return total, grads


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, weight, bias, targets, ignore_index, epsilon, reduction):  # noqa: PLR0913
        loss, grads = _chunked(features, weight, bias, targets, ignore_index, epsilon, reduction, gradients=True)
        ctx.save_for_backward(*(g for g in grads if g is not None))
        ctx.has_bias = bias is not None
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        saved = [g * grad_loss for g in ctx.saved_tensors]  # the incoming gradient is a scalar
        grad_features, grad_weight = saved[:2]
        grad_bias = saved[2] if ctx.has_bias else None
        return grad_features, grad_weight, grad_bias, None, None, None, None
