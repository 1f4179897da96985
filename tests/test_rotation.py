"""The randomized Hadamard rotation: orthogonal, invertible, flattening, public."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.rotation import Rotation, padded


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 300), st.binary(min_size=1, max_size=8), st.integers(0, 2**32 - 1))
def test_rotation_keeps_norms_and_inverts(d, seed, data_seed):
    x = np.random.default_rng(data_seed).normal(size=(3, d))  # test data, not noise
    rot = Rotation(d, seed)
    y = rot.forward(x)
    assert y.shape == (3, padded(d))
    assert np.allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1))
    assert np.allclose(rot.inverse(y), x)


def test_rotation_spreads_a_spike_over_every_coordinate():
    x = np.zeros(1000)
    x[7] = 1.0
    y = Rotation(1000, b"s").forward(x)
    assert np.allclose(np.abs(y), 1 / np.sqrt(1024))


def test_the_same_seed_gives_every_party_the_same_rotation():
    assert np.array_equal(Rotation(50, b"k").signs, Rotation(50, b"k").signs)
    assert not np.array_equal(Rotation(50, b"k").signs, Rotation(50, b"l").signs)
