"""Test-wide settings.

The unit tests use tiny tensors, for which one intra-op thread is faster than two (thread hand-off costs
more than the work) and keeps timings steady when other processes share the machine's 2 cores.

``make test`` runs the tests in one process per core (pytest-xdist, ``-n auto --dist loadfile
--no-loadscope-reorder``: each file's tests in one process, so a module's fixtures are built once, and the files
in the order set below). Each such process, and every rnnkit command its
tests start, then keeps to one thread (OMP_NUM_THREADS=1, read by torch when a child process starts): two
processes each spinning two OpenMP threads on two cores slow each other several times over. A test that needs
more threads sets them itself (tests/test_denormals.py).
"""

import os

import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

torch.set_num_threads(1)


# The files whose tests take longest (pytest --durations), started first so that under ``-n auto --dist
# loadfile --no-loadscope-reorder`` the other processes fill in around them instead of waiting for them at the end.
LONGEST_FIRST = ("test_reproductions.py", "test_tasks_lm.py", "test_tasks_classify.py")


def pytest_collection_modifyitems(config, items):
    """Order the files: the longest first, then the other files holding slow tests, then the rest, each group
    in collection order (a file's tests keep their order)."""

    def rank(item) -> int:
        name = item.path.name
        if name in LONGEST_FIRST:
            return LONGEST_FIRST.index(name)
        return len(LONGEST_FIRST) + (0 if item.path in slow_files else 1)

    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=rank)  # stable: collection order within each rank
