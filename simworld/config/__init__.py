"""The scenario schema (pydantic only).

One module per YAML section, loading and one-line file+field errors. Imports nothing but errors,
support and config itself.
"""
