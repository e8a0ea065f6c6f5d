"""Streaming inference: feed one frame or token at a time, with constant memory.

A recurrent model is a state machine: everything it knows about the past is its state (h_t, and c_t for an
LSTM), so running it one step at a time from the previous step's state computes exactly what running the
whole sequence at once computes (up to float rounding), and needs only the state, never the history::

    h_t, c_t = cell(x_t, (h_{t-1}, c_{t-1}))       # the only thing kept between two feeds is (h_t, c_t)

Streamers (each has ``feed`` and ``reset``; ``state`` is the current state, replaced, never grown):

* :class:`LayerStreamer`: an ``rnnkit.LSTM``/``GRU``/``RNN`` (unidirectional: a backward direction needs the
  end of the sequence before its first output, so it cannot stream). ``feed(frame (D,) or (B, D))`` returns
  the top layer's output (H,) or (B, H) for that frame.
* :class:`LanguageModelStreamer`: a :class:`rnnkit.models.LanguageModel`. ``feed(token)`` returns the
  log-probabilities of the next token (V,); :meth:`LanguageModelStreamer.generate_stream` yields sampled
  tokens one at a time.
* :class:`DecoderStreamer`: a :class:`rnnkit.seq2seq.Seq2Seq` after ``start(src, src_lengths)``: ``feed``
  takes the previous target token(s) and returns the next token's log-probabilities.

:func:`stream` picks the right streamer for a model; :func:`sse_events` formats a token generator as
server-sent events (``text/event-stream``) for an HTTP streaming endpoint.

Example::

    streamer = stream(language_model)
    for token in streamer.generate_stream([5, 9, 4], 20, temperature=0.8, top_k=10, seed=0):
        print(token)

All streamers run without gradients and in evaluation mode (no dropout); the model's own training mode is
restored after each call.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit.checks import check_size
from rnnkit.decoding import filter_log_probs
from rnnkit.layers import GRU, LSTM, RNN
from rnnkit.models import LanguageModel, evaluating
from rnnkit.seq2seq import Seq2Seq
from rnnkit.state import state_tensors  # re-exported: to check that a streamer's memory stays constant

__all__ = [
    "LayerStreamer",
    "LanguageModelStreamer",
    "DecoderStreamer",
    "stream",
    "sse_events",
    "state_tensors",
]


class LayerStreamer:
    """Run an rnnkit recurrent layer one frame at a time.

    Each :meth:`feed` runs the layer over a sequence of length 1 from the stored state (torch's layout,
    (num_layers, B, H), a pair (h, c) for an LSTM) and stores the new state, so layer norm, projections and
    stacked layers all behave as in a whole-sequence call (same layer, same code path).

    Args:
        layer: an ``rnnkit.LSTM``, ``GRU`` or ``RNN`` with ``bidirectional=False``.
        state: the initial state (as the layer's ``hx``), or None for zeros.

    Shapes: ``feed(frame)`` with frame (D,) -> output (H_out,); frame (B, D) -> (B, H_out).
    """

    def __init__(self, layer: nn.Module, state: Tensor | tuple[Tensor, Tensor] | None = None) -> None:
        if not isinstance(layer, (LSTM, GRU, RNN)):
            raise ValueError(f"LayerStreamer expects an rnnkit LSTM, GRU or RNN, got {type(layer).__name__}")
        if layer.bidirectional:
            raise ValueError(
                "a bidirectional layer cannot stream: its backward direction needs the end of the sequence "
                "before its first output; expected bidirectional=False, got bidirectional=True"
            )
        self.layer = layer
        self._initial = state
        self.state = state
        self.steps = 0

    def reset(self, state: Tensor | tuple[Tensor, Tensor] | None = None) -> None:
        """Start a new stream from ``state`` (default: the initial state given at construction)."""
        self.state = state if state is not None else self._initial
        self.steps = 0

    @torch.no_grad()
    def feed(self, frame: Tensor) -> Tensor:
        """One frame (D,) or a batch of frames (B, D) in; the layer's output for it, (H_out,) or (B, H_out)."""
        if not isinstance(frame, Tensor) or frame.dim() not in (1, 2):
            given = tuple(frame.shape) if isinstance(frame, Tensor) else type(frame).__name__
            raise ValueError(f"feed expects one frame (D,) or a batch of frames (B, D), got {given}")
        single = frame.dim() == 1
        frames = frame.unsqueeze(0) if single else frame  # (B, D)
        time_axis = 1 if self.layer.batch_first else 0
        with evaluating(self.layer):
            output, self.state = self.layer(frames.unsqueeze(time_axis), self.state)  # (B, 1, H) or (1, B, H)
        self.steps += 1
        output = output.squeeze(time_axis)  # (B, H_out)
        return output.squeeze(0) if single else output


class LanguageModelStreamer:
    """Feed a :class:`~rnnkit.models.LanguageModel` one token at a time; get the next token's log-probs.

    The state is the model's state dict ``{"h": (B, L, H)[, "c": (B, L, H)]}`` (see ``LanguageModel.start``).

    Args:
        model: the language model.
        batch_size: the number of parallel streams B (``feed`` takes an int when B = 1, else (B,) ids).
    """

    def __init__(self, model: LanguageModel, batch_size: int = 1) -> None:
        if not isinstance(model, LanguageModel):
            raise ValueError(f"LanguageModelStreamer expects a LanguageModel, got {type(model).__name__}")
        self.model = model
        self.batch_size = batch_size
        self.reset()

    def reset(self) -> None:
        """Forget everything fed so far: back to the zero state."""
        self.state = self.model.start(self.batch_size)
        self.steps = 0

    @torch.no_grad()
    def feed(self, token: int | Tensor) -> Tensor:
        """A token id (or (B,) ids) in; log p(x_{t+1} | x_{<=t}) out, (V,) (or (B, V))."""
        single = isinstance(token, int) or (isinstance(token, Tensor) and token.dim() == 0)
        device = self.model.output.weight.device
        tokens = torch.as_tensor(token, dtype=torch.long, device=device).reshape(-1)  # (B,)
        if tokens.shape[0] != self.batch_size:
            raise ValueError(f"feed expects {self.batch_size} token id(s), one per stream, got {tokens.shape[0]}")
        with evaluating(self.model):
            log_probs, self.state = self.model.step(tokens, self.state)  # (B, V)
        self.steps += 1
        return log_probs.squeeze(0) if single else log_probs

    @torch.no_grad()
    def generate_stream(
        self,
        prompt: Sequence[int] | Tensor,
        n: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
        *,
        top_p: float | None = None,
    ) -> Iterator[int]:
        """Continue ``prompt`` (token ids; empty: start from ``bos_id``) by ``n`` tokens, yielding each one as
        soon as it is drawn (from a fresh state: the streamer is reset first; needs ``batch_size=1``).

        Each step: feed the last token, filter the log-probs (temperature, top-k, top-p; see
        :func:`rnnkit.decoding.filter_log_probs`), draw the next token, yield it, feed it. ``temperature=0``
        is greedy. With the same ``seed`` the tokens are those of ``model.generate`` with a
        ``torch.Generator`` seeded alike.
        """
        if self.batch_size != 1:
            raise ValueError(f"generate_stream runs one stream: expected batch_size=1, got {self.batch_size}")
        check_size("n, the number of tokens to generate,", n)
        if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        if top_k is not None:
            check_size("top_k", top_k)
        prompt_ids = [int(t) for t in (prompt.tolist() if isinstance(prompt, Tensor) else prompt)]
        vocab_size = self.model.config.vocab_size
        if any(not 0 <= t < vocab_size for t in prompt_ids):
            raise ValueError(f"prompt ids must lie in [0, vocab_size={vocab_size}), got {prompt_ids}")
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.model.output.weight.device).manual_seed(seed)
        self.reset()
        log_probs = None
        for token in prompt_ids or [self.model.bos_id]:
            log_probs = self.feed(token)  # (V,)
        for _ in range(n):
            if temperature == 0:
                token = int(log_probs.argmax())
            else:
                q = filter_log_probs(log_probs.unsqueeze(0), temperature=temperature, top_k=top_k, top_p=top_p)
                token = int(torch.multinomial(q.exp(), 1, generator=generator))  # draw from q
            yield token
            log_probs = self.feed(token)


class DecoderStreamer:
    """The decoder of a :class:`~rnnkit.seq2seq.Seq2Seq`, one target token at a time.

    ``start(src, src_lengths)`` encodes the source (the encoder reads the whole source, possibly in both
    directions: only the decoder streams); then ``feed(prev_tokens)`` is one ``Seq2Seq.step``.
    """

    def __init__(self, model: Seq2Seq) -> None:
        if not isinstance(model, Seq2Seq):
            raise ValueError(f"DecoderStreamer expects a Seq2Seq model, got {type(model).__name__}")
        self.model = model
        self.state: dict[str, Tensor] | None = None
        self._initial: dict[str, Tensor] | None = None
        self.steps = 0

    @torch.no_grad()
    def start(self, src: Tensor, src_lengths: Tensor | Sequence[int]) -> None:
        """Encode a source batch src (B, S) with lengths (B,): the decoder's initial state."""
        with evaluating(self.model):
            self._initial = self.model.start(src, torch.as_tensor(src_lengths))
        self.reset()

    def reset(self) -> None:
        """Back to the state right after :meth:`start` (the same source)."""
        self.state = self._initial
        self.steps = 0

    @torch.no_grad()
    def feed(self, prev_tokens: int | Tensor) -> Tensor:
        """The previous target token(s) (N,) (an int for one sentence) in; log-probs (N, V) ((V,)) out."""
        if self.state is None:
            raise ValueError("call start(src, src_lengths) before feed: the decoder needs an encoded source")
        single = isinstance(prev_tokens, int)
        tokens = torch.as_tensor(prev_tokens, dtype=torch.long).reshape(-1)  # (N,)
        with evaluating(self.model):
            log_probs, self.state = self.model.step(tokens, self.state)  # (N, V)
        self.steps += 1
        return log_probs.squeeze(0) if single else log_probs


def stream(model: nn.Module, **options: Any) -> LayerStreamer | LanguageModelStreamer | DecoderStreamer:
    """The streamer for ``model``: a layer, a LanguageModel or a Seq2Seq (options go to its constructor)."""
    if isinstance(model, (LSTM, GRU, RNN)):
        return LayerStreamer(model, **options)
    if isinstance(model, LanguageModel):
        return LanguageModelStreamer(model, **options)
    if isinstance(model, Seq2Seq):
        return DecoderStreamer(model, **options)
    raise ValueError(
        "stream expects an rnnkit LSTM/GRU/RNN layer, a LanguageModel or a Seq2Seq, "
        f"got {type(model).__name__}"
    )


def sse_events(items: Iterable[Any], event: str = "token", done_event: str = "done") -> Iterator[str]:
    """Format items as server-sent events (the ``text/event-stream`` format of the HTML standard).

    Each item becomes ``event: <event>\\ndata: <item as JSON>\\n\\n`` (JSON keeps newlines in text out of
    the frame); after the last one comes ``event: <done_event>\\ndata: {"count": n}\\n\\n`` so the client
    knows the stream ended normally. If the generator raises, an ``event: error`` frame carries the message
    and the stream ends (an HTTP status can no longer be sent once streaming has begun).

    Example (FastAPI)::

        StreamingResponse(sse_events(streamer.generate_stream(ids, 50)), media_type="text/event-stream")
    """
    for name in (event, done_event):
        if not isinstance(name, str) or not name or any(c in name for c in "\r\n:"):
            raise ValueError(f"event names must be non-empty strings without ':' or newlines, got {name!r}")
    count = 0
    try:
        for item in items:
            yield f"event: {event}\ndata: {json.dumps(item)}\n\n"
            count += 1
    except ValueError as error:
        yield f"event: error\ndata: {json.dumps({'error': str(error)})}\n\n"
        return
    yield f"event: {done_event}\ndata: {json.dumps({'count': count})}\n\n"
