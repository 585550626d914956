"""Custom litellm providers.

The deterministic fake model, the embedded local model (llama.cpp) and their registry.
"""
