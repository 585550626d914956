"""Custom litellm providers.

The deterministic fake model, the embedded local model (llama.cpp) and their registry; and
llama-cpp-python's OpenAI-compatible server, started so that it runs on AMX hosts.
"""
