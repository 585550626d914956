"""Canonical JSON, hashing and seed derivation: the one place seeds are derived from parts.

Every seeded choice that must not depend on call order (a model call's sampling seed, a BFI
administration's item order, a forgetting pass) derives its seed from the run seed and the
parts that identify it, hashed in canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

SEED_BITS = 31
"""Bits of a derived seed unless told otherwise (fits a signed 32-bit integer)."""


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces: the byte form hashed for cache keys."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_hex(text: str) -> str:
    """Hex SHA-256 of UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def derive_seed(parts: Mapping[str, Any], *, bits: int = SEED_BITS) -> int:
    """A seed of ``bits`` bits derived from ``parts`` (the SHA-256 of their canonical JSON).

    Args:
        parts: What identifies the seeded choice, e.g. ``{"seed": 3, "agent": "a1",
            "step": 2, "for": "bfi"}``; the run seed must be one of them.
        bits: Width of the result (the leading ``ceil(bits / 4)`` hex digits of the digest,
            masked to ``bits`` bits).

    Returns:
        A non-negative integer below ``2**bits``.
    """
    digest = sha256_hex(canonical_json(dict(parts)))
    return int(digest[: -(-bits // 4)], 16) & ((1 << bits) - 1)
