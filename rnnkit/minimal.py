"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): :class:`MinGRUCell`, :class:`MinLSTMCell`.

Both drop the state from the gates, so the recurrence is *linear* in h::

    h_t = a_t * h_{t-1} + v_t            a_t, v_t functions of x_t alone

which can be computed for all steps at once by a scan instead of a loop. The two cells (log-space variant,
Feng et al. 2024, sec. 3 and appendix B)::

    minGRU:   z_t = sigma(W_z x_t + b_z),   h~_t = g(W_h x_t + b_h)
              h_t = (1 - z_t) * h_{t-1} + z_t * h~_t                       a_t = 1 - z_t,  v_t = z_t h~_t
    minLSTM:  f_t = sigma(W_f x_t + b_f),  i_t = sigma(W_i x_t + b_i),  h~_t = g(W_h x_t + b_h)
              f'_t = f_t / (f_t + i_t),    i'_t = i_t / (f_t + i_t)        (normalised gates, sec. 3.2.3)
              h_t = f'_t * h_{t-1} + i'_t * h~_t                           a_t = f'_t,     v_t = i'_t h~_t

with g(k) = k + 1/2 for k >= 0 and sigma(k) for k < 0 (continuous, always positive, so that log v_t exists).

One definition, three ways to run it (all computing :meth:`coefficients`):

* ``recur(xp_t, h)``: one step, ``a_t * h + v_t``: the cell contract of :mod:`rnnkit.cells`, used by the
  reference path of :class:`rnnkit.Recurrent` (``fast_path=False``);
* ``scan="sequential"``: the loop over t in one autograd Function (:func:`rnnkit.fast.rnn.linear_recurrence`,
  two small operations per step, a hand-written backward);
* ``scan="parallel"`` (default): the log-space parallel scan of Heinsen 2023, in closed form::

      A_t = sum_{s<=t} log a_s,     h_t = exp(A_t) * h_0 + exp(A_t + logcumsumexp_s<=t(log v_s - A_s))

  from :meth:`log_coefficients` (computed in log space, not as log(a), so that nothing underflows). h_0 may
  have any sign: its term is kept apart from the log-space sum.

Precision: over a long sequence A_t is large and negative and the logcumsumexp large and positive; their sum
loses about |A_t| * 6e-8 in float32, so the closed form over all T = 512 (2048) steps differed from the
sequential form by up to 1e-2 (2e-1) relative in outputs and gradients. :func:`parallel_scan` therefore runs
the closed form within blocks of :data:`CHUNK` steps (all blocks at once) and carries the state from block to
block (T / CHUNK small steps), which kept the two forms within ~3e-5 of each other (relative to the largest
value of each output and gradient) at T = 512 and 2048; the tests check 1e-4. With blocks of 32 steps the
error of the bias gradients reached 1.4e-4 at T = 512.

Parameters are stacked like the rnnkit cells': ``weight_ih`` (G*H, D), ``bias_ih`` (G*H,), blocks in the order
z, h~ (minGRU, G = 2) and f, i, h~ (minLSTM, G = 3); the state is h (B, H).

Example::

    rnn = rnnkit.Recurrent(MinGRUCell(32, 64))                 # parallel scan
    output, [h_n] = rnn(torch.randn(8, 1000, 32))              # (8, 1000, 64)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.checks import check_bool, check_size
from rnnkit.fast.rnn import linear_recurrence

__all__ = ["MinGRUCell", "MinLSTMCell", "g", "log_g", "parallel_scan", "CHUNK"]

_SCANS = ("parallel", "sequential")

#: Steps per block of the parallel scan (see :func:`parallel_scan`).
CHUNK = 16

# A very negative finite number standing for log 0 (-inf gives NaN gradients in logcumsumexp).
_LOG_ZERO = {dtype: torch.finfo(dtype).min / 4 for dtype in (torch.float16, torch.bfloat16, torch.float32,
                                                               torch.float64)}


def g(k: Tensor) -> Tensor:
    """g(k) = k + 1/2 for k >= 0, sigma(k) for k < 0 (Feng et al. 2024, appendix B.3): positive everywhere."""
    return torch.where(k >= 0, k + 0.5, torch.sigmoid(k))


def log_g(k: Tensor) -> Tensor:
    """log g(k), computed without forming g: log(k + 1/2) for k >= 0, -softplus(-k) for k < 0."""
    return torch.where(k >= 0, torch.log(F.relu(k) + 0.5), -F.softplus(-k))


def parallel_scan(log_a: Tensor, log_v: Tensor, h0: Tensor, chunk: int | None = CHUNK) -> Tensor:
    """All h_t of ``h_t = a_t h_{t-1} + v_t`` at once (Heinsen 2023), time-major: (T, B, H) -> (T, B, H).

    ``log_a``, ``log_v`` are the logs of the (positive) coefficients, h0 (B, H) any sign. With ``chunk`` = C
    the closed form runs within blocks of C steps (all blocks at once) and the state is carried from block to
    block by T/C small steps: the log-space sums then span at most C steps, which keeps float32 precise
    (the closed form over all T loses ~|A_T| * 6e-8, see the module docstring). ``chunk=None``: one block.
    """
    steps = log_a.shape[0]
    size = steps if chunk is None else min(chunk, steps)
    blocks = -(-steps // size)
    padding = blocks * size - steps
    if padding:  # trailing steps that change nothing: a = 1, v = 0 (log 0 as a very negative finite number)
        log_a = torch.cat([log_a, log_a.new_zeros(padding, *log_a.shape[1:])])
        log_v = torch.cat([log_v, log_v.new_full((padding, *log_v.shape[1:]), _LOG_ZERO[log_v.dtype])])
    log_a = log_a.unflatten(0, (blocks, size))  # (blocks, C, B, H)
    log_v = log_v.unflatten(0, (blocks, size))
    cumulative = torch.cumsum(log_a, dim=1)  # A_t = sum of log a_s from the block's start to t
    within = torch.exp(cumulative + torch.logcumsumexp(log_v - cumulative, dim=1))  # h_t if the block began at 0
    decay = torch.exp(cumulative)  # prod of a_s from the block's start to t
    starts = [h0]  # the state entering each block: one addcmul per block
    # unbind, not within[block, -1]: each index's backward would write a full-size gradient (quadratic in T)
    last_within, last_decay = within[:, -1].unbind(0), decay[:, -1].unbind(0)
    for block in range(blocks - 1):
        starts.append(torch.addcmul(last_within[block], last_decay[block], starts[-1]))
    h = torch.addcmul(within, decay, torch.stack(starts).unsqueeze(1))  # (blocks, C, B, H)
    return h.flatten(0, 1)[:steps]


class _MinimalCell(nn.Module):
    """Shared by the two cells: the stacked input projection, the step, and the whole-sequence forms."""

    gate_count = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, scan: str = "parallel",
                 chunk: int | None = CHUNK, device=None, dtype=None) -> None:
        super().__init__()
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        check_bool("bias", bias)
        if scan not in _SCANS:
            raise ValueError(f"scan must be one of {_SCANS}, got {scan!r}")
        if chunk is not None:
            check_size("chunk", chunk)
        self.bias = bias
        self.scan = scan
        self.chunk = chunk
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(self.gate_count * hidden_size, input_size, **factory))
        self.bias_ih = nn.Parameter(torch.empty(self.gate_count * hidden_size, **factory)) if bias else None
        self.reset_parameters()

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def reset_parameters(self) -> None:
        """torch.nn.Linear's initialisation: uniform in +-1/sqrt(D)."""
        bound = 1.0 / math.sqrt(self.input_size)
        with torch.no_grad():
            self.weight_ih.uniform_(-bound, bound)
            if self.bias_ih is not None:
                self.bias_ih.uniform_(-bound, bound)

    def initial_state(self, batch_size: int, *, dtype=None, device=None) -> Tensor:
        dtype = self.weight_ih.dtype if dtype is None else dtype
        device = self.weight_ih.device if device is None else device
        return torch.zeros(batch_size, self.hidden_size, dtype=dtype, device=device)

    def check_state(self, state: Tensor, batch_size: int) -> None:
        expected = (batch_size, self.hidden_size)
        if not isinstance(state, Tensor) or tuple(state.shape) != expected:
            given = tuple(state.shape) if isinstance(state, Tensor) else type(state).__name__
            raise ValueError(f"{type(self).__name__} state must have shape {expected}, got {given}")

    def input_projection(self, x: Tensor) -> Tensor:
        """``W x + b`` for any leading dimensions: (..., D) -> (..., G*H)."""
        return F.linear(x, self.weight_ih, self.bias_ih)

    def coefficients(self, xp: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def log_coefficients(self, xp: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def recur(self, xp_t: Tensor, state: Tensor, recurrent_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One step: ``h_t = a_t * h_{t-1} + v_t``. There is no recurrent weight, so no ``recurrent_mask``."""
        if recurrent_mask is not None:
            raise ValueError(f"{type(self).__name__} has no recurrent weights: recurrent_dropout does not apply")
        a, v = self.coefficients(xp_t)
        h_t = torch.addcmul(v, a, state)  # (B, H)
        return h_t, h_t

    def forward(self, x_t: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One step from the input x_t (B, D); ``state`` None means zeros."""
        if not isinstance(x_t, Tensor) or x_t.dim() != 2 or x_t.shape[-1] != self.input_size:
            given = tuple(x_t.shape) if isinstance(x_t, Tensor) else type(x_t).__name__
            raise ValueError(f"{type(self).__name__} expects an input of shape (B, {self.input_size}), got {given}")
        if state is None:
            state = self.initial_state(x_t.shape[0], dtype=x_t.dtype, device=x_t.device)
        else:
            self.check_state(state, x_t.shape[0])
        return self.recur(self.input_projection(x_t), state)

    def run_sequence(self, xp: Tensor, h0: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
        """All steps of (T, B, G*H) projected inputs from h0 (B, H): outputs (T, B, H), final state (B, H).

        Past a sequence's length (``valid`` (T, B, 1) False) a_t = 1 and v_t = 0, so the state is frozen and
        the final state is the state at each sequence's own last step (the layer zeroes those outputs).
        """
        if self.scan == "sequential":
            a, v = self.coefficients(xp)  # (T, B, H) each
            if valid is not None:
                a, v = torch.where(valid, a, 1.0), torch.where(valid, v, 0.0)
            outputs = linear_recurrence(a, v, h0)
        else:
            log_a, log_v = self.log_coefficients(xp)
            if valid is not None:
                # A frozen step: log a = 0 (a = 1) and v = 0. log 0 = -inf would give NaN gradients in
                # logcumsumexp; a very negative finite number stands for it (exp of it is exactly 0).
                log_a = torch.where(valid, log_a, 0.0)
                log_v = torch.where(valid, log_v, _LOG_ZERO[log_v.dtype])
            outputs = parallel_scan(log_a, log_v, h0, chunk=self.chunk)
        return outputs, outputs[-1]

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            text += ", bias=False"
        if self.scan != "parallel":
            text += f", scan={self.scan!r}"
        if self.chunk != CHUNK:
            text += f", chunk={self.chunk}"
        return text


class MinGRUCell(_MinimalCell):
    r"""minGRU (Feng et al. 2024, sec. 3.1): ``h_t = (1 - z_t) * h_{t-1} + z_t * g(W_h x_t + b_h)``.

    ``z_t = sigma(W_z x_t + b_z)``; no reset gate and no W_hh: the gates see only x_t. ``weight_ih`` (2H, D)
    stacks W_z, W_h. ``scan``: "parallel" (log-space scan, default) or "sequential" (a loop); ``chunk``: steps
    per block of the parallel scan (None: one block, the plain closed form); see the module docstring.
    """

    gate_count = 2

    def coefficients(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        """(a, v) = (1 - z, z * g(h~)) from projected inputs (..., 2H)."""
        k_z, k_h = xp.chunk(2, dim=-1)
        z = torch.sigmoid(k_z)
        return 1 - z, z * g(k_h)

    def log_coefficients(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        """(log a, log v) = (-softplus(k_z), -softplus(-k_z) + log g(k_h)): log(1 - z) and log(z g)."""
        k_z, k_h = xp.chunk(2, dim=-1)
        return -F.softplus(k_z), -F.softplus(-k_z) + log_g(k_h)


class MinLSTMCell(_MinimalCell):
    r"""minLSTM (Feng et al. 2024, sec. 3.2): ``h_t = f'_t * h_{t-1} + i'_t * g(W_h x_t + b_h)``.

    ``f_t = sigma(W_f x_t + b_f)``, ``i_t = sigma(W_i x_t + b_i)``, normalised to ``f' = f / (f + i)`` and
    ``i' = i / (f + i)`` (sec. 3.2.3: the scale of h stays independent of time); no cell state, no output
    gate, no W_hh. ``weight_ih`` (3H, D) stacks W_f, W_i, W_h. ``scan`` as in :class:`MinGRUCell`.
    """

    gate_count = 3

    def coefficients(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        """(a, v) = (f', i' * g(h~)) from projected inputs (..., 3H)."""
        k_f, k_i, k_h = xp.chunk(3, dim=-1)
        f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
        total = f + i
        return f / total, i / total * g(k_h)

    def log_coefficients(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        """log f' = -softplus(log i - log f), log i' = -softplus(log f - log i), log sigma(k) = -softplus(-k)."""
        k_f, k_i, k_h = xp.chunk(3, dim=-1)
        difference = F.softplus(-k_f) - F.softplus(-k_i)  # log i - log f
        return -F.softplus(difference), -F.softplus(-difference) + log_g(k_h)
