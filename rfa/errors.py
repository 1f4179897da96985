"""Errors of the rfa package.

``UncertifiableBound`` is raised before anything is sent when no smoothing
parameter can certify the requested privacy-weight bound.
``CertificateViolation`` stops a step before any masked input is sent: the
server or a client found that the step could reveal an effective weight above
the bound (or a client received a broadcast outside the public norm ball);
its subclass ``SurvivorSetChanged`` stops a later step of one aggregation
whose survivor set differs from the first's, before unmasking.
``PolicyError`` names a public parameter of the rule that is missing or out
of range.
"""

from __future__ import annotations


class RFAError(Exception):
    """Root of the errors this package raises on purpose."""


class UncertifiableBound(RFAError, ValueError):
    """The requested max_weight is at or below what any nu can certify."""


class CertificateViolation(RFAError):
    """A step was refused before any input was sent; ``party`` says who refused."""

    def __init__(self, party: str, reason: str):
        self.party = party
        self.reason = reason
        super().__init__(f"{party} refused the step: {reason}")


class PlaintextOnly(RFAError):
    """A rule that needs every individual update in the clear was asked to run securely."""


class PolicyError(RFAError, ValueError):
    """A public parameter of the privacy rule (C, the weight range, t, nu, s) is missing or out of range."""


class SurvivorSetChanged(CertificateViolation):
    """A later step of one aggregation would reveal a sum over a different set of clients than the first.

    Two sums over sets that differ by one client reveal that client's vector
    (with the same broadcast, beta_j w_j and beta_j are their differences), so
    every honest client refuses to unmask such a step (protocol_spec.md).
    """
