"""rnnkit.state: the helpers walk every kind of state rnnkit builds, and keep its structure."""

from collections import namedtuple

import torch

from rnnkit.state import detach_state, hidden_of, map_state, named_state_tensors, select_rows, state_tensors

Pair = namedtuple("Pair", "h c")


def test_map_state_keeps_structure_and_non_tensor_leaves():
    state = {"h": torch.ones(2, 3), "layers": [(torch.zeros(2, 1), torch.ones(2, 1))], "pair": Pair(torch.ones(2), 7),
             "none": None}
    doubled = map_state(lambda t: t * 2, state)
    assert set(doubled) == set(state)
    assert torch.equal(doubled["h"], torch.full((2, 3), 2.0))
    assert isinstance(doubled["layers"], list) and isinstance(doubled["layers"][0], tuple)
    assert isinstance(doubled["pair"], Pair) and doubled["pair"].c == 7
    assert doubled["none"] is None


def test_map_state_over_several_states():
    new, old = (torch.ones(2), torch.zeros(2)), (torch.full((2,), 5.0), torch.full((2,), 6.0))
    keep = torch.tensor([True, False])
    mixed = map_state(lambda a, b: torch.where(keep, b, a), new, old)
    assert mixed[0].tolist() == [5.0, 1.0] and mixed[1].tolist() == [6.0, 0.0]


def test_detach_state_cuts_the_graph():
    weight = torch.ones(2, requires_grad=True)
    state = {"h": weight * 3, "c": [weight * 2]}
    detached = detach_state(state)
    assert not detached["h"].requires_grad and not detached["c"][0].requires_grad
    assert detached["h"].tolist() == [3.0, 3.0]
    assert detach_state(None) is None


def test_named_tensors_hidden_and_rows():
    state = {"h": torch.arange(6.0).view(3, 2), "c": (torch.zeros(3, 1),)}
    assert [name for name, _ in named_state_tensors(state)] == ["state['h']", "state['c'][0]"]
    assert len(state_tensors(state)) == 2
    h, c = torch.ones(2, 1), torch.zeros(2, 1)
    assert hidden_of((h, c)) is h and hidden_of(h) is h
    picked = select_rows(state, torch.tensor([2, 0]))
    assert picked["h"].tolist() == [[4.0, 5.0], [0.0, 1.0]] and picked["c"][0].shape == (2, 1)
