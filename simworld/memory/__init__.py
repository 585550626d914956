"""Agent memory.

The Memory protocol, the simple and the stream memory, importance rating, reflection, retrieval,
forgetting and the Chroma copy.
"""
