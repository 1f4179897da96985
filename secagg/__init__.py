"""Bonawitz-style secure aggregation over Z_M (Bonawitz et al., CCS 2017).

The protocol is two sans-I/O state machines (``Client``, ``Server``); the
in-memory transport is ``simulate``; ``SecureAverageOracle`` computes a
weighted average of real vectors on top of it.
"""

__version__ = "0.1.0"  # the distribution's version (pyproject.toml reads it from here)

from .client import Client, ClientState
from .errors import (
    AbortError,
    EncodingOverflow,
    InsecureParameters,
    MalformedMessage,
    NoisyWeightSum,
    OutOfBounds,
    ParameterError,
    ProtocolViolation,
    SecAggError,
    SimulationError,
    SurvivorsChanged,
    WeakParameters,
)
from .messages import Round, decode
from .params import InsecureParametersWarning, PublicParams, max_colluding
from .rng import SeededRandom, SystemRandom
from .server import Server, ServerResult
from .simulation import MultiCallSimulation, SimulationResult, simulate

__all__ = [
    "__version__",
    "AbortError",
    "Client",
    "ClientState",
    "MultiCallSimulation",
    "EncodingOverflow",
    "InsecureParameters",
    "InsecureParametersWarning",
    "MalformedMessage",
    "NoisyWeightSum",
    "OutOfBounds",
    "ParameterError",
    "ProtocolViolation",
    "PublicParams",
    "Round",
    "SecAggError",
    "SeededRandom",
    "SimulationError",
    "Server",
    "ServerResult",
    "SimulationResult",
    "SurvivorsChanged",
    "SystemRandom",
    "WeakParameters",
    "decode",
    "max_colluding",
    "simulate",
]

from .encoding import FixedPointEncoding  # noqa: E402
from .ledger import FileLedger, MemoryLedger, SessionLedger  # noqa: E402
from .policy import ClientPolicy  # noqa: E402
from .oracle import AverageResult, OracleSession, SecureAverageOracle  # noqa: E402

__all__ += [
    "AverageResult", "ClientPolicy", "OracleSession", "FileLedger", "FixedPointEncoding", "MemoryLedger", "SecureAverageOracle",
    "SessionLedger",
]
