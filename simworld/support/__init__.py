"""Leaf helpers with no simworld dependencies beyond errors.

YAML input, secret masking, process tuning, hashing and seed derivation, the run-directory
layout, transcript events and who a message reached (``recipients``).
"""
