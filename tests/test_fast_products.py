"""rnnkit.fast.products (oneDNN for the hoisted input projection and the fast path's per-step products) against
torch's own F.linear / torch.mm, values and gradients, at sizes where oneDNN is chosen; and the dispatcher's choice
of it (rnnkit.fast.dispatch.products_onednn)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from rnnkit.fast import dispatch, products

pytestmark = pytest.mark.skipif(not dispatch.ONEDNN_SUPPORTED, reason="this torch has no oneDNN (mkldnn) build")


@pytest.fixture(autouse=True)
def onednn(monkeypatch):
    """Use oneDNN whatever this CPU would choose (on an Intel CPU rnnkit keeps MKL): its products are tested."""
    monkeypatch.setattr(dispatch, "_ONEDNN", True)

# float32 sums of a few hundred terms in another order: differences of a few ulp of the largest partial sum
TOLERANCE = {"atol": 2e-4, "rtol": 1e-5}


def _reference(x, weight, bias):
    """F.linear in float64 (the products both float32 paths approximate) and its gradients."""
    x64, w64 = x.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    b64 = None if bias is None else bias.detach().double().requires_grad_()
    return x64, w64, b64, F.linear(x64, w64, b64)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_equals_f_linear_values_and_gradients(batch_first, with_bias):
    generator = torch.Generator().manual_seed(0)
    shape = (64, 100, 256) if batch_first else (100, 64, 256)
    x = torch.randn(shape, generator=generator)
    if batch_first:
        x = x.transpose(0, 1)  # a (T, B, D) view with strides, as a batch_first layer passes it
    x.requires_grad_()
    weight = torch.randn(1024, 256, generator=generator, requires_grad=True)
    bias = torch.randn(1024, generator=generator, requires_grad=True) if with_bias else None
    assert dispatch.products_onednn(x, weight, bias)
    out = products.linear(x, weight, bias)
    x64, w64, b64, expected = _reference(x, weight, bias)
    torch.testing.assert_close(out, expected.float(), **TOLERANCE)
    d_out = torch.randn(out.shape, generator=generator)
    leaves = [x, weight] + ([bias] if with_bias else [])
    grads = torch.autograd.grad(out, leaves, d_out)
    expected_grads = torch.autograd.grad(expected, [x64, w64] + ([b64] if with_bias else []), d_out.double())
    for ours, reference in zip(grads, expected_grads, strict=True):
        scale = reference.abs().max().item()
        torch.testing.assert_close(ours, reference.float(), atol=1e-6 * scale, rtol=1e-5)


def test_linear_gradient_only_where_asked():
    x = torch.randn(600, 64)
    weight = torch.randn(256, 64, requires_grad=True)
    assert dispatch.products_onednn(x, weight)
    (d_weight,) = torch.autograd.grad(products.linear(x, weight).sum(), [weight])
    torch.testing.assert_close(d_weight, torch.ones(600, 256).t() @ x)


@pytest.mark.parametrize("transposed", [False, True])
def test_product_equals_mm(transposed):
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(64, 1024 if transposed else 256, generator=generator)
    weight = torch.randn(1024, 256, generator=generator)
    operand = weight.t() if transposed else weight  # the backward passes W^T as a view
    bias = None if transposed else torch.randn(1024, generator=generator)
    assert dispatch.products_onednn(a, operand, bias)
    expected = a.double() @ operand.double().t() + (0 if bias is None else bias.double())
    torch.testing.assert_close(products.product(a, operand, bias), expected.float(), **TOLERANCE)


def test_small_or_float64_products_stay_with_torch():
    assert not dispatch.products_onednn(torch.randn(4, 8), torch.randn(16, 8))  # below MIN_MACS
    assert not dispatch.products_onednn(torch.randn(600, 256, dtype=torch.float64), torch.randn(1024, 256,
                                                                                          dtype=torch.float64))
    x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(16, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(products.linear, (x, weight, None))


@pytest.mark.parametrize("setting, expected", [("0", "False"), ("1", "True")])
def test_environment_turns_onednn_off_and_on(setting, expected):
    script = "from rnnkit.fast import dispatch; print(dispatch.products_onednn_for(dispatch.MIN_MACS))"
    env = {**os.environ, "RNNKIT_ONEDNN": setting}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


def test_onednn_is_chosen_where_mkl_takes_its_avx2_path():
    """MKL runs its AVX-512 kernels on Intel CPUs only: oneDNN is chosen on AMD ones, unless the setting says."""
    amd = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n"
    intel = "processor\t: 0\nvendor_id\t: GenuineIntel\n"
    assert dispatch.cpu_vendor(amd) == "AuthenticAMD" and dispatch.cpu_vendor(intel) == "GenuineIntel"
    assert dispatch.cpu_vendor("processor : 0\nBogoMIPS : 50.00\n") == ""  # an ARM cpuinfo
    assert dispatch.onednn_chosen("auto", "AuthenticAMD") and not dispatch.onednn_chosen("auto", "GenuineIntel")
    assert not dispatch.onednn_chosen("auto", "")
    assert dispatch.onednn_chosen("1", "GenuineIntel") and not dispatch.onednn_chosen("0", "AuthenticAMD")
    with pytest.raises(ValueError, match="RNNKIT_ONEDNN must be 0, 1 or auto, got 'yes'"):
        dispatch.onednn_chosen("yes", "AuthenticAMD")


def test_tracing_and_export_take_f_linear():
    """ONNX export and TorchScript tracing must see F.linear (oneDNN's operator has no ONNX form)."""
    x, weight = torch.randn(600, 256), torch.randn(1024, 256)
    assert dispatch.products_onednn(x, weight)
    seen = []

    def project(x):
        seen.append(dispatch.products_onednn(x, weight))
        return products.linear(x, weight)

    traced = torch.jit.trace(project, (x,), check_trace=False)
    assert seen == [False]
    torch.testing.assert_close(traced(x), F.linear(x, weight))


def test_autocast_takes_f_linear():
    x, weight = torch.randn(600, 256), torch.randn(1024, 256)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not dispatch.products_onednn(x, weight)
        assert products.linear(x, weight).dtype == torch.bfloat16  # what F.linear gives under autocast
