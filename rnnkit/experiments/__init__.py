"""Classic experiments, one module each, importable from tests, the CLI and reports.

* :mod:`rnnkit.experiments.reversal`: reversing symbol sequences with and without attention, accuracy by
  source length (Bahdanau et al. 2014, Fig. 2 in miniature).

Submodules are not imported here, so that importing one experiment does not pull in the others.
"""
