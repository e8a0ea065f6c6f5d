"""Attention: how well each source position answers a decoder query, and the context vector that results.

Every module shares one interface (DESIGN.md section 3)::

    context, weights = attention(query, keys, valid)          # same as attention.attend(query, keys, valid)

    query   (B, H_q)     the decoder state asking: h_t (Luong et al. 2015) or s_{i-1} (Bahdanau et al. 2014)
    keys    (B, S, H_k)  the encoder outputs h̄_s, one per source position s
    valid   (B, S) bool  True at real source positions, False at padding
    weights (B, S)       a_t(s) = softmax_s(score(q, h̄_s)) over the valid positions: each row sums to 1 and is
                         exactly 0 at padding (a row with no valid position is all 0)
    context (B, H_k)     c_t = sum_s a_t(s) h̄_s

and a batched form for the T queries of a teacher-forced decoder, as batched matrix products::

    contexts, weights = attention.attend_all(queries (B, T, H_q), keys, valid)   # (B, T, H_k), (B, T, S)

Each module separates ``score(query, keys) -> (B, S)`` (the formula in its docstring; ``score_all`` is the
batched (B, T, S) form) from ``forward`` (masking, softmax, weighted sum). The part of a score that depends on
the keys alone is computed once per source sentence by ``precompute(keys)`` and passed back as
``precomputed=`` at every decoder step (Bahdanau et al. 2014, appendix A.1.2: "U_a h_j ... can be
pre-computed"); modules with nothing to precompute return None.

Coverage (Tu et al. 2016, "Modeling Coverage for Neural Machine Translation"): additive and concat attention
built with ``coverage=True`` also score each source position by how much attention it has already received,
C_t(s) = sum_{t' < t} a_t'(s), passed as ``coverage=`` (B, S) to ``forward`` (zeros at the first step); the
decoder keeps the running sum. Each step then depends on the last, so ``attend_all`` is not available.

Local attention (Luong et al. 2015, section 3.2) also needs the decoder step t (local-m) and each sentence's
own source length S_b (local-m, local-p). S_b is read from ``valid`` (``valid.sum(1)``: padding must come at
the end of each row); t is passed as ``step=`` (an int or a (B,) tensor) to ``forward`` and as ``steps=``
((T,) or (B, T), default ``0..T-1``) to ``attend_all``. Other modules ignore ``step``.

Symbols: q the query (H_q features), h̄_s the key at source position s (H_k), W, U, W_a, W_p, v, v_p learned
weights, A the attention (hidden) size of the additive-style scores, D the half-width of a local window.

Example::

    attention = make_attention("general", query_size=64, key_size=128)
    context, weights = attention(decoder_state, encoder_outputs, valid)    # (B, 128), (B, S)
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import Tensor, nn

from rnnkit.checks import check_bool, check_size

__all__ = [
    "Attention",
    "AdditiveAttention",
    "DotAttention",
    "ScaledDotAttention",
    "GeneralAttention",
    "ConcatAttention",
    "LocationAttention",
    "LocalAttention",
    "ATTENTION_NAMES",
    "make_attention",
    "masked_softmax",
]


def masked_softmax(scores: Tensor, valid: Tensor) -> Tensor:
    """Softmax over the last dimension restricted to ``valid`` positions (broadcast against ``scores``).

    Invalid positions get weight exactly 0 (their score is set to -inf before the softmax, and exp(-inf) = 0).
    A row without any valid position would be softmax(-inf, ..., -inf) = NaN; it gets all zeros instead.
    """
    any_valid = valid.any(-1, keepdim=True)
    scores = scores.masked_fill(~valid, float("-inf"))
    scores = scores.masked_fill(~any_valid, 0.0)  # keep all-invalid rows finite: no NaN forwards or backwards
    return torch.softmax(scores, dim=-1).masked_fill(~valid, 0.0)


class Attention(nn.Module):
    """What every attention shares: size checks, masking, the weighted sum, and the batched form.

    Subclasses define ``score`` (and, where a batched matrix form exists, ``score_all``; the default runs
    ``score`` once per query) and, if part of the score depends on the keys alone, ``precompute``.
    """

    #: True for a module built with ``coverage=True``: ``forward`` then needs ``coverage=``.
    coverage: bool = False

    def __init__(self, query_size: int, key_size: int) -> None:
        super().__init__()
        self.query_size = check_size("query_size", query_size)
        self.key_size = check_size("key_size", key_size)

    # --- to be defined by each variant -------------------------------------------------------------
    def precompute(self, keys: Tensor) -> Tensor | None:
        """The key-only part of the score, computed once per source sentence (None if there is none)."""
        return None

    def score(self, query: Tensor, keys: Tensor, precomputed: Tensor | None = None) -> Tensor:
        """Unnormalised scores (B, S) of one query (B, H_q) against the keys (B, S, H_k)."""
        raise NotImplementedError

    def score_all(self, queries: Tensor, keys: Tensor, precomputed: Tensor | None = None) -> Tensor:
        """Scores (B, T, S) of T queries (B, T, H_q) at once; by default one ``score`` call per query."""
        return torch.stack([self.score(q, keys, precomputed) for q in queries.unbind(1)], dim=1)  # (B, T, S)

    def _normalise(self, scores: Tensor, queries: Tensor, valid: Tensor, steps: Tensor | None) -> Tensor:
        """Weights (B, T, S) from scores (B, T, S): softmax over the valid positions."""
        return masked_softmax(scores, valid.unsqueeze(1))

    def _add_coverage(self, precomputed: Tensor, coverage: Tensor) -> Tensor:
        """The precomputed key term with the coverage term added (modules built with ``coverage=True``)."""
        return self.coverage_term(precomputed, coverage)  # (B, S, A)

    # --- shared -----------------------------------------------------------------------------------
    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        valid: Tensor,
        *,
        precomputed: Tensor | None = None,
        step: int | Tensor | None = None,
        coverage: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Attend with one query per sentence.

        Args:
            query: (B, H_q). keys: (B, S, H_k). valid: (B, S) bool, True at real source positions.
            precomputed: the output of ``precompute(keys)``, to skip recomputing it at every decoder step.
            step: the decoder step t (int or (B,) tensor); only local-m attention uses it.
            coverage: (B, S) the sum of the previous steps' weights; required by (and only by) a module built
                with ``coverage=True``.

        Returns:
            context (B, H_k) and weights (B, S).
        """
        self._check(query, keys, valid, precomputed, batched=False)
        if self.coverage:
            if coverage is None or tuple(coverage.shape) != tuple(keys.shape[:2]):
                given = None if coverage is None else tuple(coverage.shape)
                raise ValueError(
                    f"coverage attention needs coverage= of shape {tuple(keys.shape[:2])}, the sum of the previous "
                    f"steps' weights (zeros at the first step), got {given}"
                )
            precomputed = self._add_coverage(self.precompute(keys) if precomputed is None else precomputed, coverage)
        elif coverage is not None:
            raise ValueError(f"{type(self).__name__} was built without coverage; it takes no coverage=")
        scores = self.score(query, keys, precomputed)  # (B, S)
        steps = None if step is None else _as_steps(step, query.shape[0], 1, query.device)  # (B, 1)
        weights = self._normalise(scores.unsqueeze(1), query.unsqueeze(1), valid, steps).squeeze(1)  # (B, S)
        context = torch.bmm(weights.unsqueeze(1), keys).squeeze(1)  # (B, 1, S) x (B, S, H_k) -> (B, H_k)
        return context, weights

    def attend(self, query: Tensor, keys: Tensor, valid: Tensor, **options) -> tuple[Tensor, Tensor]:
        """The DESIGN.md interface name for ``forward``: ``(context (B, H_k), weights (B, S))``."""
        return self(query, keys, valid, **options)

    def attend_all(
        self,
        queries: Tensor,
        keys: Tensor,
        valid: Tensor,
        *,
        precomputed: Tensor | None = None,
        steps: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Attend with T queries per sentence at once (a teacher-forced decoder's whole output).

        Args:
            queries: (B, T, H_q). keys: (B, S, H_k). valid: (B, S) bool.
            precomputed: the output of ``precompute(keys)``.
            steps: decoder step of each query, (T,) or (B, T); default 0..T-1 (only local-m uses it).

        Returns:
            contexts (B, T, H_k) and weights (B, T, S); row t equals ``forward(queries[:, t], ..., step=t)``.
        """
        if self.coverage:
            raise ValueError("coverage attention depends on the previous steps' weights: call it step by step")
        self._check(queries, keys, valid, precomputed, batched=True)
        batch_size, length = queries.shape[:2]
        if steps is None:
            steps = torch.arange(length, device=queries.device)
        steps = _as_steps(steps, batch_size, length, queries.device)  # (B, T)
        scores = self.score_all(queries, keys, precomputed)  # (B, T, S)
        weights = self._normalise(scores, queries, valid, steps)  # (B, T, S)
        contexts = torch.bmm(weights, keys)  # (B, T, S) x (B, S, H_k) -> (B, T, H_k)
        return contexts, weights

    def _check(self, query: Tensor, keys: Tensor, valid: Tensor, precomputed: Tensor | None, batched: bool):
        expected_query = "(B, T, H_q)" if batched else "(B, H_q)"
        if query.dim() != (3 if batched else 2) or query.shape[-1] != self.query_size:
            raise ValueError(
                f"query must have shape {expected_query} with H_q={self.query_size}, got {tuple(query.shape)}"
            )
        if keys.dim() != 3 or keys.shape[-1] != self.key_size or keys.shape[0] != query.shape[0]:
            raise ValueError(
                f"keys must have shape (B, S, H_k) with B={query.shape[0]} and H_k={self.key_size}, "
                f"got {tuple(keys.shape)}"
            )
        if valid.dtype != torch.bool or tuple(valid.shape) != tuple(keys.shape[:2]):
            raise ValueError(
                f"valid must be a bool tensor (True at real positions) of shape {tuple(keys.shape[:2])}, "
                f"got {valid.dtype} {tuple(valid.shape)}"
            )
        if precomputed is not None and tuple(precomputed.shape[:2]) != tuple(keys.shape[:2]):
            raise ValueError(
                f"precomputed must come from precompute(keys) with (B, S)={tuple(keys.shape[:2])}, "
                f"got shape {tuple(precomputed.shape)}"
            )

    def extra_repr(self) -> str:
        return f"query_size={self.query_size}, key_size={self.key_size}"


class _CoverageTerm(nn.Module):
    """The coverage term of an additive-style score: w_c C(s), one learned vector w_c (A,) scaled by the
    coverage of each position, added inside the tanh next to the key projection (Tu et al. 2016, eq. 6)."""

    def __init__(self, attention_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(1, attention_size, bias=False)  # w_c

    def forward(self, projected_keys: Tensor, coverage: Tensor) -> Tensor:
        return projected_keys + self.linear(coverage.unsqueeze(-1))  # (B, S, A) + (B, S, 1) x (1, A)


def tanh_score(query_term: Tensor, key_term: Tensor, v: Tensor) -> Tensor:
    """v^T tanh(query_term + key_term) over the last dimension, the two terms broadcast to each other: the score of
    additive and concat attention, (..., S) from terms (..., 1, A) and (..., S, A) and v (A,).

    The same numbers as ``torch.tanh(query_term + key_term) @ v``, but the backward recomputes the tanh instead of
    keeping it: kept, it is an (B, S, A) tensor per decoder step, alive until the backward, which for long
    sentences (S = 70, T = 100, A = 512 at batch 64: 0.9 GB) is most of a training step's memory.
    """
    return _TanhScore.apply(query_term, key_term, v)


class _TanhScore(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query_term: Tensor, key_term: Tensor, v: Tensor) -> Tensor:
        ctx.save_for_backward(query_term, key_term, v)  # the key term is shared by every step: no copy
        return (torch.add(query_term, key_term).tanh_() @ v.unsqueeze(-1)).squeeze(-1)  # a product, as in a Linear

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        query_term, key_term, v = ctx.saved_tensors
        hidden = torch.add(query_term, key_term).tanh_()  # h = tanh(x + y), recomputed: (..., S, A)
        grad_v = None
        if ctx.needs_input_grad[2]:  # d/dv = sum over every position of grad * h
            grad_v = (grad.reshape(1, -1) @ hidden.reshape(-1, hidden.shape[-1])).reshape(v.shape)
        grad_sum = hidden.square_().neg_().add_(1).mul_(grad.unsqueeze(-1)).mul_(v)  # grad v (1 - h^2), in place
        return (grad_sum.sum_to_size(query_term.shape) if ctx.needs_input_grad[0] else None,
                grad_sum.sum_to_size(key_term.shape) if ctx.needs_input_grad[1] else None, grad_v)


def _as_steps(step: int | Tensor, batch_size: int, length: int, device: torch.device) -> Tensor:
    """A step index as a (B, T) long tensor, from an int, a (B,) / (T,) tensor, or a (B, T) tensor."""
    step = torch.as_tensor(step, device=device)
    if step.dtype.is_floating_point or step.dtype == torch.bool:
        raise ValueError(f"step must be an integer or an integer tensor, got dtype {step.dtype}")
    if step.dim() == 0:
        return step.expand(batch_size, length)
    if step.dim() == 1 and length == 1 and step.shape[0] == batch_size:  # one step per sentence
        return step.unsqueeze(1)
    if step.dim() == 1 and step.shape[0] == length:  # one step per query, shared by the batch
        return step.unsqueeze(0).expand(batch_size, length)
    if step.dim() == 2 and tuple(step.shape) == (batch_size, length):
        return step
    raise ValueError(
        f"step(s) must be an int, (B,), (T,) or (B, T)=({batch_size}, {length}), got {tuple(step.shape)}"
    )


class AdditiveAttention(Attention):
    """Additive attention (Bahdanau et al. 2014, appendix A.1.2)::

        score(q, h̄_s) = v^T tanh(W q + U h̄_s)                      (+ w_c C(s) inside the tanh with coverage)

    W (A, H_q), U (A, H_k) with a bias, v (A,). ``U h̄_s`` does not depend on the decoder step, so
    ``precompute(keys)`` returns it (B, S, A) once per source sentence.

    With ``coverage=True`` (Tu et al. 2016, eq. 6; See et al. 2017, eq. 11) the score also sees the coverage
    C(s) = sum_{t' < t} a_t'(s) of each position through a learned w_c (A,), so the model can learn to turn away
    from positions it has already translated: score(q, h̄_s, C) = v^T tanh(W q + U h̄_s + w_c C(s)). This is Tu
    et al.'s linguistic coverage with fertility 1 (the form See et al. use).
    """

    def __init__(
        self, query_size: int, key_size: int, attention_size: int | None = None, coverage: bool = False
    ) -> None:
        super().__init__(query_size, key_size)
        self.attention_size = check_size("attention_size", attention_size or key_size)
        self.query_projection = nn.Linear(query_size, self.attention_size, bias=False)  # W
        self.key_projection = nn.Linear(key_size, self.attention_size)  # U (its bias is the only one needed)
        self.v = nn.Linear(self.attention_size, 1, bias=False)
        self.coverage = check_bool("coverage", coverage)
        if self.coverage:
            self.coverage_term = _CoverageTerm(self.attention_size)  # w_c

    def precompute(self, keys: Tensor) -> Tensor:
        return self.key_projection(keys)  # (B, S, A)

    def score(self, query: Tensor, keys: Tensor, precomputed: Tensor | None = None) -> Tensor:
        projected_keys = self.precompute(keys) if precomputed is None else precomputed  # (B, S, A)
        return tanh_score(self.query_projection(query).unsqueeze(1), projected_keys, self.v.weight[0])  # (B, S)

    def score_all(self, queries: Tensor, keys: Tensor, precomputed: Tensor | None = None) -> Tensor:
        projected_keys = self.precompute(keys) if precomputed is None else precomputed  # (B, S, A)
        projected_queries = self.query_projection(queries)  # (B, T, A)
        return tanh_score(projected_queries.unsqueeze(2), projected_keys.unsqueeze(1), self.v.weight[0])  # (B, T, S)

    def extra_repr(self) -> str:
        extra = ", coverage=True" if self.coverage else ""
        return f"{super().extra_repr()}, attention_size={self.attention_size}{extra}"


class DotAttention(Attention):
    """Dot attention (Luong et al. 2015, eq. 8 "dot")::

    score(q, h̄_s) = q^T h̄_s                 (needs H_q = H_k)
    """

    def __init__(self, query_size: int, key_size: int) -> None:
        super().__init__(query_size, key_size)
        if query_size != key_size:
            raise ValueError(
                f"{type(self).__name__} needs query_size == key_size, got {query_size} and {key_size} "
                "(use 'general' attention for different sizes)"
            )

    def score(self, query: Tensor, keys: Tensor, precomputed: Tensor | None = None) -> Tensor:
        return torch.bmm(keys, query.unsqueeze(2)).squeeze(2)  # (B, S, H) x (B, H, 1) -> (B, S)

    def score_all(self, queries: Tensor, keys: Tensor, precomputed: Tensor | None = None) -> Tensor:
        return torch.bmm(queries, keys.transpose(1, 2))  # (B, T, H) x (B, H, S) -> (B, T, S)


class ScaledDotAttention(DotAttention):
    """Scaled dot attention (Vaswani et al. 2017, eq. 1)::

        score(q, h̄_s) = q^T h̄_s / sqrt(H_k)     (needs H_q = H_k)

    The scaling keeps the scores' variance near 1 whatever H_k, so the softmax does not saturate.
    """

    def score(self, query: Tensor, keys: Tensor, precomputed: Tensor | None = None) -> Tensor:
        return super().score(query, keys) / math.sqrt(self.key_size)  # (B, S)

    def score_all(self, queries: Tensor, keys: Tensor, precomputed: Tensor | None = None) -> Tensor:
        return super().score_all(queries, keys) / math.sqrt(self.key_size)  # (B, T, S)


class GeneralAttention(Attention):
    """General (bilinear) attention (Luong et al. 2015, eq. 8 "general")::

        score(q, h̄_s) = q^T W_a h̄_s

    W_a (H_q, H_k), stored as ``weight``. Computed as (q^T W_a) h̄_s: one (H_q x H_k) product per query rather
    than one per source position.
    """

    def __init__(self, query_size: int, key_size: int) -> None:
        super().__init__(query_size, key_size)
        self.weight = nn.Parameter(torch.empty(query_size, key_size))  # W_a
        nn.init.uniform_(self.weight, -1.0 / math.sqrt(key_size), 1.0 / math.sqrt(key_size))

    def score(self, query: Tensor, keys: Tensor, precomputed: Tensor | None = None) -> Tensor:
        transformed = query @ self.weight  # q^T W_a: (B, H_k)
        return torch.bmm(keys, transformed.unsqueeze(2)).squeeze(2)  # (B, S)

    def score_all(self, queries: Tensor, keys: Tensor, precomputed: Tensor | None = None) -> Tensor:
        transformed = queries @ self.weight  # (B, T, H_k)
        return torch.bmm(transformed, keys.transpose(1, 2))  # (B, T, S)


class ConcatAttention(Attention):
    """Concat attention (Luong et al. 2015, eq. 8 "concat")::

        score(q, h̄_s) = v_a^T tanh(W_a [q; h̄_s])

    W_a (A, H_q + H_k), v_a (A,), no bias. ``score`` computes the formula literally; ``precompute`` and the
    batched ``score_all`` split W_a = [W_q, W_k] so that W_k h̄_s is computed once per source sentence
    (the same numbers, as W_a [q; h̄_s] = W_q q + W_k h̄_s). ``coverage=True`` adds w_c C(s) inside the tanh,
    as for :class:`AdditiveAttention`.
    """

    def __init__(
        self, query_size: int, key_size: int, attention_size: int | None = None, coverage: bool = False
    ) -> None:
        super().__init__(query_size, key_size)
        self.attention_size = check_size("attention_size", attention_size or key_size)
        self.linear = nn.Linear(query_size + key_size, self.attention_size, bias=False)  # W_a
        self.v = nn.Linear(self.attention_size, 1, bias=False)  # v_a
        self.coverage = check_bool("coverage", coverage)
        if self.coverage:
            self.coverage_term = _CoverageTerm(self.attention_size)  # w_c

    def _split(self) -> tuple[Tensor, Tensor]:
        return self.linear.weight[:, : self.query_size], self.linear.weight[:, self.query_size :]  # W_q, W_k

    def precompute(self, keys: Tensor) -> Tensor:
        return keys @ self._split()[1].t()  # W_k h̄_s: (B, S, A)

    def score(self, query: Tensor, keys: Tensor, precomputed: Tensor | None = None) -> Tensor:
        if precomputed is None:
            expanded = query.unsqueeze(1).expand(-1, keys.shape[1], -1)  # (B, S, H_q)
            hidden = torch.tanh(self.linear(torch.cat([expanded, keys], dim=-1)))  # W_a [q; h̄_s]: (B, S, A)
        else:
            return tanh_score((query @ self._split()[0].t()).unsqueeze(1), precomputed, self.v.weight[0])  # (B, S)
        return self.v(hidden).squeeze(-1)  # (B, S)

    def score_all(self, queries: Tensor, keys: Tensor, precomputed: Tensor | None = None) -> Tensor:
        projected_keys = self.precompute(keys) if precomputed is None else precomputed  # (B, S, A)
        projected_queries = queries @ self._split()[0].t()  # (B, T, A)
        return tanh_score(projected_queries.unsqueeze(2), projected_keys.unsqueeze(1), self.v.weight[0])  # (B, T, S)

    def extra_repr(self) -> str:
        extra = ", coverage=True" if self.coverage else ""
        return f"{super().extra_repr()}, attention_size={self.attention_size}{extra}"


class LocationAttention(Attention):
    """Location-based attention (Luong et al. 2015, eq. 8 "location")::

        a_t = softmax(W_a q)          scores for positions 0 .. max_source_length - 1, from the query alone

    W_a (max_source_length, H_q). The first S scores are used and the softmax runs over the valid ones; the
    keys only give S and the context. Sources longer than ``max_source_length`` raise ValueError.
    """

    def __init__(self, query_size: int, key_size: int, max_source_length: int | None = None) -> None:
        super().__init__(query_size, key_size)
        if max_source_length is None:
            raise ValueError("location attention needs max_source_length (the longest source it will see)")
        self.max_source_length = check_size("max_source_length", max_source_length)
        self.linear = nn.Linear(query_size, self.max_source_length, bias=False)  # W_a

    def _check_length(self, keys: Tensor) -> int:
        source_length = keys.shape[1]
        if source_length > self.max_source_length:
            raise ValueError(
                f"location attention was built for sources of at most {self.max_source_length} positions, "
                f"got keys with S={source_length}"
            )
        return source_length

    def score(self, query: Tensor, keys: Tensor, precomputed: Tensor | None = None) -> Tensor:
        return self.linear(query)[:, : self._check_length(keys)]  # (B, S)

    def score_all(self, queries: Tensor, keys: Tensor, precomputed: Tensor | None = None) -> Tensor:
        return self.linear(queries)[:, :, : self._check_length(keys)]  # (B, T, S)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, max_source_length={self.max_source_length}"


class LocalAttention(Attention):
    """Local attention (Luong et al. 2015, section 3.2): attend only to a window [p_t - D, p_t + D].

    The aligned position p_t of decoder step t (S_b is sentence b's own source length, ``valid[b].sum()``):

    * local-m (monotonic, ``predictive=False``): p_t = t, clamped to S_b - 1 so that a target longer than its
      source still sees the end of the source rather than an empty window;
    * local-p (predictive, ``predictive=True``): p_t = S_b * sigmoid(v_p^T tanh(W_p q)) (eq. 9), in [0, S_b].

    Inside the window the weights come from a content score (``score=``: "general" by default as in the paper,
    or "dot", "scaled-dot", "concat", "additive"); outside it and at padding they are 0. local-p also favours
    positions near p_t with a Gaussian of sigma = D / 2 (eq. 10)::

        a_t(s) = align(q, h̄_s) * exp(-(s - p_t)^2 / (2 sigma^2))

    Luong et al. multiply the window softmax by the Gaussian, so the weights sum to less than 1. With
    ``renormalize=True`` (the default) the product is renormalised over the window, i.e.
    a_t = softmax_window(score - (s - p_t)^2 / (2 sigma^2)), which keeps a_t a distribution like every other
    attention here; ``renormalize=False`` gives the paper's exact form.

    local-m needs the step t: ``forward(..., step=t)`` and ``attend_all(..., steps=...)`` (default 0..T-1).
    """

    def __init__(
        self,
        query_size: int,
        key_size: int,
        window: int = 10,
        predictive: bool = False,
        score: str = "general",
        attention_size: int | None = None,
        renormalize: bool = True,
    ) -> None:
        super().__init__(query_size, key_size)
        self.window = check_size("window", window)  # D
        self.predictive = bool(predictive)
        self.renormalize = bool(renormalize)
        if score not in _CONTENT_SCORES:
            known = sorted(_CONTENT_SCORES)
            raise ValueError(f"local attention's score must be one of {known}, got {score!r}")
        self.score_name = score
        options = {"attention_size": attention_size} if score in ("additive", "concat") else {}
        self.content = _CONTENT_SCORES[score](query_size, key_size, **options)
        if self.predictive:
            hidden = check_size("attention_size", attention_size or query_size)
            self.position_projection = nn.Linear(query_size, hidden, bias=False)  # W_p
            self.position_v = nn.Linear(hidden, 1, bias=False)  # v_p

    def precompute(self, keys: Tensor) -> Tensor | None:
        return self.content.precompute(keys)

    def score(self, query: Tensor, keys: Tensor, precomputed: Tensor | None = None) -> Tensor:
        return self.content.score(query, keys, precomputed)  # (B, S)

    def score_all(self, queries: Tensor, keys: Tensor, precomputed: Tensor | None = None) -> Tensor:
        return self.content.score_all(queries, keys, precomputed)  # (B, T, S)

    def aligned_positions(self, queries: Tensor, valid: Tensor, steps: Tensor | None) -> Tensor:
        """p_t for every query: (B, T) floats, from queries (B, T, H_q), valid (B, S), steps (B, T)."""
        source_lengths = valid.sum(1, keepdim=True).to(queries.dtype)  # S_b: (B, 1)
        if self.predictive:
            # Luong et al. 2015, eq. 9: p_t = S * sigmoid(v_p^T tanh(W_p h_t))
            gate = torch.sigmoid(self.position_v(torch.tanh(self.position_projection(queries))).squeeze(-1))
            return source_lengths * gate  # (B, T)
        if steps is None:
            raise ValueError("local-m attention needs the decoder step: step=t (or steps= to attend_all)")
        return torch.minimum(steps.to(queries.dtype), (source_lengths - 1).clamp(min=0))  # p_t = t: (B, T)

    def _normalise(self, scores: Tensor, queries: Tensor, valid: Tensor, steps: Tensor | None) -> Tensor:
        positions = self.aligned_positions(queries, valid, steps)  # (B, T)
        source_positions = torch.arange(valid.shape[1], device=scores.device, dtype=scores.dtype)  # (S,)
        distance = source_positions - positions.unsqueeze(-1)  # s - p_t: (B, T, S)
        in_window = valid.unsqueeze(1) & (distance.abs() <= self.window)  # (B, T, S)
        if not self.predictive:
            return masked_softmax(scores, in_window)
        sigma = self.window / 2.0
        log_gaussian = -distance.square() / (2.0 * sigma**2)  # Luong et al. 2015, eq. 10
        if self.renormalize:
            return masked_softmax(scores + log_gaussian, in_window)
        return masked_softmax(scores, in_window) * log_gaussian.exp()

    def extra_repr(self) -> str:
        kind = "local-p" if self.predictive else "local-m"
        extra = "" if self.renormalize else ", renormalize=False"
        return f"{super().extra_repr()}, {kind}, window={self.window}, score={self.score_name!r}{extra}"


_CONTENT_SCORES = {
    "additive": AdditiveAttention,
    "dot": DotAttention,
    "scaled-dot": ScaledDotAttention,
    "general": GeneralAttention,
    "concat": ConcatAttention,
}

_ATTENTIONS = {
    **_CONTENT_SCORES,
    "location": LocationAttention,
    "local-m": LocalAttention,
    "local-p": LocalAttention,
}

#: Names accepted by :func:`make_attention`.
ATTENTION_NAMES: tuple[str, ...] = tuple(_ATTENTIONS)


def make_attention(name: str, query_size: int, key_size: int, **options) -> Attention:
    """Build an attention module by name.

    Args:
        name: one of ``ATTENTION_NAMES``: "additive" (Bahdanau), "dot", "scaled-dot", "general", "concat",
            "location", "local-m", "local-p" (underscores are accepted for dashes).
        query_size: H_q, features of the decoder query. key_size: H_k, features of each encoder output.
        options: keyword options of that module, e.g. ``attention_size`` and ``coverage`` (additive, concat),
            ``max_source_length`` (location), ``window``, ``score``, ``renormalize`` (local).

    Raises:
        ValueError: for an unknown name or an option the module does not take.
    """
    if not isinstance(name, str) or name.replace("_", "-").lower() not in _ATTENTIONS:
        raise ValueError(f"unknown attention {name!r}; known: {', '.join(ATTENTION_NAMES)}")
    name = name.replace("_", "-").lower()
    cls = _ATTENTIONS[name]
    if cls is LocalAttention:
        if "predictive" in options:
            raise ValueError(f"choose local-m or local-p by name, not with predictive= (got name {name!r})")
        options = {**options, "predictive": name == "local-p"}
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "query_size", "key_size"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"{name} attention does not take {unknown}; it takes {sorted(accepted)}")
    return cls(query_size, key_size, **options)
