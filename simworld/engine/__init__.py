"""The Mesa model and its step.

Persona agents, probes and annotation, the Asch design, BFI probes, interventions, baseline
policies and grouping.
"""
