"""Sweeps.

A scenario over a grid of parameters and seeds, its plan, store and executors.
"""
