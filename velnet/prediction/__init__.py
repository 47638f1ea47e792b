"""Whole-box prediction with a trained model or a classical estimator, and its power-preserving calibration."""
