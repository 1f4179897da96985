"""Errors of the rfa package.

``UncertifiableBound`` is raised before anything is sent when no smoothing
parameter can certify the requested privacy-weight bound.
``CertificateViolation`` stops a step before any masked input is sent: the
server or a client found that the step could reveal an effective weight above
the bound (or a client received a broadcast outside the public norm ball).
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


class PersonalMeanError(RFAError, ValueError):
    """A personalised-mean-estimation problem or parameter breaks the paper's assumptions (rfa.personal_mean)."""
