"""Calibration: INT8 calibration of the classifier (int8) and spotting thresholds (spot)."""
