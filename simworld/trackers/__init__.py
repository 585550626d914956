"""Trackers.

Measures derived live and after the fact from the transcript event stream, one frame each.
"""
