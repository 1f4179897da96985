"""Compact reprs (secagg/reprs.py): one readable line, no bulk, no numpy scalars."""

from __future__ import annotations

import numpy as np

import secagg
from secagg import reprs
from secagg.simulation import setup_session


def _compact(text: str, limit: int = 400) -> None:
    assert len(text) <= limit, text
    assert "\n" not in text and "array(" not in text and "np." not in text and "numpy" not in text, text


def test_simulation_result_repr_is_short_and_leaves_out_the_transcript():
    inputs = {u: np.arange(1000, dtype=np.uint64) * u for u in range(1, 31)}
    result = secagg.simulate(inputs, threshold=20, modulus=2**32, dropouts={"masked_input": [3]}, seed=1)
    text = repr(result)
    _compact(text)
    assert "30 messages" not in text and f"<{len(result.transcript)} messages" in text
    assert "(29 ids)" in text and "uint64[1000]" in text


def test_oracle_and_average_result_reprs_are_short():
    oracle = secagg.SecureAverageOracle(threshold=0.6, seed=1)
    vectors = {u: np.full(500, float(u)) for u in range(1, 6)}
    result = oracle.average(vectors, {u: 0.5 for u in vectors})
    for text in (repr(result), repr(oracle)):
        _compact(text)
    assert "calls=1" in repr(oracle) and "float64[500]" in repr(result)


def test_server_and_client_reprs_show_state_not_secrets():
    params, clients = setup_session({u: np.zeros(4, np.uint64) for u in (1, 2, 3)}, threshold=2, modulus=2**16, seed=1)
    server = secagg.Server(params)
    _compact(repr(server))
    _compact(repr(clients[2]))
    assert "round=advertise_keys" in repr(server) and "id=2" in repr(clients[2])
    clients[2].start()
    assert "state=advertised" in repr(clients[2])


def test_numpy_scalars_print_as_python_numbers():
    assert reprs.fields("X", a=np.float64(0.5), b=np.uint64(7)) == "X(a=0.5, b=7)"
    assert reprs.ids(np.arange(1, 4)) == "[1, 2, 3]"
    assert reprs.vector(np.array([1.5, 2.0])) == "float64[2] [1.5, 2]"
