"""Tests for rnnkit.attention: masking, formulas against hand-written loops, gradcheck, batched = per step."""

import math

import pytest
import torch

from rnnkit.attention import (
    ATTENTION_NAMES,
    AdditiveAttention,
    ConcatAttention,
    LocalAttention,
    make_attention,
    masked_softmax,
    tanh_score,
)

B, S, H = 3, 7, 5
LENGTHS = torch.tensor([7, 4, 1])  # one full row, one padded, one with a single valid position


def _valid(lengths=LENGTHS, source_length=S):
    return torch.arange(source_length).unsqueeze(0) < lengths.unsqueeze(1)  # (B, S)


def _build(name, dtype=torch.float32, **options):
    torch.manual_seed(0)
    if name == "location":
        options.setdefault("max_source_length", 9)
    if name.startswith("local"):
        options.setdefault("window", 2)
    return make_attention(name, H, H, **options).to(dtype)


def _inputs(dtype=torch.float32, queries=None):
    generator = torch.Generator().manual_seed(1)
    shape = (B, H) if queries is None else (B, queries, H)
    query = torch.randn(*shape, generator=generator, dtype=dtype)
    keys = torch.randn(B, S, H, generator=generator, dtype=dtype)
    return query, keys, _valid()


@pytest.mark.parametrize("name", ATTENTION_NAMES)
def test_weights_sum_to_one_and_are_zero_at_padding(name):
    attention = _build(name)
    query, keys, valid = _inputs()
    for step in (0, 3, 6):
        context, weights = attention(query, keys, valid, step=step)
        assert weights.shape == (B, S) and context.shape == (B, H)
        assert torch.allclose(weights.sum(1), torch.ones(B), atol=1e-6)
        assert (weights[~valid] == 0).all()  # exactly zero, not just small
        assert (weights >= 0).all()
        assert torch.allclose(context, torch.einsum("bs,bsh->bh", weights, keys), atol=1e-6)


def test_rows_without_valid_positions_give_zero_weights_and_finite_gradients():
    attention = _build("general")
    query, keys, _ = _inputs()
    query.requires_grad_(True)
    valid = torch.zeros(B, S, dtype=torch.bool)
    valid[0, :3] = True
    context, weights = attention(query, keys, valid)
    assert (weights[1:] == 0).all() and (context[1:] == 0).all()
    assert torch.allclose(weights[0].sum(), torch.tensor(1.0))
    context.sum().backward()
    assert torch.isfinite(query.grad).all()
    assert (masked_softmax(torch.tensor([[0.5, 2.0]]), torch.tensor([[False, False]])) == 0).all()


@pytest.mark.parametrize(
    "name, options",
    [(name, {}) for name in ATTENTION_NAMES]
    + [("local-p", {"renormalize": False}), ("local-m", {"score": "concat"})]
    + [("local-p", {"score": "additive"})],
)
def test_gradcheck_float64(name, options):
    attention = _build(name, torch.float64, **options)
    query, keys, valid = _inputs(torch.float64)
    query.requires_grad_(True)
    keys.requires_grad_(True)
    # The parameters are gradcheck inputs too, passed in through torch.func.functional_call.
    names = [name for name, _ in attention.named_parameters()]
    params = [parameter for _, parameter in attention.named_parameters()]

    def functional(query, keys, *flat_params):
        return torch.func.functional_call(
            attention, dict(zip(names, flat_params, strict=True)), (query, keys, valid), {"step": 2}
        )

    inputs = (query, keys, *[p.detach().clone().requires_grad_(True) for p in params])
    assert torch.autograd.gradcheck(functional, inputs, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ["dot", "scaled-dot"])
def test_query_equal_to_a_key_gets_the_most_weight(name):
    attention = _build(name)
    generator = torch.Generator().manual_seed(3)
    keys = torch.nn.functional.normalize(torch.randn(B, S, H, generator=generator), dim=-1)  # unit keys
    valid = _valid()
    for b, position in enumerate([5, 2, 0]):  # each inside its sentence's valid prefix
        query = keys[:, position].clone()
        _, weights = attention(query, keys, valid)
        # q . k_s <= |q| |k_s| = 1 = q . q with equality only at k_s = q (Cauchy-Schwarz)
        assert weights[b].argmax().item() == position


@pytest.mark.parametrize("name", ATTENTION_NAMES)
def test_attend_all_equals_per_step_attend(name):
    attention = _build(name)
    queries, keys, valid = _inputs(queries=6)
    precomputed = attention.precompute(keys)
    contexts, weights = attention.attend_all(queries, keys, valid, precomputed=precomputed)
    assert contexts.shape == (B, 6, H) and weights.shape == (B, 6, S)
    for t in range(6):
        context_t, weights_t = attention(queries[:, t], keys, valid, step=t)
        assert torch.allclose(weights[:, t], weights_t, atol=1e-6), t
        assert torch.allclose(contexts[:, t], context_t, atol=1e-6), t


@pytest.mark.parametrize("cls", [AdditiveAttention, ConcatAttention])
def test_precomputed_key_projection_equals_recomputing_it(cls):
    torch.manual_seed(0)
    attention = cls(4, H, attention_size=6)
    generator = torch.Generator().manual_seed(2)
    query = torch.randn(B, 4, generator=generator)
    keys, valid = torch.randn(B, S, H, generator=generator), _valid()
    precomputed = attention.precompute(keys)
    assert precomputed.shape == (B, S, 6)
    with_cache = attention(query, keys, valid, precomputed=precomputed)
    without = attention(query, keys, valid)
    for a, b in zip(with_cache, without, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def _reference_scores(name, attention, query, keys):
    """Each score formula written as a loop over sentences and positions."""
    scores = torch.empty(B, S)
    for b in range(B):
        q = query[b]
        for s in range(S):
            k = keys[b, s]
            if name == "additive":  # v^T tanh(W q + U k)
                hidden = attention.query_projection.weight @ q + attention.key_projection.weight @ k
                value = attention.v.weight[0] @ torch.tanh(hidden + attention.key_projection.bias)
            elif name == "dot":
                value = q @ k
            elif name == "scaled-dot":
                value = q @ k / math.sqrt(H)
            elif name == "general":  # q^T W k
                value = q @ attention.weight @ k
            elif name == "concat":  # v^T tanh(W [q; k])
                value = attention.v.weight[0] @ torch.tanh(attention.linear.weight @ torch.cat([q, k]))
            elif name == "location":  # (W q)_s
                value = attention.linear.weight[s] @ q
            scores[b, s] = value
    return scores


@pytest.mark.parametrize("name", ["additive", "dot", "scaled-dot", "general", "concat", "location"])
def test_scores_follow_the_formulas(name):
    attention = _build(name)
    query, keys, valid = _inputs()
    expected = _reference_scores(name, attention, query, keys)
    assert torch.allclose(attention.score(query, keys), expected, atol=1e-5)
    _, weights = attention(query, keys, valid)
    for b in range(B):
        n = int(LENGTHS[b])
        assert torch.allclose(weights[b, :n], torch.softmax(expected[b, :n], 0), atol=1e-6)


def _coverage(dtype=torch.float32):
    """A running sum of attention weights: nonnegative, 0 at padding, some positions above 1."""
    generator = torch.Generator().manual_seed(4)
    return (torch.rand(B, S, generator=generator, dtype=dtype) * 1.5).masked_fill(~_valid(), 0.0)


@pytest.mark.parametrize("name", ["additive", "concat"])
def test_coverage_enters_the_score_inside_the_tanh(name):
    # Tu et al. 2016, eq. 6: e(s) = v^T tanh(W q + U h̄_s + w_c C(s)), written out per sentence and position
    attention = _build(name, coverage=True)
    query, keys, valid = _inputs()
    coverage = _coverage()
    w_c = attention.coverage_term.linear.weight[:, 0]  # (A,)
    expected = torch.empty(B, S)
    for b in range(B):
        for s in range(S):
            q, k, c = query[b], keys[b, s], coverage[b, s]
            if name == "additive":
                hidden = attention.query_projection.weight @ q + attention.key_projection.weight @ k
                hidden = hidden + attention.key_projection.bias + w_c * c
            else:
                hidden = attention.linear.weight @ torch.cat([q, k]) + w_c * c
            expected[b, s] = attention.v.weight[0] @ torch.tanh(hidden)
    context, weights = attention(query, keys, valid, coverage=coverage)
    for b in range(B):
        n = int(LENGTHS[b])
        assert torch.allclose(weights[b, :n], torch.softmax(expected[b, :n], 0), atol=1e-6)
    assert (weights[~valid] == 0).all()
    # the coverage does change the weights, and the precomputed key term gives the same result
    _, fresh = attention(query, keys, valid, coverage=torch.zeros(B, S))
    assert not torch.allclose(fresh[:2], weights[:2], atol=1e-3)
    _, cached = attention(query, keys, valid, coverage=coverage, precomputed=attention.precompute(keys))
    assert torch.allclose(cached, weights, atol=1e-6)


@pytest.mark.parametrize("name", ["additive", "concat"])
def test_coverage_attention_gradcheck_float64(name):
    attention = _build(name, torch.float64, coverage=True)
    query, keys, valid = _inputs(torch.float64)
    coverage = _coverage(torch.float64)
    names = [name for name, _ in attention.named_parameters()]
    params = [parameter.detach().clone().requires_grad_(True) for _, parameter in attention.named_parameters()]

    def functional(query, keys, coverage, *flat_params):
        return torch.func.functional_call(
            attention, dict(zip(names, flat_params, strict=True)), (query, keys, valid), {"coverage": coverage}
        )

    inputs = (query.requires_grad_(True), keys.requires_grad_(True), coverage.requires_grad_(True), *params)
    assert torch.autograd.gradcheck(functional, inputs, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("shapes", [((4, 1, 6), (4, 5, 6)), ((4, 3, 1, 6), (4, 1, 5, 6))], ids=["step", "all"])
def test_tanh_score_equals_autograd_through_the_formula(shapes):
    generator = torch.Generator().manual_seed(0)
    x, y = (torch.randn(*shape, generator=generator, dtype=torch.float64, requires_grad=True) for shape in shapes)
    v = torch.randn(6, generator=generator, dtype=torch.float64, requires_grad=True)
    expected = torch.tanh(x + y) @ v
    got = tanh_score(x, y, v)
    torch.testing.assert_close(got, expected)
    weights = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
    for g, e in zip(torch.autograd.grad((got * weights).sum(), (x, y, v)),
                    torch.autograd.grad((expected * weights).sum(), (x, y, v)), strict=True):
        torch.testing.assert_close(g, e)
    assert torch.autograd.gradcheck(tanh_score, (x, y, v))


@pytest.mark.parametrize("name", ["additive", "concat"])
def test_additive_scores_keep_no_tensor_per_step_for_the_backward(name):
    """Decoder steps against one precomputed key projection (B, S, A): what autograd keeps for the backward grows
    per step by (B, A)- and (B, S)-sized tensors only, not by a tanh of (B, S, A) per step."""
    batch, length, size = 4, 30, 16
    attention = make_attention(name, query_size=size, key_size=size, attention_size=size)
    keys = torch.randn(batch, length, size)
    valid = torch.ones(batch, length, dtype=torch.bool)

    def kept_bytes(steps):
        kept = {}
        projected = attention.precompute(keys)

        def pack(tensor):
            kept[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            total = sum(attention(torch.randn(batch, size, requires_grad=True), keys, valid,
                                  precomputed=projected)[0].sum() for _ in range(steps))
        total.backward()
        return sum(kept.values())

    per_step = (kept_bytes(20) - kept_bytes(10)) / 10
    assert per_step < batch * length * size * 4 / 2, per_step  # less than half of one (B, S, A) float32 tanh


def test_coverage_is_required_exactly_where_built_in():
    query, keys, valid = _inputs()
    covered = _build("additive", coverage=True)
    with pytest.raises(ValueError, match="coverage"):
        covered(query, keys, valid)
    with pytest.raises(ValueError, match="coverage"):
        covered(query, keys, valid, coverage=torch.zeros(B, S + 1))
    with pytest.raises(ValueError, match="step by step"):
        covered.attend_all(query.unsqueeze(1), keys, valid)
    with pytest.raises(ValueError, match="without coverage"):
        _build("additive")(query, keys, valid, coverage=torch.zeros(B, S))
    with pytest.raises(ValueError, match="coverage"):
        make_attention("general", H, H, coverage=True)
    assert "coverage=True" in repr(covered)


def test_local_m_window_around_the_step_and_clamped_to_the_source_end():
    attention = _build("local-m", window=1)
    query, keys, valid = _inputs()
    scores = attention.score(query, keys)
    for step in (0, 3, 9):
        _, weights = attention(query, keys, valid, step=step)
        for b in range(B):
            n = int(LENGTHS[b])
            p = min(step, n - 1)  # p_t = t, clamped to the sentence's last position
            window = [s for s in range(max(0, p - 1), min(n, p + 2))]
            expected = torch.zeros(S)
            expected[window] = torch.softmax(scores[b, window], 0)
            assert torch.allclose(weights[b], expected, atol=1e-6), (step, b)


def test_local_m_needs_the_step():
    attention = _build("local-m")
    query, keys, valid = _inputs()
    with pytest.raises(ValueError, match="step"):
        attention(query, keys, valid)


@pytest.mark.parametrize("renormalize", [True, False])
def test_local_p_predicted_position_and_gaussian(renormalize):
    torch.manual_seed(0)
    window = 2
    attention = LocalAttention(H, H, window=window, predictive=True, renormalize=renormalize)
    query, keys, valid = _inputs()
    _, weights = attention(query, keys, valid)
    scores = attention.score(query, keys)
    sigma = window / 2
    for b in range(B):
        n = int(LENGTHS[b])
        hidden = torch.tanh(attention.position_projection.weight @ query[b])
        p = n * torch.sigmoid(attention.position_v.weight[0] @ hidden)  # p_t = S sigmoid(v_p^T tanh(W_p h_t))
        window_positions = [s for s in range(n) if abs(s - p.item()) <= window]
        gaussian = torch.tensor([math.exp(-((s - p.item()) ** 2) / (2 * sigma**2)) for s in window_positions])
        align = torch.softmax(scores[b, window_positions], 0)
        expected = torch.zeros(S)
        expected[window_positions] = align * gaussian / ((align * gaussian).sum() if renormalize else 1.0)
        assert torch.allclose(weights[b], expected, atol=1e-6), b


def test_make_attention_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="additive.*general.*local-p"):
        make_attention("cosine", 4, 4)
    with pytest.raises(ValueError, match="attention_size"):
        make_attention("dot", 4, 4, attention_size=3)
    with pytest.raises(ValueError, match="query_size == key_size"):
        make_attention("dot", 4, 5)
    with pytest.raises(ValueError, match="max_source_length"):
        make_attention("location", 4, 4)
    assert isinstance(make_attention("scaled_dot", 4, 4), torch.nn.Module)


def test_bad_shapes_raise_value_errors():
    attention = make_attention("general", 4, 6)
    keys, valid = torch.randn(2, 3, 6), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="query"):
        attention(torch.randn(2, 5), keys, valid)
    with pytest.raises(ValueError, match="keys"):
        attention(torch.randn(2, 4), torch.randn(2, 3, 5), valid)
    with pytest.raises(ValueError, match="valid"):
        attention(torch.randn(2, 4), keys, valid.long())
    with pytest.raises(ValueError, match="query"):
        attention.attend_all(torch.randn(2, 4), keys, valid)
    location = make_attention("location", 4, 6, max_source_length=2)
    with pytest.raises(ValueError, match="at most 2"):
        location(torch.randn(2, 4), keys, valid)
