"""rnnkit: recurrent sequence models on PyTorch, from the equations up."""

__version__ = "0.1.0"
