"""rnnkit.losses.linear_cross_entropy against torch: F.cross_entropy(F.linear(...)), loss and gradients."""

import pytest
import torch
import torch.nn.functional as F

import rnnkit.losses as losses
from rnnkit.losses import linear_cross_entropy


def _inputs(rows=37, size=11, vocab=23, bias=True, dtype=torch.float64, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, size, generator=g, dtype=dtype) * scale).requires_grad_()
    w = (torch.randn(vocab, size, generator=g, dtype=dtype) * 0.3).requires_grad_()
    b = (torch.randn(vocab, generator=g, dtype=dtype) * 0.1).requires_grad_() if bias else None
    y = torch.randint(0, vocab, (rows,), generator=g)
    y[::5] = 0  # id 0 is the padding that ignore_index=0 drops
    return x, w, b, y


def _loss_and_grads(fn, x, w, b, y):
    loss = fn(x, w, b, y)
    params = [t for t in (x, w, b) if t is not None]
    grads = torch.autograd.grad(loss, params)
    return loss.detach(), grads


@pytest.fixture(params=[1 << 20, 50], ids=["one-chunk", "many-chunks"])
def chunk_elements(request, monkeypatch):
    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", request.param)  # 50 elements: 2 rows of 23 per chunk
    return request.param


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("scale", [1.0, 1e3])  # large inputs: logits in the thousands, log-sum-exp must not overflow
def test_matches_torch_loss_and_gradients(chunk_elements, epsilon, reduction, bias, scale):
    x, w, b, y = _inputs(bias=bias, scale=scale)

    def reference(x, w, b, y):
        return F.cross_entropy(F.linear(x, w, b), y, ignore_index=0, label_smoothing=epsilon, reduction=reduction)

    def fused(x, w, b, y):
        return linear_cross_entropy(x, w, b, y, ignore_index=0, label_smoothing=epsilon, reduction=reduction)

    expected, expected_grads = _loss_and_grads(reference, x, w, b, y)
    got, got_grads = _loss_and_grads(fused, x, w, b, y)
    torch.testing.assert_close(got, expected)
    for g, e in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e)


def test_float32_matches_torch_and_scales_by_the_incoming_gradient(chunk_elements):
    x, w, b, y = _inputs(rows=200, size=64, vocab=300, dtype=torch.float32)
    expected = F.cross_entropy(F.linear(x, w, b), y, ignore_index=0)
    (3.0 * expected).backward()
    expected_grads = [t.grad.clone() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    got = linear_cross_entropy(x, w, b, y, ignore_index=0)
    (3.0 * got).backward()  # the backward multiplies the gradients made in forward by 3
    torch.testing.assert_close(got, expected)
    for t, e in zip((x, w, b), expected_grads, strict=True):
        torch.testing.assert_close(t.grad, e, rtol=1e-4, atol=1e-6)


def test_gradcheck():
    x, w, b, y = _inputs(rows=7, size=4, vocab=5)
    assert torch.autograd.gradcheck(
        lambda x, w, b: linear_cross_entropy(x, w, b, y, ignore_index=0, label_smoothing=0.2), (x, w, b)
    )


def test_without_gradients_gives_the_loss_only():
    x, w, b, y = _inputs()
    with torch.no_grad():
        got = linear_cross_entropy(x, w, b, y, ignore_index=0)
        expected = F.cross_entropy(F.linear(x, w, b), y, ignore_index=0)
    assert not got.requires_grad
    torch.testing.assert_close(got, expected)


def test_every_position_ignored_gives_nan_like_torch():
    x, w, b, _ = _inputs()
    y = torch.zeros(x.shape[0], dtype=torch.long)
    assert torch.isnan(F.cross_entropy(F.linear(x, w, b), y, ignore_index=0))
    assert torch.isnan(linear_cross_entropy(x, w, b, y, ignore_index=0))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(reduction="none"), "reduction must be 'mean' or 'sum'"),
        (dict(label_smoothing=1.0), "label_smoothing"),
        (dict(targets=torch.full((37,), 23)), r"targets must be in \[0, 23\)"),
        (dict(targets=torch.zeros(36, dtype=torch.long)), r"targets must be an \(N,\) integer tensor"),
        (dict(weight=torch.zeros(23, 10)), "same F"),
        (dict(bias=torch.zeros(22)), r"bias must be \(V,\)"),
    ],
)
def test_bad_arguments_are_refused(change, message):
    x, w, b, y = _inputs()
    arguments = dict(features=x, weight=w, bias=b, targets=y, ignore_index=0) | change
    with pytest.raises(ValueError, match=message):
        linear_cross_entropy(**arguments)
