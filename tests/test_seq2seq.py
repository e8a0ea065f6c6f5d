"""Tests for rnnkit.seq2seq: encoder, decoders, the step contract, teacher forcing, learning."""

import math

import pytest
import torch
import torch.nn.functional as F

from rnnkit.seq2seq import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    Encoder,
    LuongDecoder,
    PointerGenerator,
    Seq2Seq,
    Seq2SeqConfig,
)

V_SRC, V_TGT = 11, 13
LENGTHS = torch.tensor([6, 3, 1, 5])


def _model(decoder="luong", cell="lstm", **options):
    torch.manual_seed(0)
    # copy attention copies source ids into the output: one vocabulary (V_TGT) for both sides
    source_vocab_size = V_TGT if options.get("copy_attention") else V_SRC
    config = Seq2SeqConfig(
        source_vocab_size, V_TGT, embedding_size=6, hidden_size=8, decoder=decoder, cell=cell, **options
    )
    return Seq2Seq.build(config).eval()


def _batch(target_length=5):
    generator = torch.Generator().manual_seed(7)
    src = torch.randint(4, V_SRC, (len(LENGTHS), int(LENGTHS.max())), generator=generator)
    src = src.masked_fill(torch.arange(src.shape[1]) >= LENGTHS.unsqueeze(1), PAD_ID)
    tgt_in = torch.randint(4, V_TGT, (len(LENGTHS), target_length), generator=generator)
    tgt_in[:, 0] = BOS_ID
    return src, LENGTHS.clone(), tgt_in


VARIANTS = [
    ("luong", "lstm", {}),
    ("luong", "gru", {"num_layers": 2}),
    ("luong", "lstm", {"input_feeding": True}),
    ("luong", "gru", {"input_feeding": True, "attention": "concat"}),
    ("luong", "lstm", {"attention": "local-m", "attention_options": {"window": 1}}),
    ("bahdanau", "lstm", {}),
    ("bahdanau", "gru", {"num_layers": 2, "attention": "dot"}),
    ("none", "lstm", {}),
    ("none", "gru", {"summary": "mean", "bidirectional": False}),
    ("bahdanau", "gru", {"coverage": True}),
    ("luong", "lstm", {"coverage": True, "attention": "additive"}),
    ("luong", "gru", {"coverage": True, "attention": "concat", "input_feeding": True}),
    ("luong", "lstm", {"copy_attention": True}),
    ("luong", "gru", {"copy_attention": True, "input_feeding": True, "attention": "dot"}),
    ("bahdanau", "lstm", {"copy_attention": True, "coverage": True}),
    ("luong", "lstm", {"encoder_layers": 2}),
    ("bahdanau", "gru", {"encoder_layers": 3, "num_layers": 2}),
    ("bahdanau", "lstm", {"encoder_size": 12}),
    ("luong", "gru", {"encoder_size": 4, "input_feeding": True, "encoder_layers": 2}),
]


def _ids(variant):
    decoder, cell, options = variant
    return "-".join([decoder, cell] + [f"{k}={v}" for k, v in options.items() if k != "attention_options"])


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_step_by_step_equals_forward(variant):
    decoder, cell, options = variant
    model = _model(decoder, cell, **options)
    src, lengths, tgt_in = _batch()
    with torch.no_grad():
        for fast_path in (True, False):
            logits, attention = model(src, lengths, tgt_in, return_attention=True, fast_path=fast_path)
            expected = F.log_softmax(logits, dim=-1)  # (B, T, V)
            state = model.start(src, lengths)
            for t in range(tgt_in.shape[1]):
                log_probs, state = model.step(tgt_in[:, t], state)
                assert torch.allclose(log_probs, expected[:, t], atol=1e-5), (fast_path, t)
                if attention is not None:
                    assert torch.allclose(state["attention"], attention[:, t], atol=1e-6)
            assert (attention is None) == (decoder == "none")


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_state_is_batch_first_and_reorders_generically(variant):
    decoder, cell, options = variant
    model = _model(decoder, cell, **options)
    src, lengths, tgt_in = _batch()
    state = model.start(src, lengths)
    with torch.no_grad():
        _, state = model.step(tgt_in[:, 0], state)
        for name, tensor in state.items():
            assert tensor.shape[0] == len(lengths), name
        if model.decoder.has_attention:
            assert state["attention"].shape == src.shape
            assert (state["attention"][src == PAD_ID] == 0).all()
            assert torch.allclose(state["attention"].sum(1), torch.ones(len(lengths)), atol=1e-6)
        # expand and reorder every tensor by index_select, as beam search does, then take a step
        rows = torch.tensor([2, 0, 0, 3, 1, 2])
        expanded = {name: tensor.index_select(0, rows) for name, tensor in state.items()}
        expanded_log_probs, _ = model.step(tgt_in[rows, 1], expanded)
        log_probs, _ = model.step(tgt_in[:, 1], state)
    assert torch.allclose(expanded_log_probs, log_probs[rows], atol=1e-6)


def _assert_fast_path_equals_step_loop(model):
    """forward(fast_path=True) against the step loop: logits, attention and every gradient."""
    src, lengths, tgt_in = _batch(target_length=7)
    target = torch.randint(0, V_TGT, tgt_in.shape, generator=torch.Generator().manual_seed(3))
    results = []
    for fast_path in (True, False):
        model.zero_grad()
        logits, weights = model(src, lengths, tgt_in, return_attention=True, fast_path=fast_path)
        F.cross_entropy(logits.transpose(1, 2), target).backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results.append((logits.detach(), weights.detach(), grads))
    (fast_logits, fast_weights, fast_grads), (loop_logits, loop_weights, loop_grads) = results
    assert torch.allclose(fast_logits, loop_logits, atol=1e-5)
    assert torch.allclose(fast_weights, loop_weights, atol=1e-6)
    assert fast_grads.keys() == loop_grads.keys() and len(fast_grads) == len(list(model.parameters()))
    for name in fast_grads:
        assert torch.allclose(fast_grads[name], loop_grads[name], atol=1e-5), name


@pytest.mark.parametrize(
    "attention", ["general", "dot", "scaled-dot", "concat", "additive", "location", "local-m", "local-p"]
)
def test_fast_teacher_forced_luong_path_equals_the_step_loop_with_gradients(attention):
    options = {}
    if attention == "location":
        options["attention_options"] = {"max_source_length": 6}
    if attention.startswith("local"):
        options["attention_options"] = {"window": 1}  # narrow, so that a wrong step index shows
    model = _model("luong", "lstm", attention=attention, num_layers=2, **options)
    assert model.decoder.supports_parallel
    _assert_fast_path_equals_step_loop(model)


STEPPING = [("bahdanau", {}), ("bahdanau", {"coverage": True}), ("bahdanau", {"copy_attention": True}),
            ("bahdanau", {"num_layers": 2}), ("luong", {"input_feeding": True}),
            ("luong", {"input_feeding": True, "copy_attention": True}),
            ("luong", {"coverage": True, "attention": "concat"})]


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize(("decoder", "options"), STEPPING)
def test_teacher_forced_stepping_path_equals_the_step_loop_with_gradients(decoder, options, cell):
    """Where each step needs the last one's attention (Bahdanau; Luong with input feeding or coverage),
    forward_parallel steps the attention and the RNN and runs the output layer once: the same logits, attention
    and gradients as the step loop (dropout off: it draws its masks per call)."""
    model = _model(decoder, cell, **options)
    _assert_fast_path_equals_step_loop(model)


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
@pytest.mark.parametrize("variant", VARIANTS + [("luong", "gru", {"embedding_size": 8, "tie_weights": True})],
                         ids=_ids)
def test_teacher_forced_loss_equals_the_loss_of_the_logits_with_gradients(variant, epsilon):
    """The fused output layer and loss (rnnkit.losses) against model.loss(model(...)): loss and every gradient,
    padded targets included; copy attention falls back to the unfused path."""
    decoder, cell, options = variant
    if "embedding_size" in options:  # tied: the output layer's weight is the embedding, trained by both uses
        torch.manual_seed(0)
        model = Seq2Seq.build(Seq2SeqConfig(V_SRC, V_TGT, hidden_size=8, decoder=decoder, cell=cell, **options))
    else:
        model = _model(decoder, cell, **options)
    src, lengths, tgt_in = _batch(target_length=7)
    tgt_out = torch.randint(4, V_TGT, tgt_in.shape, generator=torch.Generator().manual_seed(3))
    tgt_out[1, 4:] = PAD_ID
    tgt_out[2, 2:] = PAD_ID
    results = []
    for fused in (True, False):
        model.zero_grad()
        if fused:
            loss = model.teacher_forced_loss(src, lengths, tgt_in, tgt_out, label_smoothing=epsilon)
        else:
            loss = model.loss(model(src, lengths, tgt_in), tgt_out, label_smoothing=epsilon)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (fused_loss, fused_grads), (loss, grads) = results
    torch.testing.assert_close(fused_loss, loss)
    assert fused_grads.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(fused_grads[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_teacher_forced_loss_never_forms_the_logits_where_it_can_fuse(monkeypatch):
    model = _model("bahdanau", "gru")
    calls = []
    monkeypatch.setattr(model.decoder.deep_output.output, "forward", lambda x: calls.append(x) or 1 / 0)
    src, lengths, tgt_in = _batch()
    model.teacher_forced_loss(src, lengths, tgt_in, tgt_in).backward()
    assert calls == []
    with pytest.raises(ValueError, match="tgt_out must be"):
        model.teacher_forced_loss(src, lengths, tgt_in, tgt_in[:, 1:])


@pytest.mark.parametrize("decoder, options", [("bahdanau", {}), ("luong", {"input_feeding": True}),
                                              ("luong", {"coverage": True, "attention": "concat"})])
def test_teacher_forced_stepping_path_runs_the_output_layer_once(decoder, options):
    model = _model(decoder, **options)
    calls = []
    model.decoder.output_layer.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
    src, lengths, tgt_in = _batch()
    model(src, lengths, tgt_in)
    assert calls == [(len(lengths), tgt_in.shape[1], model.decoder.hidden_size)]


@pytest.mark.parametrize("decoder, attention", [("bahdanau", "additive"), ("luong", "concat")])
def test_coverage_is_the_running_sum_of_attention_and_changes_it(decoder, attention):
    model = _model(decoder, attention=attention, coverage=True)
    src, lengths, tgt_in = _batch(target_length=6)
    with torch.no_grad():
        _, weights = model(src, lengths, tgt_in, return_attention=True)  # (B, T, S)
        state = model.start(src, lengths)
        assert torch.equal(state["coverage"], torch.zeros(src.shape))
        for t in range(tgt_in.shape[1]):
            _, state = model.step(tgt_in[:, t], state)
            assert torch.allclose(state["coverage"], weights[:, : t + 1].sum(1), atol=1e-6)
        # the same weights without the coverage term (w_c = 0) differ after the first step
        model.decoder.attention.coverage_term.linear.weight.zero_()
        _, plain = model(src, lengths, tgt_in, return_attention=True)
    assert torch.allclose(plain[:, 0], weights[:, 0], atol=1e-6)
    assert not torch.allclose(plain[:, 1:], weights[:, 1:], atol=1e-4)


def test_fast_path_runs_the_decoder_rnn_once():
    model = _model("luong")
    calls = []
    model.decoder.rnn.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
    src, lengths, tgt_in = _batch()
    model(src, lengths, tgt_in)
    assert calls == [(len(lengths), tgt_in.shape[1], 6)]
    calls.clear()
    model(src, lengths, tgt_in, fast_path=False)
    assert calls == [(len(lengths), 1, 6)] * tgt_in.shape[1]


def _record_decoder_inputs(model):
    """Hook the target embedding: the token ids the decoder is fed, as a (B, T) tensor."""
    seen = []
    model.decoder.embedding.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))

    def collected():
        return torch.cat([x if x.dim() == 2 else x.unsqueeze(1) for x in seen], dim=1)

    return collected


@pytest.mark.parametrize(
    "decoder, options", [("luong", {}), ("luong", {"input_feeding": True}), ("bahdanau", {})]
)
@pytest.mark.parametrize("fast_path", [True, False])
def test_teacher_forcing_ratio_one_feeds_exactly_the_targets(decoder, options, fast_path):
    model = _model(decoder, **options)
    inputs = _record_decoder_inputs(model)
    src, lengths, tgt_in = _batch()
    model(src, lengths, tgt_in, teacher_forcing_ratio=1.0, fast_path=fast_path)
    assert torch.equal(inputs(), tgt_in)


@pytest.mark.parametrize(
    "decoder, options", [("luong", {}), ("luong", {"input_feeding": True}), ("bahdanau", {}), ("none", {})]
)
def test_teacher_forcing_ratio_zero_feeds_the_models_own_argmax(decoder, options):
    model = _model(decoder, **options)
    inputs = _record_decoder_inputs(model)
    src, lengths, tgt_in = _batch(target_length=6)
    logits = model(src, lengths, tgt_in, teacher_forcing_ratio=0.0)
    fed = inputs()
    assert torch.equal(fed[:, 0], tgt_in[:, 0])  # BOS
    assert torch.equal(fed[:, 1:], logits[:, :-1].argmax(-1))
    assert not torch.equal(fed, tgt_in)  # the random targets are not what an untrained model predicts


def test_scheduled_sampling_mixes_gold_and_predictions_by_coin_flips():
    model = _model("luong")
    inputs = _record_decoder_inputs(model)
    src, lengths, tgt_in = _batch(target_length=8)
    ratio = 0.4
    logits = model(
        src, lengths, tgt_in, teacher_forcing_ratio=ratio, generator=torch.Generator().manual_seed(5)
    )
    fed, predicted = inputs(), logits[:, :-1].argmax(-1)
    # the same coin flips, one per sentence at each step after the first
    generator = torch.Generator().manual_seed(5)
    gold_chosen = torch.stack(
        [torch.rand(len(lengths), generator=generator) < ratio for _ in range(7)], dim=1
    )
    expected = torch.where(gold_chosen, tgt_in[:, 1:], predicted)
    assert torch.equal(fed[:, 1:], expected)
    assert gold_chosen.any() and not gold_chosen.all()


def test_scheduled_sampling_rate_matches_the_ratio():
    model = _model("bahdanau")
    inputs = _record_decoder_inputs(model)
    generator = torch.Generator().manual_seed(11)
    src = torch.randint(4, V_SRC, (300, 4), generator=generator)
    tgt_in = torch.randint(4, V_TGT, (300, 9), generator=generator)
    logits = model(src, torch.full((300,), 4), tgt_in, teacher_forcing_ratio=0.7, generator=generator)
    fed, predicted, gold = inputs()[:, 1:], logits[:, :-1].argmax(-1), tgt_in[:, 1:]
    differ = predicted != gold  # only there does the choice show
    assert ((fed == gold) | (fed == predicted)).all()
    rate = (fed[differ] == gold[differ]).float().mean().item()
    assert abs(rate - 0.7) < 0.05  # ~2000 flips: standard error 0.01


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.4])
def test_label_smoothed_loss_is_cross_entropy_against_the_smoothed_target_over_real_positions(epsilon):
    # Szegedy et al. 2016: q = (1 - eps) one_hot(y) + eps / V, loss = -sum_v q(v) log p(v), written out here
    # and compared with the model's loss; positions whose target is padding count for nothing.
    model = _model("bahdanau", label_smoothing=epsilon)
    src, lengths, tgt_in = _batch(target_length=6)
    tgt_out = torch.randint(4, V_TGT, tgt_in.shape, generator=torch.Generator().manual_seed(2))
    tgt_out[0, 4:], tgt_out[2, 1:] = PAD_ID, PAD_ID
    real = tgt_out != PAD_ID
    logits = model(src, lengths, tgt_in).detach().requires_grad_()
    log_p = logits.log_softmax(-1)
    target = (1 - epsilon) * F.one_hot(tgt_out, V_TGT) + epsilon / V_TGT  # (B, T, V)
    per_position = -(target * log_p).sum(-1)  # (B, T)
    loss = model.loss(logits, tgt_out)
    assert torch.allclose(loss, per_position[real].mean(), atol=1e-6)
    assert torch.allclose(model.loss(logits, tgt_out, reduction="sum"), per_position[real].sum(), atol=1e-5)
    # its gradient: (softmax - q) / (number of real positions) there, exactly 0 at padding
    loss.backward()
    expected_grad = (log_p.exp() - target) / real.sum() * real.unsqueeze(-1)
    assert torch.allclose(logits.grad, expected_grad, atol=1e-6)
    # the padding positions' logits do not matter, and label_smoothing=0 is the negative log-likelihood
    noisy = logits.detach().clone()
    noisy[~real] = torch.randn_like(noisy[~real]) * 10
    assert torch.allclose(model.loss(noisy, tgt_out), loss, atol=1e-6)
    nll = -log_p.gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1)[real].mean()
    assert torch.allclose(model.loss(logits, tgt_out, label_smoothing=0.0), nll, atol=1e-6)


def test_label_smoothing_must_be_a_probability():
    for bad in (1.0, -0.1, "0.1"):
        with pytest.raises(ValueError, match="label_smoothing"):
            _model(label_smoothing=bad)
    model = _model()
    src, lengths, tgt_in = _batch()
    with pytest.raises(ValueError, match="label_smoothing"):
        model.loss(model(src, lengths, tgt_in), tgt_in, label_smoothing=1.5)
    with pytest.raises(ValueError, match="tgt_out"):
        model.loss(model(src, lengths, tgt_in), tgt_in[:, :2])


@pytest.mark.parametrize("decoder", ["luong", "bahdanau", "none"])
def test_tied_and_shared_embeddings_are_one_matrix_trained_by_every_use(decoder, tmp_path):
    # Reference: the same model untied, with equal values in the three matrices; the one shared matrix must get
    # the sum of the gradients the three copies get (encoder input, decoder input, decoder output).
    options = dict(embedding_size=8, hidden_size=8)
    tied = Seq2Seq.build(Seq2SeqConfig(V_TGT, V_TGT, decoder=decoder, tie_weights=True, share_embeddings=True,
                                       **options))  # fmt: skip
    untied = Seq2Seq.build(Seq2SeqConfig(V_TGT, V_TGT, decoder=decoder, **options))
    shared = tied.encoder.embedding.weight
    assert tied.decoder.embedding.weight is shared and tied.decoder.output_layer.weight is shared
    assert untied.num_parameters() - tied.num_parameters() == 2 * V_TGT * 8
    untied.load_state_dict(tied.state_dict())
    copies = (untied.encoder.embedding.weight, untied.decoder.embedding.weight, untied.decoder.output_layer.weight)
    assert all(torch.equal(copy, shared) for copy in copies)
    src, lengths, tgt_in = _batch()
    src = src % V_TGT
    for model in (tied, untied):
        model.zero_grad()
        F.cross_entropy(model(src, lengths, tgt_in).transpose(1, 2), tgt_in).backward()
    assert torch.allclose(shared.grad, sum(copy.grad for copy in copies), atol=1e-6)
    assert all(not torch.allclose(copy.grad, shared.grad) for copy in copies)  # each use contributes
    # a checkpoint stores the matrix once and restores the tying
    from rnnkit.checkpoint import read_weights_file, save_weights_file

    save_weights_file(tmp_path / "weights.safetensors", tied.state_dict())
    restored = Seq2Seq.build(Seq2SeqConfig(**tied.config_dict()))
    restored.load_state_dict(read_weights_file(tmp_path / "weights.safetensors")[0])
    assert restored.decoder.output_layer.weight is restored.encoder.embedding.weight
    assert torch.equal(restored.decoder.output_layer.weight, shared)


def test_tied_embeddings_need_matching_sizes():
    with pytest.raises(ValueError, match="embedding_size == hidden_size"):
        Seq2Seq.build(Seq2SeqConfig(V_SRC, V_TGT, embedding_size=6, hidden_size=8, tie_weights=True))
    with pytest.raises(ValueError, match="one vocabulary"):
        Seq2Seq.build(Seq2SeqConfig(V_SRC, V_TGT, share_embeddings=True))
    with pytest.raises(ValueError, match="tie_weights"):
        Seq2Seq.build(Seq2SeqConfig(V_SRC, V_TGT, tie_weights="yes"))


def _pointer_inputs(dtype=torch.float32, steps=None):
    """Inputs of a PointerGenerator: B = 3 sentences over S = 5 positions (repeated ids, padding), V = 9."""
    generator = torch.Generator().manual_seed(5)
    lead = (3,) if steps is None else (3, steps)
    source = torch.tensor([[4, 5, 4, 6, 7], [8, 8, 8, 0, 0], [5, 0, 0, 0, 0]])  # pad = 0
    valid = source != 0
    scores = torch.randn(*lead, 5, generator=generator, dtype=dtype)
    weights = scores.masked_fill(~(valid if steps is None else valid.unsqueeze(1)), -math.inf).softmax(-1)
    logits = torch.randn(*lead, 9, generator=generator, dtype=dtype)
    context, state, inputs = (torch.randn(*lead, n, generator=generator, dtype=dtype) for n in (4, 3, 2))
    return logits, weights, source, context, state, inputs


def test_pointer_generator_follows_see_et_al():
    # See et al. 2017, eq. 8-9, written out: P(w) = p_gen softmax(logits)(w) + (1 - p_gen) sum_{s: x_s = w} a(s)
    torch.manual_seed(0)
    pointer = PointerGenerator(4, 3, 2)
    logits, weights, source, context, state, inputs = _pointer_inputs()
    log_p = pointer(logits, weights, source, context, state, inputs)  # (3, 9)
    w, b = pointer.switch.weight[0], pointer.switch.bias[0]
    for n in range(3):
        p_gen = torch.sigmoid(w @ torch.cat([context[n], state[n], inputs[n]]) + b)
        vocab = torch.softmax(logits[n], 0)
        for token in range(9):
            copied = sum(weights[n, s] for s in range(5) if source[n, s] == token)
            expected = p_gen * vocab[token] + (1 - p_gen) * copied
            assert torch.allclose(log_p[n, token].exp(), expected, atol=1e-6), (n, token)
    assert torch.allclose(log_p.exp().sum(-1), torch.ones(3), atol=1e-6)
    # all T steps at once equal one step at a time
    logits, weights, source, context, state, inputs = _pointer_inputs(steps=4)
    together = pointer(logits, weights, source, context, state, inputs)  # (3, 4, 9)
    for t in range(4):
        one = pointer(logits[:, t], weights[:, t], source, context[:, t], state[:, t], inputs[:, t])
        assert torch.allclose(together[:, t], one, atol=1e-6)


def test_pointer_generator_gradcheck_float64():
    torch.manual_seed(0)
    pointer = PointerGenerator(4, 3, 2).double()
    logits, weights, source, context, state, inputs = _pointer_inputs(torch.float64)
    weight, bias = (p.detach().clone().requires_grad_(True) for p in (pointer.switch.weight, pointer.switch.bias))

    def functional(logits, weights, context, state, inputs, weight, bias):
        return torch.func.functional_call(
            pointer, {"switch.weight": weight, "switch.bias": bias}, (logits, weights, source, context, state, inputs)
        )

    inputs = [t.requires_grad_(True) for t in (logits, weights, context, state, inputs)] + [weight, bias]
    assert torch.autograd.gradcheck(functional, tuple(inputs), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("decoder", ["luong", "bahdanau"])
def test_copy_switch_extremes_give_the_vocabulary_or_the_copy_distribution(decoder):
    model = _model(decoder, copy_attention=True)
    src, lengths, tgt_in = _batch()
    src = src % V_TGT
    with torch.no_grad():
        model.decoder.pointer.switch.bias.fill_(40.0)  # p_gen = 1: generate only
        generate_only = model(src, lengths, tgt_in)
        pointer, model.decoder.pointer = model.decoder.pointer, None
        without_copy = model(src, lengths, tgt_in)  # the same decoder without the pointer-generator
        model.decoder.pointer = pointer
        assert torch.allclose(generate_only, without_copy.log_softmax(-1), atol=1e-5)
        pointer.switch.bias.fill_(-40.0)  # p_gen = 0: copy only
        log_p, attention = model(src, lengths, tgt_in, return_attention=True)  # (B, T, V), (B, T, S)
    copied = torch.zeros_like(log_p).scatter_add(2, src.unsqueeze(1).expand_as(attention), attention)
    assert torch.allclose(log_p.exp(), copied, atol=1e-6)
    in_source = torch.zeros(len(src), V_TGT, dtype=torch.bool).scatter(1, src.masked_fill(src == PAD_ID, 1), True)
    assert (log_p.exp()[~in_source.unsqueeze(1).expand_as(log_p)] < 1e-12).all()  # nothing outside the source


def test_encoder_padding_does_not_change_a_sentence_and_summary_is_both_ends():
    torch.manual_seed(0)
    encoder = Encoder(V_SRC, 6, 5, num_layers=2, decoder_hidden_size=7, decoder_layers=1).eval()
    src, lengths, _ = _batch()
    encoded = encoder(src, lengths)
    assert encoded.outputs.shape == (4, 6, 10) and encoded.hidden.shape == (4, 1, 7)
    assert encoded.cell.shape == (4, 1, 7)
    assert torch.equal(encoded.valid, src != PAD_ID)
    assert (encoded.outputs[~encoded.valid] == 0).all()
    for b, n in enumerate(lengths.tolist()):
        alone = encoder(src[b : b + 1, :n], lengths[b : b + 1])
        assert torch.allclose(alone.outputs[0], encoded.outputs[b, :n], atol=1e-6)
        assert torch.allclose(alone.hidden[0], encoded.hidden[b], atol=1e-6)
        # summary = [forward state at the sentence's own end; backward state at its start]
        assert torch.allclose(
            encoded.summary[b], torch.cat([encoded.outputs[b, n - 1, :5], encoded.outputs[b, 0, 5:]])
        )


def test_encoder_output_dropout_drops_only_the_outputs_the_attention_reads():
    src, lengths, _ = _batch()
    torch.manual_seed(0)
    plain = Encoder(V_SRC, 6, 5, decoder_hidden_size=7, decoder_layers=1)
    dropped = Encoder(V_SRC, 6, 5, decoder_hidden_size=7, decoder_layers=1, output_dropout=0.5)
    dropped.load_state_dict(plain.state_dict())  # the same weights: dropout has none
    expected = plain.eval()(src, lengths)
    torch.manual_seed(1)
    encoded = dropped.train()(src, lengths)
    kept = encoded.outputs != 0
    assert torch.allclose(encoded.outputs[kept], 2 * expected.outputs[kept])  # kept entries scaled by 1 / (1 - p)
    inside = expected.valid.unsqueeze(-1).expand_as(kept)
    assert 0.3 < kept[inside].float().mean() < 0.7  # about half of the real entries dropped
    assert not kept[~inside].any()  # padding stays zero
    for name in ("hidden", "cell", "summary"):  # the bridge and the summary read the undropped states
        assert torch.allclose(getattr(encoded, name), getattr(expected, name))
    assert torch.equal(dropped.eval()(src, lengths).outputs, expected.outputs)  # off in evaluation
    config = Seq2SeqConfig(V_SRC, V_TGT, encoder_output_dropout=0.25)
    assert Seq2Seq.build(config).encoder.output_dropout.p == 0.25
    with pytest.raises(ValueError, match="output_dropout"):
        Seq2Seq.build(Seq2SeqConfig(V_SRC, V_TGT, encoder_output_dropout=1.5))


def test_model_ids_and_config():
    model = _model()
    assert (model.pad_id, model.bos_id, model.eos_id) == (PAD_ID, BOS_ID, EOS_ID) == (0, 2, 3)
    assert model.config_dict()["decoder"] == "luong"
    assert Seq2Seq.build(Seq2SeqConfig(**model.config_dict())).num_parameters() == model.num_parameters()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_encoder_depth_apart_from_the_decoders(cell):
    model = _model(cell=cell, encoder_layers=3, num_layers=2)
    assert model.encoder.rnn.num_layers == 3 and model.decoder.rnn.num_layers == 2
    src, lengths, tgt_in = _batch()
    encoded = model.encoder(src, lengths)
    assert encoded.hidden.shape == (len(LENGTHS), 2, 8)  # the bridge makes the decoder's two initial states
    assert model(src, lengths, tgt_in).shape == (len(LENGTHS), tgt_in.shape[1], V_TGT)
    same = _model(cell=cell, num_layers=2)
    assert _model(cell=cell, encoder_layers=2, num_layers=2).num_parameters() == same.num_parameters()
    with pytest.raises(ValueError, match="encoder_layers"):
        _model(encoder_layers=0)


def test_encoder_outputs_apart_from_the_decoder_state():
    model = _model(decoder="bahdanau", encoder_size=12)  # K = 12 (2 x 6), H = 8
    assert model.encoder.output_size == 12 and model.encoder.hidden_size == 6 and model.decoder.hidden_size == 8
    src, lengths, tgt_in = _batch()
    encoded = model.encoder(src, lengths)
    assert encoded.outputs.shape[-1] == 12 and encoded.hidden.shape == (len(LENGTHS), 1, 8)
    assert model(src, lengths, tgt_in).shape == (len(LENGTHS), tgt_in.shape[1], V_TGT)
    with pytest.raises(ValueError, match="splits encoder_size in two: it must be even, got 7"):
        _model(encoder_size=7)


def test_user_mistakes_raise_value_errors():
    model = _model()
    src, lengths, tgt_in = _batch()
    with pytest.raises(ValueError, match="src"):
        model(src.float(), lengths, tgt_in)
    with pytest.raises(ValueError, match="src_lengths"):
        model(src, torch.tensor([6, 3, 0, 5]), tgt_in)
    with pytest.raises(ValueError, match="src_lengths"):
        model(src, torch.tensor([6, 3, 7, 5]), tgt_in)
    with pytest.raises(ValueError, match="token ids"):
        model(src + V_SRC, lengths, tgt_in)
    with pytest.raises(ValueError, match="tgt_in"):
        model(src, lengths, tgt_in[:2])
    with pytest.raises(ValueError, match="teacher_forcing_ratio"):
        model(src, lengths, tgt_in, teacher_forcing_ratio=1.5)
    with pytest.raises(ValueError, match="prev_tokens"):
        model.step(tgt_in[:2, 0], model.start(src, lengths))
    with pytest.raises(ValueError, match="decoder must be one of"):
        _model("transformer")
    with pytest.raises(ValueError, match="even"):
        Seq2Seq.build(Seq2SeqConfig(V_SRC, V_TGT, hidden_size=7))
    with pytest.raises(ValueError, match="unknown attention"):
        _model("luong", attention="cosine")
    with pytest.raises(ValueError, match="input feeding"):
        _model("bahdanau", input_feeding=True)
    with pytest.raises(ValueError, match="cell"):
        _model("luong", cell="transformer")
    with pytest.raises(ValueError, match="context_size"):
        Seq2Seq(Encoder(V_SRC, 6, 4), LuongDecoder(V_TGT, 6, 8, 6))
    with pytest.raises(ValueError, match="coverage enters the score of additive or concat"):
        _model("luong", coverage=True)  # general attention has no hidden layer to add it to
    with pytest.raises(ValueError, match="coverage"):
        _model("none", coverage=True)
    with pytest.raises(ValueError, match="one vocabulary"):
        Seq2Seq.build(Seq2SeqConfig(V_SRC, V_TGT, copy_attention=True))
    with pytest.raises(ValueError, match="copy attention"):
        _model("none", copy_attention=True)


@pytest.mark.slow
def test_attention_keeps_long_reversals_accurate_where_a_fixed_context_fails():
    """Bahdanau et al. 2014, Fig. 2 in miniature: accuracy on long sources with and without attention."""
    from rnnkit.experiments.reversal import ReversalConfig, run_reversal

    attention = run_reversal(ReversalConfig(attention="general", threads=1))
    plain = run_reversal(ReversalConfig(attention=None, threads=1))
    print("attention", attention.bucket_accuracy, f"{attention.train_seconds:.0f}s")
    print("no attention", plain.bucket_accuracy, f"{plain.train_seconds:.0f}s")
    short, long = attention.bucket_accuracy["5-10"], attention.bucket_accuracy["21-30"]
    assert long >= 0.9 and long >= 0.9 * short
    assert plain.bucket_accuracy["21-30"] <= 0.5 * plain.bucket_accuracy["5-10"]


def _name_extraction_pairs(rng, n, fillers, names):
    """A copy-heavy task: 3-6 filler words with two names inserted (e.g. "call <n812> and <n77> today"); the
    target is the two names in order. Token ids: 4 .. 4 + fillers - 1 fillers, then the names."""
    pairs = []
    for _ in range(n):
        source = [4 + rng.randrange(fillers) for _ in range(rng.randint(3, 6))]
        target = [4 + fillers + rng.randrange(names) for _ in range(2)]
        for offset, slot in enumerate(sorted(rng.sample(range(len(source) + 1), 2))):
            source.insert(slot + offset, target[offset])
        pairs.append((source, target))
    return pairs


def _padded(sequences):
    batch = torch.full((len(sequences), max(map(len, sequences))), PAD_ID)
    for i, sequence in enumerate(sequences):
        batch[i, : len(sequence)] = torch.tensor(sequence)
    return batch


@pytest.mark.slow
def test_copy_attention_and_tied_embeddings_learn_to_copy_rare_names():
    """See et al. 2017 in miniature: names drawn from 1,500, each seen about 4 times in 3,000 training pairs.

    Three Luong GRU models (hidden 64) trained the same 300 steps of 64 pairs with the same seed: plain, with
    copy attention, and with tied + shared embeddings (E = H = 64), which lets the output layer score a name by
    its own input embedding, a copy-like bias of its own. Greedy exact match on 500 held-out pairs.
    """
    import random

    from rnnkit.decoding import greedy_decode

    fillers, names = 24, 1500
    vocab_size = 4 + fillers + names
    rng = random.Random(0)
    train, test = _name_extraction_pairs(rng, 3000, fillers, names), _name_extraction_pairs(rng, 500, fillers, names)
    test_src, test_lengths = _padded([s for s, _ in test]), torch.tensor([len(s) for s, _ in test])

    def exact_match(**options):
        torch.manual_seed(0)
        config = Seq2SeqConfig(vocab_size, vocab_size, hidden_size=64, cell="gru", **{"embedding_size": 32, **options})
        model = Seq2Seq.build(config)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        batches = random.Random(1)
        for _ in range(300):
            pairs = batches.sample(train, 64)
            src, lengths = _padded([s for s, _ in pairs]), torch.tensor([len(s) for s, _ in pairs])
            tgt = _padded([[BOS_ID, *t, EOS_ID] for _, t in pairs])
            loss = model.loss(model(src, lengths, tgt[:, :-1]), tgt[:, 1:])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        output = greedy_decode(model, model.start(test_src, test_lengths), max_len=4)
        hits = [output.tokens[i, :3].tolist() == [*t, EOS_ID] for i, (_, t) in enumerate(test)]
        return sum(hits) / len(hits)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices, and the machine is shared
    try:
        plain = exact_match()
        copy = exact_match(copy_attention=True)
        tied = exact_match(embedding_size=64, tie_weights=True, share_embeddings=True)
    finally:
        torch.set_num_threads(threads)
    print(f"exact match after 300 steps: plain {plain:.3f}, copy attention {copy:.3f}, tied + shared {tied:.3f}")
    assert copy >= 0.9 and copy >= plain + 0.5
    assert tied >= plain + 0.5

