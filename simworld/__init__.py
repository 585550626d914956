"""simworld: multi-agent social simulation with LLM-backed persona agents."""

import os

# litellm fetches a cost map over the network at import unless told not to; simworld never
# needs the network, so this is set before any module imports litellm.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

__version__ = "0.1.0"
