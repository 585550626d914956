"""Leaf helpers with no simworld dependencies beyond errors.

YAML input, secret masking, process tuning, hashing and seed derivation, the run-directory
layout, transcript events, who a message reached (``recipients``), calls let into an
event loop one per turn (``turns``), loading a user's plug-in class by name (``plugins``)
and the progress of a step's model calls (``progress``).
"""
