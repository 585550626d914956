"""Request -> model.

The gateway (retries, cache, accounting), the litellm backend, worker processes,
log-probabilities, embeddings and the providers (fake, local); model servers: endpoints and
keys, the Router over several deployments, and a fake OpenAI-compatible server for tests. The
only layer that imports litellm.
"""
