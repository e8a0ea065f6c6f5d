r"""The linear-chain conditional random field, the output layer of a tagger: sentence-level likelihood by the
forward algorithm, best tag sequence by Viterbi.

Example::

    crf = CRF(num_tags=5)
    loss = crf(emissions, tags, valid)          # mean -log p(tags | x): emissions (B, T, 5), valid (B, T)
    best = crf.decode(emissions, valid)         # list of tag-id lists, one per sentence
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.checks import check_size

__all__ = ["CRF"]


def _check_prefix_mask(valid: Tensor, emissions: Tensor) -> Tensor:
    """``valid`` (B, T) bool, True on a non-empty prefix of every row (right padding)."""
    if emissions.dim() != 3:
        raise ValueError(f"emissions must have shape (B, T, K), got {tuple(emissions.shape)}")
    if valid is None:
        return torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
    if valid.shape != emissions.shape[:2]:
        expected = tuple(emissions.shape[:2])
        raise ValueError(f"valid must have shape (B, T) = {expected}, got {tuple(valid.shape)}")
    valid = valid.to(torch.bool)
    if valid.size(1) and not bool(valid[:, 0].all()):
        raise ValueError("every sequence needs at least one valid step: valid[:, 0] must be True")
    if bool((valid[:, 1:] & ~valid[:, :-1]).any()):
        raise ValueError("valid must be True on a prefix of each row (right padding), found a gap")
    return valid


class CRF(nn.Module):
    r"""Linear-chain conditional random field over K tags (Lafferty et al. 2001), as the output layer of a
    BiLSTM tagger (Huang et al. 2015; Lample et al. 2016).

    The score of a tag sequence y_1..y_n of a sentence with emission scores E (n, K) is

        s(y) = a_start[y_1] + sum_{t=1..n} E[t, y_t] + sum_{t=2..n} A[y_{t-1}, y_t] + a_end[y_n],

    with ``transitions`` A (K, K) (A[i, j]: tag i followed by tag j), ``start_transitions`` a_start (K,) and
    ``end_transitions`` a_end (K,). p(y | x) = exp(s(y)) / Z, Z = sum over all K^n sequences of exp(s(y')),
    computed by the forward algorithm in O(n K^2):

        alpha_1 = a_start + E[1],  alpha_t[j] = logsumexp_i(alpha_{t-1}[i] + A[i, j]) + E[t, j],
        log Z = logsumexp_j(alpha_n[j] + a_end[j]);

    the best sequence argmax_y s(y) by Viterbi (max instead of logsumexp, with back-pointers).

    Batches are right-padded: ``valid`` (B, T) is True at the real steps (a prefix of each row); past a
    sequence's end alpha is carried unchanged, so each sequence is scored over its own n steps.
    """

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        check_size("num_tags", num_tags)
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Small uniform values in [-0.1, 0.1], so no transition is preferred at the start."""
        for parameter in (self.transitions, self.start_transitions, self.end_transitions):
            nn.init.uniform_(parameter, -0.1, 0.1)

    def _check(self, emissions: Tensor, valid: Tensor | None) -> Tensor:
        valid = _check_prefix_mask(valid, emissions)
        if emissions.size(2) != self.num_tags:
            raise ValueError(f"emissions must have K={self.num_tags} scores a step, got {emissions.size(2)}")
        if emissions.size(1) == 0:
            raise ValueError("emissions must have at least one time step")
        return valid

    def score(self, emissions: Tensor, tags: Tensor, valid: Tensor | None = None) -> Tensor:
        """s(y) of the given tag sequences: emissions (B, T, K), tags (B, T) long, valid (B, T) -> (B,)."""
        valid = self._check(emissions, valid)
        if tags.shape != valid.shape:
            raise ValueError(f"tags must have shape (B, T) = {tuple(valid.shape)}, got {tuple(tags.shape)}")
        tags = tags.long().masked_fill(~valid, 0)  # padding tags are ignored; any in-range id will do
        emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T) E[t, y_t]
        transition = self.transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1) A[y_{t-1}, y_t]
        total = (emitted * valid).sum(dim=1) + (transition * valid[:, 1:]).sum(dim=1)  # (B,)
        lengths = valid.sum(dim=1)  # (B,)
        last_tags = tags.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)  # (B,) y_n
        return total + self.start_transitions[tags[:, 0]] + self.end_transitions[last_tags]

    def log_partition(self, emissions: Tensor, valid: Tensor | None = None) -> Tensor:
        """log Z of each sequence by the forward algorithm: emissions (B, T, K), valid (B, T) -> (B,)."""
        valid = self._check(emissions, valid)
        alpha = self.start_transitions + emissions[:, 0]  # (B, K)
        for t in range(1, emissions.size(1)):
            # alpha_t[j] = logsumexp_i(alpha_{t-1}[i] + A[i, j]) + E[t, j]
            extended = torch.logsumexp(alpha.unsqueeze(2) + self.transitions, dim=1)  # (B, K)
            extended = extended + emissions[:, t]
            alpha = torch.where(valid[:, t].unsqueeze(1), extended, alpha)  # padding: carry alpha unchanged
        return torch.logsumexp(alpha + self.end_transitions, dim=1)  # (B,)

    def log_likelihood(self, emissions: Tensor, tags: Tensor, valid: Tensor | None = None) -> Tensor:
        """log p(y | x) = s(y) - log Z for each sequence, (B,)."""
        return self.score(emissions, tags, valid) - self.log_partition(emissions, valid)

    def forward(
        self, emissions: Tensor, tags: Tensor, valid: Tensor | None = None, reduction: str = "mean"
    ) -> Tensor:
        """-log p(y | x), the negative log-likelihood: "mean" / "sum" over the batch, or "none" (B,)."""
        nll = -self.log_likelihood(emissions, tags, valid)  # (B,)
        if reduction == "none":
            return nll
        if reduction == "sum":
            return nll.sum()
        if reduction == "mean":
            return nll.mean()
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")

    @torch.no_grad()
    def viterbi(self, emissions: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The best tag sequences and their scores s(y*).

        Returns ``(tags (B, T) long, 0 past each sequence's end; scores (B,))``.
        """
        valid = self._check(emissions, valid)
        batch_size, max_length, num_tags = emissions.shape
        identity = torch.arange(num_tags, device=emissions.device).expand(batch_size, num_tags)  # (B, K)
        delta = self.start_transitions + emissions[:, 0]  # (B, K) best score of a path ending in each tag
        back_pointers = []
        for t in range(1, max_length):
            # delta_t[j] = max_i(delta_{t-1}[i] + A[i, j]) + E[t, j]; psi_t[j] = the argmax i.
            best, best_previous = (delta.unsqueeze(2) + self.transitions).max(dim=1)  # (B, K) each
            step_valid = valid[:, t].unsqueeze(1)  # (B, 1)
            delta = torch.where(step_valid, best + emissions[:, t], delta)
            # Past the end the pointer is the identity, so backtracking passes through padding unchanged.
            back_pointers.append(torch.where(step_valid, best_previous, identity))
        scores, last = (delta + self.end_transitions).max(dim=1)  # (B,), (B,)
        path = [last]
        for pointers in reversed(back_pointers):
            path.append(pointers.gather(1, path[-1].unsqueeze(1)).squeeze(1))
        tags = torch.stack(path[::-1], dim=1)  # (B, T)
        return tags.masked_fill(~valid, 0), scores

    def decode(self, emissions: Tensor, valid: Tensor | None = None) -> list[list[int]]:
        """The best tag sequence of each sentence, as a list of its n tag ids."""
        valid = self._check(emissions, valid)
        tags, _ = self.viterbi(emissions, valid)
        lengths = valid.sum(dim=1).tolist()
        return [row[:n] for row, n in zip(tags.tolist(), lengths, strict=True)]

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}"
