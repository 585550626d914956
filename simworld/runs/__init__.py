"""Run directories.

The incremental writer, running/resuming a scenario, replay and branching.
"""
