r"""Task models on the rnnkit layers: language model, sequence classifier / regressor, tagger, forecaster.

Every model is a ``torch.nn.Module`` with a small config dataclass (``model.config``, JSON-serialisable with
``config.to_dict()``, rebuilt with ``Model.from_config(dict_or_config)``) and the recurrent part chosen by
name: ``cell`` = "lstm" | "gru" | "rnn" (``layer_norm`` for lstm/gru), ``num_layers``, ``hidden_size``,
``dropout``. Inputs are batch-first; variable-length batches are right-padded and come with ``lengths``
(B,), each in [1, T].

============  ===========================================================================================
module        what it holds
============  ===========================================================================================
base          :class:`RecurrentConfig`, the task-model base, the recurrent layer a config names,
              :func:`evaluating` (evaluation mode inside a block)
lm            :class:`LanguageModel`: embedding -> recurrent layer -> linear over the vocabulary, optionally
              with tied embeddings; carries its state across chunks (truncated BPTT) and implements the
              decoder step of DESIGN section 3, so :mod:`rnnkit.decoding` generates text from it
classifier    :class:`SequenceClassifier`, :class:`SequenceRegressor`: many-to-one, a
              :class:`SequenceEncoder` (tokens or float features -> (bi)directional recurrent layer ->
              :class:`Pooling` over the valid steps) -> linear
tagger        :class:`SequenceTagger`: bidirectional recurrent layer -> per-token emission scores,
              optionally decoded by a linear-chain :class:`CRF` (crf)
forecaster    :class:`Forecaster`: a window of past values -> recurrent encoder -> the next ``horizon``
              values at once, in units standardised by a :class:`~rnnkit.data.series.StandardScaler`
============  ===========================================================================================

:func:`build_model` makes any of them from a task name and a config dict.

Example::

    model = build_model("lm", {"vocab_size": 100, "hidden_size": 64, "embedding_size": 64,
                               "tie_weights": True})
    logits, state = model(tokens)                      # (B, T, V)
    logits, state = model(next_tokens, LanguageModel.detach_state(state))   # next chunk, truncated BPTT
    continuation = model.generate(prompt_ids, 50, temperature=0.8, top_k=10, generator=torch.Generator())
"""

from __future__ import annotations

from typing import Any

from torch import nn

from rnnkit.data.series import StandardScaler, make_windows
from rnnkit.models.base import CELLS, RecurrentConfig, TaskModel, evaluating
from rnnkit.models.classifier import (
    POOLINGS,
    Pooling,
    SequenceClassifier,
    SequenceClassifierConfig,
    SequenceEncoder,
    SequenceEncoderConfig,
    SequenceRegressor,
    SequenceRegressorConfig,
)
from rnnkit.models.crf import CRF
from rnnkit.models.forecaster import Forecaster, ForecasterConfig
from rnnkit.models.lm import LanguageModel, LanguageModelConfig
from rnnkit.models.tagger import SequenceTagger, SequenceTaggerConfig

__all__ = [
    "CELLS",
    "POOLINGS",
    "TASKS",
    "RecurrentConfig",
    "LanguageModelConfig",
    "SequenceEncoderConfig",
    "SequenceClassifierConfig",
    "SequenceRegressorConfig",
    "SequenceTaggerConfig",
    "ForecasterConfig",
    "StandardScaler",
    "LanguageModel",
    "Pooling",
    "SequenceEncoder",
    "SequenceClassifier",
    "SequenceRegressor",
    "CRF",
    "SequenceTagger",
    "Forecaster",
    "make_windows",
    "build_model",
    "evaluating",
]

TASKS: dict[str, type[TaskModel]] = {
    "lm": LanguageModel,
    "classify": SequenceClassifier,
    "regress": SequenceRegressor,
    "tag": SequenceTagger,
    "forecast": Forecaster,
}


def build_model(task: str, config: dict[str, Any] | RecurrentConfig) -> nn.Module:
    """The model of a task ("lm", "classify", "regress", "tag", "forecast") from its config dict.

    Unknown tasks, cells, poolings and config keys raise ValueError naming what is allowed.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    return TASKS[task].from_config(config)
