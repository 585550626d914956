"""The wire protocol between the parent and an LLM worker process.

Length-prefixed pickles over a socket pair between the two processes (never read from disk).
Parent to worker ``(CALL, id, request, attempt, timeout_s, transient)`` and ``(CANCEL, id)``;
worker to parent ``(READY,)`` once, then ``(RESULT, id, completion, error)``. The parent's side is
:mod:`simworld.llm.workers`, the worker's :mod:`simworld.llm.worker` (started as
``python -m`` :data:`WORKER_MODULE`).
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

WORKER_MODULE = "simworld.llm.worker"
READY_TIMEOUT_S = 120.0
HEADER = struct.Struct("!I")
CALL, CANCEL, READY, RESULT = "call", "cancel", "ready", "result"


def frame(message: tuple[Any, ...]) -> bytes:
    """One protocol message, pickled and length-prefixed."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data
