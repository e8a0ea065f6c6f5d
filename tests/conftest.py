"""Test-wide settings.

The unit tests use tiny tensors, for which one intra-op thread is faster than two (thread hand-off costs
more than the work) and keeps timings steady when other processes share the machine's 2 cores.
"""

import torch

torch.set_num_threads(1)
