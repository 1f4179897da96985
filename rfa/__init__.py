"""Robust Federated Aggregation: the geometric median and the rules it is compared with."""

from secagg import __version__

from .errors import CertificateViolation, InvalidArgument, NeedsVote, PlaintextOnly, RFAError, UncertifiableBound
from .privacy import PrivacyPolicy, certified_weight, smallest_nu, weight_floor
from .secure import SecureAggregate, StepRecord, one_step_geometric_median, secure_geometric_median, secure_mean

from .aggregators import (
    Aggregator,
    Cent2P,
    CenteredClipping,
    CenterOuter,
    CenterWithOutliers,
    CoordinateMedian,
    GeometricMedianRule,
    Krum,
    Mean,
    Mean2P,
    MeanOuter,
    MeanWithOutliers,
    MultiKrum,
    NormClippedMean,
    OneStepRule,
    TrimmedMean,
    TwoPhaseRule,
    make_aggregator,
    registry,
)
from .weiszfeld import GeometricMedianResult, PointsError, WeightError, geometric_median, one_step, weiszfeld_weights

__all__ = [
    "__version__",
    "CertificateViolation",
    "InvalidArgument",
    "NeedsVote",
    "PlaintextOnly",
    "PrivacyPolicy",
    "RFAError",
    "SecureAggregate",
    "StepRecord",
    "UncertifiableBound",
    "certified_weight",
    "one_step_geometric_median",
    "secure_geometric_median",
    "secure_mean",
    "smallest_nu",
    "weight_floor",
    "Aggregator",
    "Cent2P",
    "CenterOuter",
    "CenterWithOutliers",
    "CenteredClipping",
    "CoordinateMedian",
    "GeometricMedianResult",
    "GeometricMedianRule",
    "Krum",
    "Mean",
    "Mean2P",
    "MeanOuter",
    "MeanWithOutliers",
    "MultiKrum",
    "NormClippedMean",
    "OneStepRule",
    "PointsError",
    "TrimmedMean",
    "TwoPhaseRule",
    "WeightError",
    "geometric_median",
    "make_aggregator",
    "one_step",
    "registry",
    "weiszfeld_weights",
]
