"""Errors of the rfa package: ``RFAError`` and its subclasses, the only exceptions rfa raises on purpose.

``InvalidArgument`` (also a ``ValueError``) is bad input to any rfa function.

``UncertifiableBound`` is raised before anything is sent when no smoothing
parameter can certify the requested privacy-weight bound.
``CertificateViolation`` stops a step before any masked input is sent: the
server or a client found that the step could reveal an effective weight above
the bound (or a client received a broadcast outside the public norm ball);
its subclass ``SurvivorSetChanged`` stops a later step of one aggregation
whose survivor set differs from the first's, before unmasking.
``PolicyError`` names a public parameter of the rule that is missing or out
of range.
``NeedsVote``: a two-phase rule's aggregate is elected by the clients, not
computed from the updates alone.
"""

from __future__ import annotations


class RFAError(Exception):
    """Root of the errors this package raises on purpose."""


class InvalidArgument(RFAError, ValueError):
    """An argument of an rfa function or class is outside its documented range; nothing ran."""


class UncertifiableBound(InvalidArgument):
    """The requested max_weight is at or below what any nu can certify."""


class CertificateViolation(RFAError):
    """A step was refused before any input was sent; ``party`` says who refused."""

    def __init__(self, party: str, reason: str):
        self.party = party
        self.reason = reason
        super().__init__(f"{party} refused the step: {reason}")


class PlaintextOnly(RFAError):
    """A rule that needs every individual update in the clear was asked to run securely."""


class NeedsVote(RFAError):
    """A two-phase rule (Cent2P, Mean2P) was asked for an aggregate without the clients' vote."""


class PersonalMeanError(RFAError, ValueError):
    """A personalised-mean-estimation problem or parameter breaks the paper's assumptions (rfa.personal_mean)."""


class PolicyError(RFAError, ValueError):
    """A public parameter of the privacy rule (C, the weight range, t, nu, s) is missing or out of range."""


class SurvivorSetChanged(CertificateViolation):
    """A later step of one aggregation would reveal a sum over a different set of clients than the first.

    Two sums over sets that differ by one client reveal that client's vector
    (with the same broadcast, beta_j w_j and beta_j are their differences), so
    every honest client refuses to unmask such a step (protocol_spec.md).
    """
