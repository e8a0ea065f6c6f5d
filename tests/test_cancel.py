"""rnnkit.cancel: the token, its context, and the check points inside decoding, diagnostics and training."""

from __future__ import annotations

import threading

import pytest
import torch

import rnnkit
from rnnkit.cancel import Cancelled, CancelToken, cancellable, check
from rnnkit.decoding import beam_search, greedy_decode, sample_decode
from rnnkit.diagnostics import diagnose
from rnnkit.training import Trainer
from tests.test_training import common, make_lm_task


def test_check_is_free_without_a_cancelled_token():
    check()  # no token at all
    token = CancelToken()
    with cancellable(token):
        check()
    token.cancel("too slow")
    token.cancel("second reason")  # the first reason is kept
    check()  # outside the block the token is no longer current
    with cancellable(token), pytest.raises(Cancelled, match="too slow"):
        check()
    assert token.cancelled and token.reason == "too slow"


def test_the_token_belongs_to_its_own_thread():
    token = CancelToken()
    token.cancel()
    seen = {}

    def other_thread():
        try:
            check()
            seen["other"] = "ran"
        except Cancelled:
            seen["other"] = "cancelled"

    with cancellable(token):
        worker = threading.Thread(target=other_thread)  # a plain thread starts with an empty context
        worker.start()
        worker.join()
        with pytest.raises(Cancelled):
            check()
    assert seen == {"other": "ran"}
    with pytest.raises(Cancelled):
        token.run(check)  # token.run makes it current wherever it is called


class CancellingModel:
    """Nearly uniform over tokens 0-3, EOS (4) all but impossible, so every decoder runs to max_len; cancels
    ``token`` during step number ``at`` (1-based)."""

    def __init__(self, token: CancelToken, at: int) -> None:
        self.token, self.at, self.steps = token, at, 0

    def step(self, prev_tokens, state):
        self.steps += 1
        if self.steps == self.at:
            self.token.cancel("stop")
        probs = torch.tensor([0.25, 0.25, 0.25, 0.25 - 1e-6, 1e-6])
        return probs.log().expand(prev_tokens.numel(), -1), state


@pytest.mark.parametrize("decode", [
    lambda model: greedy_decode(model, None, bos_id=torch.tensor([0, 1]), eos_id=4, max_len=50),
    lambda model: sample_decode(model, None, bos_id=torch.tensor([0, 1]), eos_id=None, pad_id=0, max_len=50,
                                generator=torch.Generator().manual_seed(0)),
    lambda model: beam_search(model, None, bos_id=torch.tensor([0, 1]), eos_id=4, beam_size=3, max_len=50),
], ids=["greedy", "sample", "beam"])
def test_decoding_stops_at_the_step_after_the_cancel(decode):
    token = CancelToken()
    model = CancellingModel(token, at=3)
    with cancellable(token), pytest.raises(Cancelled, match="stop"):
        decode(model)
    assert model.steps == 3  # the step that cancelled finished; the next one never started
    assert decode(CancellingModel(CancelToken(), at=3)) is not None  # without a current token: runs to its end


def test_diagnose_stops_between_time_steps_and_restores_the_model():
    torch.manual_seed(0)
    lstm = rnnkit.LSTM(3, 4, batch_first=True)
    x = torch.randn(2, 30, 3)
    token = CancelToken()
    steps = []
    cell = lstm.cells[0]
    original = type(cell).recur

    def counting(self, *args):
        steps.append(1)
        if len(steps) == 5:
            token.cancel("enough")
        return original(self, *args)

    type(cell).recur = counting
    try:
        with cancellable(token), pytest.raises(Cancelled, match="enough"):
            diagnose(lstm, lambda m: m(x)[0].sum())
    finally:
        type(cell).recur = original
    assert len(steps) == 5  # of 30
    assert "recur" not in cell.__dict__ and "forward" not in lstm.__dict__  # the recording wrappers are gone
    assert diagnose(lstm, lambda m: m(x)[0].sum()).layers[0].steps == 30


def test_training_stops_between_steps(tmp_path):
    token = CancelToken()
    seen = []

    def on_event(event):
        if event["event"] == "train":
            seen.append(event["step"])
            if event["step"] == 3:
                token.cancel("job deleted")

    task = make_lm_task()
    trainer = Trainer(task, tmp_path / "run", **common(), on_event=on_event)
    with cancellable(token), pytest.raises(Cancelled, match="job deleted"):
        trainer.train()
    assert seen == [1, 2, 3]
