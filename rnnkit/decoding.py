"""Decoding: greedy, sampled and batched beam search through a model's one-step interface.

Every strategy here talks to the model through a single method (DESIGN section 3)::

    log_probs, state = model.step(prev_tokens, state)      # (N,) long -> (N, V) log p(y_t | y_<t, x)

so the same code decodes a seq2seq model (its state comes from ``model.start(src, src_lengths)``), a language
model (its state is just its hidden-state dict) or a fixed probability table in the tests.

The state contract: ``state`` is a dict (possibly nested dicts / tuples / lists) in which EVERY tensor has the
batch as dim 0. Beam search therefore expands it per beam and reorders it generically with
``t.index_select(0, rows)`` (:func:`rnnkit.state.select_rows`; ``map_state`` is re-exported here from
:mod:`rnnkit.state`); non-tensor leaves pass through untouched. After a step, ``state.get("attention")`` holds
that step's attention weights (N, S) if the model attends; they are recorded.

Conventions shared by all strategies:

* Output tokens do not include the first input token (BOS) and do include the EOS token that ends a sequence.
  The length of a sequence counts its EOS, as the length penalty does.
* ``max_len`` is the largest length (EOS included), one int for every row or a (N,) tensor with one per row
  (:func:`translate` makes it a * source length + b per sentence, as fairseq's ``--max-len-a/--max-len-b``): a
  sequence that reaches ``max_len - 1`` tokens without ending is forced to end, its ``max_len``-th token is
  EOS, scored with the model's log p(EOS) there.
* ``min_len`` is the smallest length (EOS included): EOS is suppressed (log p(EOS) = -inf) at every step
  where emitting it would give a shorter sequence.
* ``no_repeat_ngram_size`` n > 0 blocks repeated n-grams, as fairseq's and OpenNMT's option of that name: a token
  that would complete an n-gram already present in the row's emitted tokens gets log p = -inf, so no output
  contains the same n-gram twice (n = 1: no token twice). The first input token (BOS) is not part of the output
  and takes no part in n-grams.
* Scores are the model's log-probabilities of the emitted tokens, sum_t log p(y_t | y_<t, x). The length
  constraints and n-gram blocking only remove options; they never renormalise, and sampling's temperature /
  top-k / top-p change which token is drawn, not how it is scored.
* Decoding runs under ``torch.no_grad()``; put the model in ``eval()`` mode first (dropout).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from rnnkit import cancel
from rnnkit.checks import check_int
from rnnkit.state import map_state, named_state_tensors, select_rows

__all__ = [
    "LENGTH_PENALTIES",
    "DecodeResult",
    "Ensemble",
    "Hypothesis",
    "StepModel",
    "COVERAGE_FLOOR",
    "beam_search",
    "coverage_penalty",
    "filter_log_probs",
    "greedy_decode",
    "length_limits",
    "length_penalty",
    "map_state",
    "sample_decode",
    "translate",
]

LENGTH_PENALTIES = ("none", "avg", "gnmt")
DECODING_METHODS = ("greedy", "sample", "beam")


class StepModel(Protocol):
    """Anything with the decoder step of DESIGN section 3."""

    def step(self, prev_tokens: Tensor, state: Any) -> tuple[Tensor, Any]: ...


# ----------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Hypothesis:
    """One finished output sequence.

    Attributes:
        tokens: (L,) long, the emitted tokens; the last one is EOS. L counts the EOS.
        score: the ranking score, ``log_prob / lp(L)`` under the length penalty in use.
        log_prob: sum_t log p(y_t | y_<t, x) over the L tokens.
        attention: (L, S) attention weights of each step, or None if the model does not attend.
    """

    tokens: Tensor
    score: float
    log_prob: float
    attention: Tensor | None = None

    def __len__(self) -> int:
        return int(self.tokens.numel())


@dataclass(eq=False)
class DecodeResult:
    """A batch of single output sequences (greedy or sampled decoding).

    Attributes:
        tokens: (N, T') long; row n holds ``lengths[n]`` tokens (its EOS included, if it ended) then pad.
        lengths: (N,) long, the number of emitted tokens of each row, EOS included.
        scores: (N,) sum of the model's log-probabilities of each row's tokens.
        attention: (N, T', S) attention weights of each step (zeros past a row's end), or None.
    """

    tokens: Tensor
    lengths: Tensor
    scores: Tensor
    attention: Tensor | None = None

    def hypotheses(self) -> list[list[Hypothesis]]:
        """The rows as one-element hypothesis lists, as :func:`beam_search` returns (score = log_prob)."""
        result = []
        for n, (length, score) in enumerate(zip(self.lengths.tolist(), self.scores.tolist(), strict=True)):
            attention = None if self.attention is None else self.attention[n, :length].clone()
            result.append([Hypothesis(self.tokens[n, :length].clone(), score, score, attention)])
        return result


# ----------------------------------------------------------------------------------------------------------
# Ensembles
# ----------------------------------------------------------------------------------------------------------


class Ensemble(nn.Module):
    """Several step models decoding as one: at each step the mean of their probabilities::

        log p(y_t | y_<t, x) = log (1/M sum_m p_m(y_t | y_<t, x))

    (fairseq's ensemble decoding). Every strategy here decodes it as it decodes one model. The members must
    share the target vocabulary and the bos/eos/pad ids; for seq2seq models, the source vocabulary too.

    State: ``{"members": [each member's state], "attention": the members' mean attention (N, S), "valid":
    the first member's (N, S)}``, the last two where every member's state has them (the shared source makes
    their attention weights comparable).
    """

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        if len(models) < 2:
            raise ValueError(f"an ensemble needs at least two models, got {len(models)}")
        ids = [tuple(getattr(m, name, None) for name in ("bos_id", "eos_id", "pad_id")) for m in models]
        if len(set(ids)) != 1:
            raise ValueError(f"the models of an ensemble must share (bos_id, eos_id, pad_id), got {ids}")
        self.members = nn.ModuleList(models)
        self.bos_id, self.eos_id, self.pad_id = ids[0]

    def start(self, *inputs: Any) -> dict[str, Any]:
        """Every member's initial state (for seq2seq members: ``start(src, src_lengths)``)."""
        return self._joined([member.start(*inputs) for member in self.members])

    def step(self, prev_tokens: Tensor, state: Mapping[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        steps = [member.step(prev_tokens, own) for member, own in zip(self.members, state["members"], strict=True)]
        sizes = {tuple(log_probs.shape) for log_probs, _ in steps}
        if len(sizes) != 1:
            raise ValueError(f"the models of an ensemble must give log_probs of one shape, got {sorted(sizes)}")
        log_probs = torch.logsumexp(torch.stack([log_probs for log_probs, _ in steps]), dim=0)
        return log_probs - math.log(len(steps)), self._joined([own for _, own in steps])

    @staticmethod
    def _joined(states: list[Any]) -> dict[str, Any]:
        joined: dict[str, Any] = {"members": states}
        attention = [_attention_of(own) for own in states]
        if all(weights is not None for weights in attention):
            joined["attention"] = torch.stack(attention).mean(0)
            valid = _valid_of(states[0])
            if valid is not None:
                joined["valid"] = valid
        return joined


# ----------------------------------------------------------------------------------------------------------
# State handling
# ----------------------------------------------------------------------------------------------------------


def _attention_of(state: Any) -> Tensor | None:
    return state.get("attention") if isinstance(state, Mapping) else None


# ----------------------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------------------


def _resolve_ids(
    model: Any, bos_id: int | Tensor | None, eos_id: int | None, pad_id: int | None, *, eos_required: bool
) -> tuple[int | Tensor, int | None, int]:
    """Explicit ids win; otherwise the model's ``bos_id`` / ``eos_id`` / ``pad_id`` attributes (pad: 0)."""
    if bos_id is None:
        bos_id = getattr(model, "bos_id", None)
        if bos_id is None:
            raise ValueError("bos_id is required: pass it explicitly (the model has no bos_id attribute)")
    if eos_id is None:
        eos_id = getattr(model, "eos_id", None)
        if eos_id is None and eos_required:
            raise ValueError("eos_id is required: pass it explicitly (the model has no eos_id attribute)")
    if pad_id is None:
        pad_id = getattr(model, "pad_id", 0)
    return bos_id, eos_id, int(pad_id)


def _row_max_lengths(max_len: int | Tensor, min_len: int, n: int, device: torch.device) -> Tensor:
    """``max_len`` as a (N,) long tensor, one limit per row, after checking it and ``min_len`` against it."""
    if isinstance(max_len, Tensor):
        if max_len.shape != (n,) or max_len.is_floating_point() or max_len.dtype == torch.bool:
            raise ValueError(
                f"max_len as a tensor must hold one integer per row, shape ({n},), got "
                f"{max_len.dtype} {tuple(max_len.shape)}"
            )
        limits = max_len.to(device=device, dtype=torch.long)
        if n and int(limits.min()) < 1:
            raise ValueError(f"max_len must be >= 1 for every row, got {limits.tolist()}")
    else:
        limits = torch.full((n,), check_int("max_len", max_len, 1), dtype=torch.long, device=device)
    shortest = int(limits.min()) if n else 1
    if isinstance(min_len, bool) or not isinstance(min_len, int) or not 0 <= min_len <= shortest:
        raise ValueError(f"min_len must be an int in [0, max_len={shortest}], got {min_len!r}")
    return limits


def _first_tokens(bos_id: int | Tensor, state: Any) -> Tensor:
    """The (N,) first input tokens, checking that every state tensor has the same batch N as dim 0.

    ``bos_id`` may be a (N,) tensor giving each row its own first token: a language model continuing a
    prompt feeds the last prompt token of each row.
    """
    tensors = list(named_state_tensors(state))
    if isinstance(bos_id, Tensor):
        if bos_id.dim() != 1:
            raise ValueError(f"bos_id as a tensor must have shape (N,), got {tuple(bos_id.shape)}")
        first = bos_id.long()
    else:
        if not tensors:
            raise ValueError("cannot tell the batch size (the state holds no tensor): pass bos_id as (N,)")
        reference = tensors[0][1]
        if reference.dim() == 0:
            raise ValueError(f"{tensors[0][0]} is 0-dim; every state tensor needs the batch as dim 0")
        first = torch.full((reference.size(0),), int(bos_id), dtype=torch.long, device=reference.device)
    n = first.size(0)
    for path, tensor in tensors:
        if tensor.dim() == 0 or tensor.size(0) != n:
            raise ValueError(
                f"every state tensor must have the batch ({n}) as dim 0; "
                f"{path} has shape {tuple(tensor.shape)}"
            )
    return first


def _check_step_output(log_probs: Tensor, rows: int, attention: Tensor | None) -> None:
    if log_probs.dim() != 2 or log_probs.size(0) != rows:
        raise ValueError(f"model.step must give log_probs of shape ({rows}, V), got {tuple(log_probs.shape)}")
    if attention is not None and (attention.dim() != 2 or attention.size(0) != rows):
        raise ValueError(f"state['attention'] must have shape ({rows}, S), got {tuple(attention.shape)}")


# ----------------------------------------------------------------------------------------------------------
# Length constraints and penalties
# ----------------------------------------------------------------------------------------------------------


def _constrain(log_probs: Tensor, t: int, eos_id: int | None, min_len: int, max_len: Tensor) -> Tensor:
    """Apply the length limits to the log-probs (R, V) of step t (whose tokens make sequences of length t + 1);
    ``max_len`` (R,) holds each row's limit.

    Out of place: the model's tensor may be a view of its own buffers (a probability table).
    """
    if eos_id is None:
        return log_probs
    if t + 1 < min_len:  # ending now would be too short
        suppressed = log_probs.clone()
        suppressed[:, eos_id] = -math.inf
        return suppressed
    last = max_len == t + 1  # (R,) rows at their last allowed token: only EOS, with its own log-probability
    if bool(last.any()):
        only_eos = torch.full_like(log_probs, -math.inf)
        only_eos[:, eos_id] = log_probs[:, eos_id]
        return torch.where(last.unsqueeze(1), only_eos, log_probs)
    return log_probs


def _block_repeated_ngrams(log_probs: Tensor, history: Tensor, n: int) -> Tensor:
    """Forbid (log p = -inf) every token that would complete an n-gram already in its row's ``history``.

    log_probs (R, V); history (R, t) the tokens each row has emitted. An n-gram (h_i, ..., h_{i+n-1}) of the
    history whose first n - 1 tokens equal the row's last n - 1 tokens bans its last token h_{i+n-1}.
    Out of place, like :func:`_constrain`.
    """
    t = history.size(1)
    if n == 0 or t < n:  # no complete n-gram yet
        return log_probs
    ngrams = history.unfold(1, n, 1)  # (R, t - n + 1, n)
    suffix = history[:, t - n + 1 :]  # the last n - 1 tokens: (R, n - 1)
    repeats = (ngrams[:, :, :-1] == suffix.unsqueeze(1)).all(-1)  # (R, t - n + 1); all True for n = 1
    hits = torch.zeros_like(log_probs).scatter_add(1, ngrams[:, :, -1], repeats.to(log_probs.dtype))  # (R, V)
    return log_probs.masked_fill(hits > 0, -math.inf)


def length_penalty(length: Tensor | int, name: str = "avg", alpha: float = 0.0) -> Tensor | float:
    """The length penalty lp(L) that a hypothesis' log-probability is divided by: score = log p(y) / lp(L).

    L is the hypothesis length with its EOS counted (an int, or a tensor of lengths: the result has the same
    kind), alpha >= 0 the strength:

    * ``"none"``: lp(L) = 1 (alpha must be 0);
    * ``"avg"``:  lp(L) = L^alpha (DESIGN section 3); alpha = 0 is no normalisation, alpha = 1 the average
      log-probability per token;
    * ``"gnmt"``: lp(L) = ((5 + L) / 6)^alpha, Wu et al. 2016 ("Google's Neural Machine Translation System"),
      section 7, which they tune to alpha in [0.6, 0.7].

    Any alpha > 0 counteracts beam search's preference for short outputs (every token multiplies p(y) by
    a number <= 1). lp(L) >= 1 for L >= 1 and never decreases with L, which the stopping rule of
    :func:`beam_search` relies on.
    """
    _check_penalty(name, alpha)
    if isinstance(length, Tensor) and not length.is_floating_point():
        length = length.to(torch.get_default_dtype())
    if name == "gnmt":
        return ((5.0 + length) / 6.0) ** alpha
    if name == "avg":
        return length ** float(alpha)
    return torch.ones_like(length) if isinstance(length, Tensor) else 1.0


_length_penalty = length_penalty  # beam_search's argument `length_penalty` (the name) shadows the function


#: The coverage a source position counts with at least in :func:`coverage_penalty`, so that a position the
#: attention never touched (weight exactly 0, as outside a local-attention window) costs log(1e-20), not -inf.
COVERAGE_FLOOR = 1e-20


def coverage_penalty(attention: Tensor, beta: float, valid: Tensor | None = None) -> Tensor:
    """The coverage penalty of Wu et al. 2016 (GNMT, section 7) added to a finished hypothesis' score::

        cp(X; Y) = beta * sum_i log(min(sum_j p_ij, 1.0))

    p_ij the attention weight of target step j on source position i: a source position that the output has
    attended to less than once in total lowers the score, so beam search prefers outputs that cover the whole
    source (against dropped words). cp <= 0, and 0 once every position has received a total weight >= 1.

    Args:
        attention: (..., L, S) the weights of each of the L target steps. beta >= 0 the strength.
        valid: (..., S) bool, True at real source positions (default: all); padding is left out of the sum.

    Returns:
        (...) the penalty; each total weight is floored at :data:`COVERAGE_FLOOR` before the log.
    """
    _check_coverage_penalty(beta)
    coverage = attention.sum(-2).clamp(COVERAGE_FLOOR, 1.0)  # min(sum_j p_ij, 1): (..., S)
    log_coverage = coverage.log()
    if valid is not None:
        log_coverage = log_coverage.masked_fill(~valid, 0.0)
    return beta * log_coverage.sum(-1)


_coverage_penalty = coverage_penalty  # shadowed by beam_search's argument `coverage_penalty` (beta)


def _check_coverage_penalty(beta: float) -> None:
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"coverage_penalty (beta) must be a finite number >= 0, got {beta!r}")


def _valid_of(state: Any) -> Tensor | None:
    return state.get("valid") if isinstance(state, Mapping) else None


def _check_penalty(name: str, alpha: float) -> None:
    if name not in LENGTH_PENALTIES:
        raise ValueError(f"length_penalty must be one of {LENGTH_PENALTIES}, got {name!r}")
    if not isinstance(alpha, int | float) or not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    if name == "none" and alpha != 0:
        raise ValueError(f"length_penalty='none' takes no alpha (got alpha={alpha}); use 'avg' or 'gnmt'")


# ----------------------------------------------------------------------------------------------------------
# Greedy decoding and sampling
# ----------------------------------------------------------------------------------------------------------


def _generate(
    model: StepModel,
    state: Any,
    choose: Callable[[Tensor], Tensor],
    *,
    first: Tensor,
    eos_id: int | None,
    pad_id: int,
    max_len: Tensor,
    min_len: int,
    no_repeat_ngram_size: int,
) -> DecodeResult:
    """One token per row and step, picked by ``choose(log_probs (N, V)) -> (N,)``, until all rows end;
    ``max_len`` (N,) holds each row's limit."""
    n = first.size(0)
    prev = first  # (N,)
    ended = torch.zeros(n, dtype=torch.bool, device=first.device)  # (N,) True once a row has emitted EOS
    lengths = torch.zeros(n, dtype=torch.long, device=first.device)
    scores: Tensor | None = None
    token_columns: list[Tensor] = []
    attention_columns: list[Tensor] = []
    for t in range(int(max_len.max()) if n else 0):
        cancel.check()  # a cancelled request (rnnkit serve) stops here, between two steps
        log_probs, state = model.step(prev, state)  # (N, V)
        attention = _attention_of(state)  # (N, S) or None
        _check_step_output(log_probs, n, attention)
        if no_repeat_ngram_size and token_columns:
            log_probs = _block_repeated_ngrams(log_probs, torch.stack(token_columns, 1), no_repeat_ngram_size)
        log_probs = _constrain(log_probs, t, eos_id, min_len, max_len)
        forced = max_len == t + 1 if eos_id is not None else torch.zeros_like(ended)  # (N,) must end now
        if bool(forced.all()):
            token = torch.full_like(prev, eos_id)  # every row ends: choose() might see an all -inf row
        else:  # choose() never sees a forced row (it may be all -inf); those rows get EOS
            token = choose(log_probs.masked_fill(forced.unsqueeze(1), 0.0))  # (N,)
            if eos_id is not None:
                token = token.masked_fill(forced, eos_id)
        token_log_prob = log_probs.gather(1, token.unsqueeze(1)).squeeze(1)  # (N,)
        step_score = torch.where(ended, torch.zeros_like(token_log_prob), token_log_prob)
        scores = step_score if scores is None else scores + step_score
        token = token.masked_fill(ended, pad_id)  # rows that have ended emit padding
        lengths = lengths + (~ended).long()
        token_columns.append(token)
        if attention is not None:
            attention_columns.append(attention.masked_fill(ended.unsqueeze(1), 0.0))
        ended = ended | (lengths >= max_len)
        if eos_id is not None:
            ended = ended | (token == eos_id)
        if bool(ended.all()):
            break
        prev = token
    attention = torch.stack(attention_columns, dim=1) if attention_columns else None  # (N, T', S)
    return DecodeResult(torch.stack(token_columns, dim=1), lengths, scores, attention)  # tokens (N, T')


@torch.no_grad()
def greedy_decode(
    model: StepModel,
    state: Any,
    *,
    bos_id: int | Tensor | None = None,
    eos_id: int | None = None,
    pad_id: int | None = None,
    max_len: int | Tensor,
    min_len: int = 0,
    no_repeat_ngram_size: int = 0,
) -> DecodeResult:
    """Greedy decoding: y_t = argmax_v log p(v | y_<t, x) at every step, until EOS or ``max_len``.

    Args:
        model: has ``step(prev_tokens (N,), state) -> (log_probs (N, V), state)``.
        state: the initial state, every tensor with the batch N as dim 0.
        bos_id: the first input token, an int or a (N,) tensor (default: ``model.bos_id``).
        eos_id: the end token (default: ``model.eos_id``). If neither is given, rows never end and exactly
            ``max_len`` tokens are generated (a language model without an end token).
        pad_id: fills rows after their end (default: ``model.pad_id``, else 0).
        max_len / min_len: the largest / smallest length, EOS counted; ``max_len`` an int or a (N,) tensor
            of per-row limits (see the module docstring).
        no_repeat_ngram_size: n > 0 forbids repeating any n-gram of the output (0: off).

    Returns:
        :class:`DecodeResult` with tokens (N, T'), lengths (N,), scores (N,) and attention (N, T', S) or None.
    """
    bos_id, eos_id, pad_id = _resolve_ids(model, bos_id, eos_id, pad_id, eos_required=False)
    first = _first_tokens(bos_id, state)
    max_len = _row_max_lengths(max_len, min_len, first.size(0), first.device)
    return _generate(
        model, state, lambda lp: lp.argmax(dim=1),
        first=first, eos_id=eos_id, pad_id=pad_id, max_len=max_len, min_len=min_len,
        no_repeat_ngram_size=check_int("no_repeat_ngram_size", no_repeat_ngram_size, 0),
    )  # fmt: skip


def filter_log_probs(
    log_probs: Tensor, *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> Tensor:
    """The log of the sampling distribution built from the model's log-probabilities (N, V), in this order:

    1. temperature T > 0: p_T(v) = exp(log p(v) / T) / sum_u exp(log p(u) / T), i.e. p_T ∝ p^(1/T)
       (the Boltzmann temperature, as in Ackley et al. 1985); T < 1 sharpens the distribution, T > 1
       flattens it;
    2. top-k: keep exactly the k most probable tokens (Fan et al. 2018), ties broken by the sort;
    3. top-p (nucleus, Holtzman et al. 2020): keep the smallest set of most probable tokens whose mass is
       >= p, i.e. token v stays if the mass of the tokens ranked strictly before it is < p;

    then renormalise. ``top_k=None`` and ``top_p=None`` (or 1.0) disable the filters. T = 0 is greedy
    decoding and is handled by :func:`sample_decode`, not here.
    """
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0 here, got {temperature!r}")
    _check_filters(top_k, top_p)
    logits = log_probs / temperature  # (N, V)
    if top_k is not None and top_k < logits.size(-1):
        kept = logits.topk(top_k, dim=-1).indices  # (N, k)
        in_top_k = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, kept, True)  # (N, V)
        logits = logits.masked_fill(~in_top_k, -math.inf)
    if top_p is not None and top_p < 1:
        probs = logits.softmax(dim=-1)  # (N, V)
        sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)  # (N, V)
        # the mass of the tokens ranked strictly before each one: an exclusive cumulative sum (N, V)
        mass_before = torch.nn.functional.pad(sorted_probs.cumsum(dim=-1)[:, :-1], (1, 0))
        in_nucleus = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, mass_before < top_p)
        logits = logits.masked_fill(~in_nucleus, -math.inf)
    return logits.log_softmax(dim=-1)


def _check_filters(top_k: int | None, top_p: float | None) -> None:
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an int >= 1 (or None), got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, int | float) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be a number in (0, 1] (or None), got {top_p!r}")


@torch.no_grad()
def sample_decode(
    model: StepModel,
    state: Any,
    *,
    bos_id: int | Tensor | None = None,
    eos_id: int | None = None,
    pad_id: int | None = None,
    max_len: int | Tensor,
    min_len: int = 0,
    no_repeat_ngram_size: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> DecodeResult:
    """Ancestral sampling: y_t ~ q(. | y_<t, x), q being p after temperature, top-k and top-p
    (see :func:`filter_log_probs`), until EOS or ``max_len``.

    ``temperature=0`` is the limit T -> 0 of p^(1/T), the one-hot on the argmax: it IS greedy decoding
    (same tokens and scores as :func:`greedy_decode`, no randomness used). Negative temperatures are rejected.
    ``generator`` (a ``torch.Generator``) makes the draws reproducible. The scores are the model's
    log-probabilities of the drawn tokens, not q's. Other arguments as in :func:`greedy_decode`.
    """
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    bos_id, eos_id, pad_id = _resolve_ids(model, bos_id, eos_id, pad_id, eos_required=False)
    first = _first_tokens(bos_id, state)
    max_len = _row_max_lengths(max_len, min_len, first.size(0), first.device)
    _check_filters(top_k, top_p)

    def choose(log_probs: Tensor) -> Tensor:
        if temperature == 0:
            return log_probs.argmax(dim=1)
        q = filter_log_probs(log_probs, temperature=temperature, top_k=top_k, top_p=top_p).exp()  # (N, V)
        return torch.multinomial(q, 1, generator=generator).squeeze(1)  # (N,)

    return _generate(
        model, state, choose, first=first, eos_id=eos_id, pad_id=pad_id, max_len=max_len, min_len=min_len,
        no_repeat_ngram_size=check_int("no_repeat_ngram_size", no_repeat_ngram_size, 0),
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# Beam search
# ----------------------------------------------------------------------------------------------------------


class _FinishedPool:
    """The n-best finished hypotheses of every sentence, best first, as tensors (no Python lists per step).

    Shapes (N sentences, F = n_best, T = max_len): score, log_prob (N, F); length (N, F); tokens (N, F, T)
    padded; attention (N, F, T, S) or None. Empty slots have score -inf.
    """

    def __init__(self, n: int, n_best: int, max_len: int, pad_id: int, like: Tensor) -> None:
        self.score = torch.full((n, n_best), -math.inf, dtype=like.dtype, device=like.device)
        self.log_prob = torch.full_like(self.score, -math.inf)
        self.length = torch.zeros((n, n_best), dtype=torch.long, device=like.device)
        self.tokens = torch.full((n, n_best, max_len), pad_id, dtype=torch.long, device=like.device)
        self.attention: Tensor | None = None
        self.pad_id = pad_id

    def worst_score(self, sentence: Tensor) -> Tensor:
        """(B,) the score a new hypothesis must beat to enter the n-best (-inf while it is not full)."""
        return self.score[sentence, -1]

    def add(
        self, sentence: Tensor, score: Tensor, log_prob: Tensor, length: int, tokens: Tensor,
        attention: Tensor | None,
    ) -> None:  # fmt: skip
        """Merge new hypotheses into the n-best of the active sentences ``sentence`` (B,).

        score, log_prob: (B, K), -inf where there is no new hypothesis; tokens: (B, K, length);
        attention: (B, K, length, S) or None. On equal scores the earlier finished hypothesis stays ahead,
        so a later one never displaces an equal one (the stopping rule relies on it).
        """
        b, k = score.shape
        n_best, max_len = self.tokens.shape[1:]
        tokens = torch.nn.functional.pad(tokens, (0, max_len - length), value=self.pad_id)  # (B, K, T)
        merged_score = torch.cat([self.score[sentence], score], dim=1)  # (B, F + K)
        best = merged_score.argsort(dim=1, descending=True, stable=True)[:, :n_best]  # (B, F)
        self.score[sentence] = merged_score.gather(1, best)
        self.log_prob[sentence] = torch.cat([self.log_prob[sentence], log_prob], dim=1).gather(1, best)
        new_length = torch.full((b, k), length, dtype=torch.long, device=score.device)
        self.length[sentence] = torch.cat([self.length[sentence], new_length], dim=1).gather(1, best)
        merged_tokens = torch.cat([self.tokens[sentence], tokens], dim=1)  # (B, F + K, T)
        self.tokens[sentence] = merged_tokens.gather(1, best.unsqueeze(2).expand(-1, -1, max_len))
        if attention is not None:
            s = attention.size(-1)
            if self.attention is None:
                n = self.score.size(0)
                self.attention = attention.new_zeros((n, n_best, max_len, s))
            attention = torch.nn.functional.pad(attention, (0, 0, 0, max_len - length))  # (B, K, T, S)
            merged_attention = torch.cat([self.attention[sentence], attention], dim=1)  # (B, F + K, T, S)
            self.attention[sentence] = merged_attention.gather(
                1, best[:, :, None, None].expand(-1, -1, max_len, s)
            )

    def hypotheses(self) -> list[list[Hypothesis]]:
        """Final assembly (Python is fine here): per sentence, its finite-score hypotheses, best first."""
        result = []
        scores, log_probs, lengths = self.score.tolist(), self.log_prob.tolist(), self.length.tolist()
        for n, (sentence_scores, sentence_log_probs, sentence_lengths) in enumerate(
            zip(scores, log_probs, lengths, strict=True)
        ):
            hypotheses = []
            for f, (score, log_prob, length) in enumerate(
                zip(sentence_scores, sentence_log_probs, sentence_lengths, strict=True)
            ):
                if not math.isfinite(score):  # empty slot (or a probability-0 sequence): never returned
                    break
                attention = None if self.attention is None else self.attention[n, f, :length].clone()
                hypotheses.append(Hypothesis(self.tokens[n, f, :length].clone(), score, log_prob, attention))
            result.append(hypotheses)
        return result


@torch.no_grad()
def beam_search(
    model: StepModel,
    state: Any,
    *,
    bos_id: int | Tensor | None = None,
    eos_id: int | None = None,
    pad_id: int | None = None,
    beam_size: int = 5,
    max_len: int | Tensor,
    min_len: int = 0,
    n_best: int = 1,
    length_penalty: str = "avg",
    alpha: float = 0.0,
    coverage_penalty: float = 0.0,
    no_repeat_ngram_size: int = 0,
) -> list[list[Hypothesis]]:
    """Batched beam search: N sentences x K beams in one (N*K)-row batch, one ``model.step`` per time step.

    Each sentence searches for the output y maximising

        score(y) = log p(y | x) / lp(|y|) + cp(y),   log p(y | x) = sum_t log p(y_t | y_<t, x),

    with |y| counting the EOS, lp from :func:`length_penalty` (``"avg"``: |y|^alpha, alpha = 0 being no
    normalisation; ``"gnmt"``: ((5 + |y|) / 6)^alpha; ``"none"``) and cp the coverage penalty of Wu et al. 2016
    (GNMT, section 7) with weight beta = ``coverage_penalty`` (0: off; see :func:`coverage_penalty`). Every step
    runs in four named parts:

    1. pick: for each sentence, the 2K best one-token extensions of its K live hypotheses by log-probability
       (a per-sentence top-k over its K*V candidates, never a batch-wide one), after n-gram blocking. All
       candidates of a step have the same length, so ranking them by log-probability or by length-normalised
       score is the same; the coverage penalty, as in GNMT, re-ranks finished hypotheses only.
    2. finish: a candidate ending in EOS that ranks among the K best finishes (the rule of fairseq's
       ``SequenceGenerator``); it enters the sentence's n-best pool if its score is high enough.
    3. advance: the K best candidates that do not end in EOS become the live beam (2K candidates always hold
       K of them, as at most K candidates end in EOS): finished hypotheses leave the beam and it stays full.
    4. drop finished: a sentence stops when no live hypothesis can still enter its n-best. Because log-probs
       are <= 0, lp grows with length and cp <= 0, a live hypothesis with log-probability s can at best finish
       with score s / lp(max_len); the sentence stops once its n-best pool is full and its worst entry scores
       at least the best live hypothesis' bound (ties go to the earlier hypothesis). The rule is exact: it never
       changes the result compared with searching to ``max_len``. With alpha = 0 the bound is s itself, so the
       search stops as soon as the live beam cannot improve; with alpha > 0 it runs longer, because a longer
       hypothesis can still win. Stopped sentences leave the batch (their state rows are dropped).

    With K = 1, no length normalisation and no coverage penalty this is greedy decoding with the same
    ``no_repeat_ngram_size``: same tokens, same log-probability (either penalty can let a longer hypothesis win,
    even at K = 1; greedy's output is then among those finished and scores no better). The result for a
    sentence does not depend on the other sentences of the batch or on the batch size (as long as the model
    computes each row independently).

    Args:
        model: has ``step(prev_tokens (N,), state) -> (log_probs (N, V), state)``; the log-probs must be
            true log-probabilities (<= 0), which the stopping rule relies on.
        state: the initial state (e.g. ``model.start(src, src_lengths)``), every tensor with the batch N as
            dim 0; it is expanded to N*K rows here.
        bos_id / eos_id / pad_id: default to the model's attributes; ``bos_id`` may be a (N,) tensor.
        beam_size: K >= 1, the number of live hypotheses per sentence.
        max_len / min_len: the largest / smallest output length, EOS counted; ``max_len`` an int or a (N,)
            tensor, one limit per sentence (see the module docstring).
        n_best: how many finished hypotheses to return per sentence, 1 <= n_best <= beam_size.
        length_penalty: ``"avg"`` (default), ``"gnmt"`` or ``"none"``; alpha >= 0 its strength.
        coverage_penalty: beta >= 0 of the GNMT coverage penalty; > 0 needs a model that records attention
            (``state["attention"]``); ``state["valid"]`` (N, S) bool, if the state has it, says which source
            positions are real (the others are left out of the sum).
        no_repeat_ngram_size: n > 0 forbids repeating any n-gram within a hypothesis (0: off).

    Returns:
        For each sentence, up to ``n_best`` :class:`Hypothesis` (tokens with EOS, score, log_prob and the
        (L, S) attention of each step or None), best score first. Sequences of probability 0 are never
        returned, so a list is shorter than ``n_best`` only if the search met fewer sequences of
        probability > 0 (a tiny vocabulary, or a model giving EOS probability 0 at ``max_len``).
    """
    bos_id, eos_id, pad_id = _resolve_ids(model, bos_id, eos_id, pad_id, eos_required=True)
    check_int("beam_size", beam_size, 1)
    if isinstance(n_best, bool) or not isinstance(n_best, int) or not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be an int in [1, beam_size={beam_size}], got {n_best!r}")
    _check_penalty(length_penalty, alpha)
    _check_coverage_penalty(coverage_penalty)
    ngram = check_int("no_repeat_ngram_size", no_repeat_ngram_size, 0)
    first = _first_tokens(bos_id, state)
    n, k = first.size(0), beam_size
    sentence_max_len = _row_max_lengths(max_len, min_len, n, first.device)  # (N,)
    longest = int(sentence_max_len.max()) if n else 0

    # Row b*K + j of the (B*K)-row batch is beam j of active sentence b; `sentence` maps b to its index in
    # the caller's batch. At the start every beam holds the same empty prefix: only beam 0 is live
    # (log-prob 0), the others -inf, so the first step does not pick the same token K times.
    expand = torch.arange(n, device=first.device).repeat_interleave(k)  # (N*K,)
    state = select_rows(state, expand)
    prev = first.index_select(0, expand)  # (B*K,)
    sentence = torch.arange(n, device=first.device)  # (B,)
    alive_tokens = torch.zeros((n * k, 0), dtype=torch.long, device=first.device)  # (B*K, t)
    alive_attention: Tensor | None = None  # (B*K, t, S)
    alive_log_prob: Tensor | None = None  # (B, K), live hypotheses best first
    pool: _FinishedPool | None = None

    for t in range(longest):  # step t emits token t + 1 (1-based): candidates have length t + 1
        cancel.check()  # a cancelled request (rnnkit serve) stops here, between two steps
        b = sentence.size(0)
        log_probs, state = model.step(prev, state)  # (B*K, V)
        attention = _attention_of(state)  # (B*K, S) or None
        _check_step_output(log_probs, b * k, attention)
        vocab = log_probs.size(1)
        if vocab < 2 or not 0 <= eos_id < vocab:
            raise ValueError(
                f"beam search needs a vocabulary of >= 2 tokens including eos_id={eos_id}, "
                f"model.step returned V={vocab}"
            )
        if coverage_penalty and attention is None:
            raise ValueError("coverage_penalty needs the model's attention: state['attention'] after each step")
        if alive_log_prob is None:
            alive_log_prob = log_probs.new_full((b, k), -math.inf)
            alive_log_prob[:, 0] = 0.0
            pool = _FinishedPool(n, n_best, longest, pad_id, log_probs)
        row_max_len = sentence_max_len.index_select(0, sentence).repeat_interleave(k)  # (B*K,)
        log_probs = _block_repeated_ngrams(log_probs, alive_tokens, ngram)
        log_probs = _constrain(log_probs, t, eos_id, min_len, row_max_len)

        # 1. pick: the 2K best extensions per sentence over its K*V candidates.
        candidates = (alive_log_prob.reshape(b * k, 1) + log_probs).reshape(b, k * vocab)  # (B, K*V)
        n_picked = min(2 * k, k * vocab)
        picked_log_prob, picked = candidates.topk(n_picked, dim=1)  # (B, 2K), best first
        picked_token = picked % vocab  # (B, 2K)
        offset = torch.arange(b, device=picked.device).unsqueeze(1) * k  # (B, 1) the row of each beam 0
        picked_row = picked // vocab + offset  # (B, 2K) row of the parent hypothesis
        ends = picked_token == eos_id  # (B, 2K)

        # 2. finish: EOS candidates among the K best (and of probability > 0) enter the n-best pool.
        finishing = ends[:, :k] & torch.isfinite(picked_log_prob[:, :k])  # (B, K)
        if bool(finishing.any()):
            end_log_prob = picked_log_prob[:, :k].masked_fill(~finishing, -math.inf)  # (B, K)
            end_score = end_log_prob / _length_penalty(t + 1, length_penalty, alpha)
            parent = picked_row[:, :k].reshape(-1)  # (B*K,)
            end_tokens = torch.cat(
                [alive_tokens.index_select(0, parent), picked_token[:, :k].reshape(-1, 1)], dim=1
            )  # (B*K, t+1)
            end_attention = None
            if attention is not None:  # the parent's history, then this step's weights
                end_attention = _extend_history(alive_attention, attention, parent)  # (B*K, t+1, S)
                if coverage_penalty:
                    valid = _valid_of(state)
                    valid = None if valid is None else valid.index_select(0, parent)
                    penalty = _coverage_penalty(end_attention, coverage_penalty, valid)  # (B*K,)
                    end_score = end_score + penalty.reshape(b, k)
                end_attention = end_attention.reshape(b, k, t + 1, -1)  # (B, K, t+1, S)
            pool.add(sentence, end_score, end_log_prob, t + 1, end_tokens.reshape(b, k, t + 1), end_attention)
        if t + 1 == longest:
            break

        # 3. advance: the K best candidates not ending in EOS live on. Ranking EOS candidates after all
        # others (rank + 2K) and taking the K smallest ranks keeps the best-first order.
        rank = torch.arange(n_picked, device=picked.device) + ends.long() * n_picked  # (B, 2K)
        live = rank.argsort(dim=1)[:, :k]  # (B, K) positions among the picked
        alive_log_prob = picked_log_prob.gather(1, live)  # (B, K)
        parent = picked_row.gather(1, live).reshape(-1)  # (B*K,)
        prev = picked_token.gather(1, live).reshape(-1)  # (B*K,)
        alive_tokens = torch.cat([alive_tokens.index_select(0, parent), prev.unsqueeze(1)], 1)  # (B*K, t+1)
        if attention is not None:  # reorder the history with the beam, then append this step's weights
            alive_attention = _extend_history(alive_attention, attention, parent)  # (B*K, t+1, S)
        state = select_rows(state, parent)

        # 4. drop finished: sentences whose best live hypothesis cannot enter their n-best any more, and
        # sentences at their own length limit.
        own_max_len = sentence_max_len.index_select(0, sentence)  # (B,)
        bound = _length_penalty(own_max_len.to(alive_log_prob.dtype), length_penalty, alpha)  # lp(max_len)
        best_possible = alive_log_prob[:, 0] / bound  # (B,)
        done = (pool.worst_score(sentence) >= best_possible) | (own_max_len <= t + 1)  # (B,)
        if bool(done.any()):
            remaining = (~done).nonzero().squeeze(1)  # (B',)
            if remaining.numel() == 0:
                break
            beams = torch.arange(k, device=remaining.device)
            rows = (remaining.unsqueeze(1) * k + beams).reshape(-1)  # (B'*K,)
            sentence = sentence.index_select(0, remaining)
            alive_log_prob = alive_log_prob.index_select(0, remaining)
            alive_tokens = alive_tokens.index_select(0, rows)
            if alive_attention is not None:
                alive_attention = alive_attention.index_select(0, rows)
            prev = prev.index_select(0, rows)
            state = select_rows(state, rows)

    return pool.hypotheses() if pool is not None else [[] for _ in range(n)]


def length_limits(src_lengths: Tensor, max_len_a: float = 2.0, max_len_b: int = 10) -> Tensor:
    """Per-sentence output length limits (N,) long: floor(max_len_a * source length + max_len_b), EOS counted.

    fairseq's ``--max-len-a`` / ``--max-len-b`` rule, applied to each sentence's own length rather than the
    batch's longest, so that a sentence's limit (and hence its output) does not depend on its batch.
    """
    if isinstance(max_len_a, bool) or not isinstance(max_len_a, int | float) or not (
        math.isfinite(max_len_a) and max_len_a >= 0
    ):
        raise ValueError(f"max_len_a must be a finite number >= 0, got {max_len_a!r}")
    check_int("max_len_b", max_len_b, 0)
    lengths = torch.as_tensor(src_lengths)
    if lengths.dim() != 1 or lengths.is_floating_point():
        raise ValueError(f"src_lengths must be a (N,) integer tensor, got {lengths.dtype} {tuple(lengths.shape)}")
    limits = torch.floor(lengths.double() * max_len_a + max_len_b).long()  # (N,)
    if limits.numel() and int(limits.min()) < 1:
        raise ValueError(
            f"max_len_a * source length + max_len_b must be >= 1 for every sentence; with max_len_a={max_len_a} "
            f"and max_len_b={max_len_b} the shortest source (length {int(lengths.min())}) gets {int(limits.min())}"
        )
    return limits


def _extend_history(history: Tensor | None, current: Tensor, parent: Tensor) -> Tensor:
    """Per new hypothesis, its parent's history (R, t, S) followed by the parent row's ``current`` (R, S):
    (R', t+1, S) for ``parent`` (R',)."""
    this_step = current.index_select(0, parent).unsqueeze(1)  # (R', 1, S)
    if history is None:
        return this_step
    return torch.cat([history.index_select(0, parent), this_step], dim=1)


# ----------------------------------------------------------------------------------------------------------
# Seq2seq convenience
# ----------------------------------------------------------------------------------------------------------


def translate(
    model: Any,
    src: Tensor,
    src_lengths: Tensor,
    *,
    method: str = "beam",
    max_len: int | Tensor | None = None,
    max_len_a: float = 2.0,
    max_len_b: int = 10,
    **options: Any,
) -> list[list[Hypothesis]]:
    """Decode a batch of source sentences with a seq2seq model: ``state = model.start(src, src_lengths)``,
    then :func:`greedy_decode`, :func:`sample_decode` or :func:`beam_search` by ``method``.

    Each sentence's output is at most ``max_len_a * (its source length) + max_len_b`` tokens long, EOS
    included (:func:`length_limits`); an explicit ``max_len`` (an int, or a (N,) tensor) replaces that rule.
    ``options`` go to the chosen function (beam_size, n_best, length_penalty, alpha, coverage_penalty,
    no_repeat_ngram_size, min_len, temperature, top_k, top_p, generator, ...). Returns, per sentence, its
    hypotheses best first (one for greedy and sampling, whose score is the log-probability).
    """
    if method not in DECODING_METHODS:
        raise ValueError(f"method must be one of {DECODING_METHODS}, got {method!r}")
    if not hasattr(model, "start"):
        raise ValueError(f"translate needs a model with start(src, src_lengths), got {type(model).__name__}")
    if max_len is None:
        max_len = length_limits(src_lengths, max_len_a, max_len_b)
    with torch.no_grad():
        state = model.start(src, src_lengths)
    if method == "beam":
        return beam_search(model, state, max_len=max_len, **options)
    decode = greedy_decode if method == "greedy" else sample_decode
    return decode(model, state, max_len=max_len, **options).hypotheses()
