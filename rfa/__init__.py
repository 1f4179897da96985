"""Robust Federated Aggregation: the geometric median and the rules it is compared with."""

from .errors import CertificateViolation, PlaintextOnly, PolicyError, RFAError, SurvivorSetChanged, UncertifiableBound
from .privacy import PrivacyPolicy, certified_weight, smallest_nu, weight_floor
from .secure import (
    CohortSession,
    SecureAggregate,
    StepRecord,
    one_step_geometric_median,
    secure_geometric_median,
    secure_mean,
)

from .aggregators import (
    Aggregator,
    CenteredClipping,
    CenterWithOutliers,
    CoordinateMedian,
    GeometricMedianRule,
    Krum,
    Mean,
    MeanWithOutliers,
    MultiKrum,
    NormClippedMean,
    OneStepRule,
    TrimmedMean,
    make_aggregator,
    registry,
)
from .weiszfeld import GeometricMedianResult, PointsError, WeightError, geometric_median, one_step, weiszfeld_weights

__all__ = [
    "CertificateViolation",
    "CohortSession",
    "PlaintextOnly",
    "PolicyError",
    "PrivacyPolicy",
    "RFAError",
    "SecureAggregate",
    "StepRecord",
    "SurvivorSetChanged",
    "UncertifiableBound",
    "certified_weight",
    "one_step_geometric_median",
    "secure_geometric_median",
    "secure_mean",
    "smallest_nu",
    "weight_floor",
    "Aggregator",
    "CenterWithOutliers",
    "CenteredClipping",
    "CoordinateMedian",
    "GeometricMedianResult",
    "GeometricMedianRule",
    "Krum",
    "Mean",
    "MeanWithOutliers",
    "MultiKrum",
    "NormClippedMean",
    "OneStepRule",
    "PointsError",
    "TrimmedMean",
    "WeightError",
    "geometric_median",
    "make_aggregator",
    "one_step",
    "registry",
    "weiszfeld_weights",
]
