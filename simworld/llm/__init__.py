"""Request -> model.

The gateway (retries, cache, accounting), the litellm backend, worker processes,
log-probabilities, embeddings and the providers (fake, local). The only layer that imports
litellm.
"""
