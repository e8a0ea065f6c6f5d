"""rnnkit: recurrent sequence models on PyTorch, from the equations up."""

from rnnkit.cells import GRUCell, LSTMCell, RNNCell
from rnnkit.fast import explain
from rnnkit.layers import GRU, LSTM, RNN
from rnnkit.minimal import MinGRUCell, MinLSTMCell
from rnnkit.parameters import count_parameters
from rnnkit.recurrent import Recurrent

__version__ = "0.1.0"

__all__ = [
    "LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "MinGRUCell", "MinLSTMCell", "Recurrent",
    "count_parameters", "explain",
]
