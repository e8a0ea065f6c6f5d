"""Training-dynamics jobs: the adding problem and the vanishing-gradient experiment, small enough to watch live.

Adding problem (Hochreiter & Schmidhuber 1997, exp. 4): each step's input is (value u_t ~ U(0, 1), marker
m_t); exactly two markers are 1 and the target is the sum of their two values. Vanishing gradients
(Bengio et al. 1994): the target is the first value u_1, so all the signal must travel back T steps.
Both report, per training step, the loss and ||dL/dh_t|| for every time step t: the norm over the batch and
hidden units of the *total* gradient of the loss with respect to the hidden state h_t, i.e. through the
recurrence dL/dh_t = dL/dh_{t+1} dh_{t+1}/dh_t (+ the direct path at t = T). The layer's cell is stepped by
hand so that each h_t is a tensor of its own whose gradient autograd can keep (a fused kernel's output only
carries the direct path). With a vanilla RNN the norm decays roughly geometrically as t moves away from T;
gated cells can keep it up (Pascanu et al. 2013).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from rnnkit import cancel
from rnnkit.server.explore import build_layer

EXPERIMENTS = ("adding", "vanishing")


def make_batch(experiment: str, batch_size: int, seq_len: int, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (B, T, 2) and targets (B,) of ``experiment``."""
    values = torch.rand(batch_size, seq_len, generator=generator)  # (B, T)
    markers = torch.zeros(batch_size, seq_len)
    if experiment == "adding":
        half = max(seq_len // 2, 1)
        first = torch.randint(0, half, (batch_size,), generator=generator)
        second = torch.randint(half, seq_len, (batch_size,), generator=generator)
        rows = torch.arange(batch_size)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        target = (values * markers).sum(dim=1)  # (B,)
    elif experiment == "vanishing":
        markers[:, 0] = 1.0
        target = values[:, 0]  # (B,)
    else:
        raise ValueError(f"experiment must be one of {EXPERIMENTS}, got {experiment!r}")
    return torch.stack([values, markers], dim=2), target  # (B, T, 2), (B,)


class Regressor(nn.Module):
    """A one-layer recurrent network and a linear read-out of its last state: y = w^T h_T + b."""

    def __init__(self, cell: str, hidden_size: int) -> None:
        super().__init__()
        self.rnn = build_layer(cell, 2, hidden_size, 1, False, False, True)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Prediction (B,) and the hidden states h_1..h_T, each (B, H), as separate autograd nodes."""
        cell = self.rnn.cells[0]  # bound to the layer's parameters: the layer's own equations
        projected = cell.input_projection(x)  # (B, T, G*H), hoisted out of the loop as the layer does
        state = cell.initial_state(x.shape[0], dtype=x.dtype)
        hidden = []
        for t in range(x.shape[1]):
            h_t, state = cell.recur(projected[:, t], state)  # h_t (B, H) is also the state's h
            hidden.append(h_t)
        return self.head(hidden[-1]).squeeze(1), hidden  # (B,), T x (B, H)


def run_job(experiment: str, cell: str, steps: int, seq_len: int, hidden_size: int, emit: Callable[[dict], None],
            seed: int = 0, batch_size: int = 32, lr: float = 1e-2) -> dict[str, Any]:
    """Train for ``steps`` steps, calling ``emit({"step", "loss", "grad_norms"})`` after each one.

    Each step starts with :func:`rnnkit.cancel.check`: run under a :class:`~rnnkit.cancel.CancelToken`, the job
    stops with :class:`~rnnkit.cancel.Cancelled` at the first step after the token is cancelled. Returns
    {"status": "finished", "steps": steps}.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = Regressor(cell, hidden_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(1, steps + 1):
        cancel.check()
        x, target = make_batch(experiment, batch_size, seq_len, generator)
        prediction, hidden = model(x)
        for h_t in hidden:
            h_t.retain_grad()  # keep dL/dh_t of these non-leaf tensors
        loss = torch.mean((prediction - target) ** 2)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        grad_norms = [float(h_t.grad.norm()) for h_t in hidden]  # (T,): ||dL/dh_t|| over batch and units
        emit({"step": step, "loss": loss.item(), "grad_norms": grad_norms})
    return {"status": "finished", "steps": steps}
