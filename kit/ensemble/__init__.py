"""Ensembles of variants: member calibration, weights, the blend pipeline and test-time aggregation."""
