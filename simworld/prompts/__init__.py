"""Every prompt template (prompts.yaml, as data) and the helpers that fill them."""
