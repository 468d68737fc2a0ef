"""Why a finished run scored what it did: the report, curve findings, label issues, leakage, calibration."""
