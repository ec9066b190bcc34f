"""The decision layer: the metric, calibration, decision rules, candidates and nested cross-validation."""
