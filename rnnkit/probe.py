"""Diagnostics of a loaded run on one input: gates, state norms, ||dL/dh_t|| and attention, per layer-direction.

The run's trained model reads one input the way its task does, and :func:`rnnkit.diagnostics.diagnose`
measures every recurrent layer-direction on it. The loss L whose gradient is traced is the task's own
training loss on that input, against a target that defaults to what the model itself predicts:

=========  ==================================================  =================================================
task       input                                               loss L (target)
=========  ==================================================  =================================================
lm         the text x_1..x_T (at least two tokens)             mean next-token cross-entropy: x_2..x_T read
                                                               from x_1..x_{T-1} (the text is its own target)
classify   the text                                            cross-entropy of the class (default: predicted)
tag        whitespace tokens                                   the tagger's loss (CRF NLL or token cross-entropy)
                                                               of the tags (default: the predicted ones)
translate  the source sentence                                 teacher-forced cross-entropy of the target
                                                               (default: the greedy translation), with the
                                                               decoder's attention (target step x source token)
=========  ==================================================  =================================================

So ||dL/dh_t|| shows which steps the prediction depends on, and how fast that dependence fades with distance.
The model is copied first: :func:`diagnose` patches the modules it measures, and a shared model may be serving
other requests at the same time.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.data.batching import pad_sequences
from rnnkit.diagnostics import Diagnostics, attention_maps, diagnose
from rnnkit.tasks.translate import decode_texts, hypothesis_text

TASKS = ("lm", "classify", "tag", "translate")


def _labelled(result, labels_of) -> dict[str, Any]:
    """The JSON of a :class:`Diagnostics` with the step labels of each layer trace (``labels_of(trace)``)."""
    data = result.to_dict()
    for trace, entry in zip(result.layers, data["layers"], strict=True):
        labels = labels_of(trace)
        entry["labels"] = labels if len(labels) == trace.steps else [str(t + 1) for t in range(trace.steps)]
    return data


def _lm(runner, text: str, target: str | None) -> tuple[Diagnostics, dict[str, Any]]:
    if target is not None:
        raise ValueError("a language model's target is its own text (the next tokens): leave target out")
    ids = runner.vocab.encode(text)
    if len(ids) < 2:
        raise ValueError(f"a language model needs at least 2 tokens to predict one from another, got {len(ids)}")
    model = copy.deepcopy(runner.model)
    tokens = torch.tensor([ids])  # (1, T)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (1, T - 1) each: read x_t, predict x_{t+1}
    result = diagnose(model, lambda m: m.loss(m(inputs)[0], targets))
    with torch.no_grad():
        logits, _ = runner.model(inputs)  # (1, T - 1, V)
        surprisal = F.cross_entropy(logits[0], targets[0], reduction="none")  # (T - 1,) nats
    words = [runner.vocab.id_to_token(i) for i in ids]
    data = _labelled(result, lambda trace: words[:-1])
    data["inputs"] = words[:-1]
    data["target"] = words[1:]
    data["token_loss"] = surprisal.tolist()
    data["loss_of"] = "mean next-token cross-entropy (nats) of the text"
    return result, data


def _classify(runner, text: str, target: str | None) -> tuple[Diagnostics, dict[str, Any]]:
    ids = runner.encoder([text])[0]
    tokens = runner.vocab.tokenize(runner.encoder.normalise(text))[: len(ids)] or ["<unk>"]
    inputs, lengths = torch.tensor([ids]), torch.tensor([len(ids)])  # (1, T), (1,)
    with torch.no_grad():
        probabilities = runner.model(inputs, lengths).softmax(dim=-1)[0]  # (C,)
    if target is None:
        label = int(probabilities.argmax())
    elif target in runner.labels.labels:
        label = runner.labels.encode(target)
    else:
        raise ValueError(f"target must be one of the run's labels {runner.labels.labels}, got {target!r}")
    model = copy.deepcopy(runner.model)
    result = diagnose(model, lambda m: m.loss(m(inputs, lengths), torch.tensor([label])))
    data = _labelled(result, lambda trace: tokens)
    data["inputs"] = tokens
    data["target"] = runner.labels.decode(label)
    data["probabilities"] = {runner.labels.decode(k): float(p) for k, p in enumerate(probabilities)}
    data["loss_of"] = f"cross-entropy of the class {runner.labels.decode(label)!r}"
    return result, data


def _tag(runner, text: str, target: str | None) -> tuple[Diagnostics, dict[str, Any]]:
    words = text.split()
    if not words:
        raise ValueError("a tagger needs at least one whitespace-separated token, got none")
    tagging = runner.tagging
    inputs, lengths = torch.tensor([tagging.encode(words)]), torch.tensor([len(words)])  # (1, T), (1,)
    if target is None:
        tags = runner.model.decode(inputs, lengths)[0]
    else:
        given = target.split()
        if len(given) != len(words):
            raise ValueError(f"target must hold one tag per token: {len(words)} tokens, got {len(given)} tags")
        unknown = sorted(set(given) - set(tagging.tags.labels))
        if unknown:
            raise ValueError(f"unknown tags {unknown}; the run's tags are {tagging.tags.labels}")
        tags = [tagging.tags.encode(t) for t in given]
    model = copy.deepcopy(runner.model)
    result = diagnose(model, lambda m: m.loss(m(inputs, lengths), torch.tensor([tags]), lengths))
    data = _labelled(result, lambda trace: words)
    data["inputs"] = words
    data["target"] = [tagging.tags.decode(t) for t in tags]
    data["loss_of"] = "the tagger's loss of the tags " + ("given" if target is not None else "it predicts")
    return result, data


def _translate(runner, text: str, target: str | None) -> tuple[Diagnostics, dict[str, Any]]:
    source_ids = runner.encode([text])[0]
    source_tokens = runner.source_vocab.tokenize(text)
    if len(source_tokens) != len(source_ids):  # an empty source is encoded as one <unk>
        source_tokens = [runner.source_vocab.id_to_token(i) for i in source_ids]
    target_vocab = runner.target_vocab
    if target is None:  # what the model says, greedily: its own token ids (its text may drop special tokens)
        greedy = decode_texts(runner.model, [source_ids], method="greedy")[0][0]
        target = hypothesis_text(target_vocab, greedy)
        target_ids = [runner.model.bos_id] + greedy.tokens.tolist()  # BOS y_1..y_n (EOS if it ended)
    else:
        target_ids = target_vocab.encode(target, add_bos=True, add_eos=True)  # BOS y_1..y_n EOS
    src, src_lengths = pad_sequences([source_ids])  # (1, S), (1,)
    tgt_in, tgt_out = torch.tensor([target_ids[:-1]]), torch.tensor([target_ids[1:]])  # (1, T) each
    model = copy.deepcopy(runner.model)
    maps = attention_maps(model, src, src_lengths, tgt_in)

    def loss(m) -> Tensor:
        logits = m(src, src_lengths, tgt_in)  # (1, T, V)
        return F.cross_entropy(logits.transpose(1, 2), tgt_out, ignore_index=m.pad_id)

    result = diagnose(model, loss, attention=maps)
    decoder_inputs = [target_vocab.id_to_token(i) for i in target_ids[:-1]]
    predicted = [target_vocab.id_to_token(i) for i in target_ids[1:]]
    data = _labelled(result, lambda trace: decoder_inputs if trace.module.startswith("decoder") else source_tokens)
    data["inputs"] = source_tokens
    data["target"] = predicted
    data["target_text"] = target
    if data["attention"] is not None:  # rows: the target token each step predicts; columns: source tokens
        data["attention"]["rows"] = predicted
        data["attention"]["columns"] = source_tokens
    data["loss_of"] = "teacher-forced cross-entropy of the target " + repr(target)
    return result, data


PROBES = {"lm": _lm, "classify": _classify, "tag": _tag, "translate": _translate}


def probe(task: str, runner, text: str,
          target: str | Sequence[str] | None = None) -> tuple[Diagnostics, dict[str, Any]]:
    """Diagnostics of ``runner``'s model (a loaded run of ``task``) on one input: the :class:`Diagnostics`
    (for the plots of :mod:`rnnkit.diagnostics`) and its plain JSON (see :func:`diagnose_input`).
    A bad input or target raises ValueError naming what was expected."""
    if task not in PROBES:
        raise ValueError(f"diagnostics are available for tasks {', '.join(TASKS)}, got a {task} run")
    if isinstance(target, (list, tuple)):
        target = " ".join(target)
    result, data = PROBES[task](runner, text, target)
    data["task"] = task
    return result, data


def diagnose_input(task: str, runner, text: str, target: str | Sequence[str] | None = None) -> dict[str, Any]:
    """Diagnostics of ``runner``'s model (a loaded run of ``task``) on one input, as plain JSON.

    Returns :meth:`rnnkit.diagnostics.Diagnostics.to_dict` (``loss``, ``layers`` with ``grad_norm``,
    ``hidden_norm``, ``cell_norm`` and ``gates`` per layer-direction, ``attention``, ``parameters``) plus
    ``labels`` per layer (the token each step reads), ``inputs``, ``target`` and ``loss_of`` (what L is).
    A bad input or target raises ValueError naming what was expected.
    """
    return probe(task, runner, text, target)[1]
