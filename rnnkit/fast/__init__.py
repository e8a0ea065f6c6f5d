"""rnnkit's fast path, as one package whose entry point is the dispatcher.

* :mod:`rnnkit.fast.dispatch`: the one place a path is chosen (torch's fused kernel, the fast path and where its
  steps and products run, or the reference path), and :func:`explain`, which says which and why;
* :mod:`rnnkit.fast.lengths`: a padded batch's lengths and what is derived from them (sort order, n_t per step,
  masks, the reversal of each valid prefix), built once at a layer's ``forward``;
* :mod:`rnnkit.fast.recurrence`: one cell over a whole sequence, through its autograd Function in
  :mod:`~rnnkit.fast.lstm`, :mod:`~rnnkit.fast.gru` or :mod:`~rnnkit.fast.rnn` (with :mod:`~rnnkit.fast.storage`);
* :mod:`rnnkit.fast.products`: the matrix products, in oneDNN where that is faster;
* :mod:`rnnkit.fast.native`: the C kernels of ``csrc/`` built into typed torch operators (``torch.ops.rnnkit``).

``python -m rnnkit.fast`` prints the compiler, flags, cache and which paths are active on this machine.
"""

from rnnkit.fast.dispatch import Explanation, explain, override
from rnnkit.fast.lengths import Lengths
from rnnkit.fast.recurrence import input_projection, run

__all__ = ["explain", "Explanation", "override", "Lengths", "run", "input_projection", "doctor"]


def doctor() -> str:
    """What ``python -m rnnkit.fast`` and ``rnnkit doctor`` print: the native build and the paths it enables."""
    from rnnkit.fast.__main__ import report

    return report()
