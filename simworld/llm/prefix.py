r"""How much of each prompt a provider prefix cache could reuse: two estimates per call.

Providers with prefix caches (vLLM, SGLang, llama.cpp servers, hosted APIs) reuse the computed
state of a prompt's leading tokens when a new prompt starts with them. simworld cannot see
those caches, so it measures what they could reuse, twice:

- ``prefix_tokens``: the leading part of the prompt identical to the previous prompt of the
  same agent in the same role (:func:`chain_key`: the call identity's ``agent`` and the system
  message, so a persona's own calls form one chain and the annotator's stance or judge calls
  about its messages another). What a cache holding one entry per agent could reuse.
- ``cacheable_tokens``: the leading part that an *earlier* prompt of the run to the same
  model, of any agent, also starts with, counted in whole blocks as vLLM's automatic prefix
  caching and SGLang's radix cache do (a provider's cache is shared by every request it
  serves, and holds one model's states).
  :class:`BlockCache` cuts the prompt into blocks of :data:`CACHE_BLOCK_CHARS` characters;
  block *i* is identified by a digest chained over blocks 0..*i* (BLAKE2b of the previous
  block's digest and the block), so equal digests mean equal prompt starts. A call's cacheable
  part is its leading blocks whose digests were seen before (a partial last block never
  counts); then its own digests are added. The cache is bounded as a real one is: a
  least-recently-used set of at most :data:`CACHE_BLOCKS` digests (about 145 MB of memory
  when full, measured by ``benchmarks/bench_calls.py``; the main scenario uses a few
  thousand).

Tokens are estimated, not counted: the prompt is the chat messages as sent (each role and
content, in order, one ``role\ncontent\n`` block per message), and the prompt and both shared
parts are converted at :data:`CHARS_PER_TOKEN` characters per token (rounded down; a cache
block is 16 estimated tokens). The estimate is cheap, provider-independent and deterministic;
the shares (shared / prompt) are what matter, and they do not depend on the divisor much.

Deterministic by construction: :meth:`simworld.llm.gateway.Gateway.call` measures a call when
it starts, before its first ``await`` (so before the response cache is asked and before the
call is queued for a model slot); calls gathered together start in their given order, and one
agent's calls within a phase run one after the other, so neither an agent's "previous prompt"
nor the set of earlier prompts ever depends on which call returns first, or on the
concurrency. Every logical call is measured, cache hits and calls not sent included.

Where the meter lives: one per :class:`~simworld.llm.gateway.Gateway`, so one per run, in the
run's process. LLM worker processes (:mod:`simworld.llm.workers`) sit below the gateway and
only send requests, so every call of a run is measured in the parent, in call order. A
resumed run starts with an empty meter but re-executes the run from its first step (the
finished steps answered from the response cache), so its prompts are measured again in the
same order and both estimates equal those of an uninterrupted run; a branched run measures
its parent's replayed steps, then its own, on one meter. The block cache is the run's own: a
provider serving several runs (a sweep) may reuse more across them than it shows.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from simworld.llm.types import LLMRequest
from simworld.support.hashing import sha256_hex

CHARS_PER_TOKEN = 4
"""Characters per estimated token (the usual rule of thumb for English BPE vocabularies)."""

CACHE_BLOCK_CHARS = 64
"""Characters per block of :class:`BlockCache` (16 estimated tokens, vLLM's default block)."""

CACHE_BLOCKS = 1_048_576
"""The most block digests :class:`BlockCache` keeps (least recently used ones go first)."""

DIGEST_BYTES = 16
"""Bytes of a block's chained BLAKE2b digest."""


def prompt_text(request: LLMRequest) -> str:
    """The prompt as a prefix cache sees it: every message's role and content, in order."""
    return "".join(f"{m['role']}\n{m['content']}\n" for m in request.messages)


def chain_key(request: LLMRequest) -> str:
    """Whose previous prompt a call is measured against: its agent in the same role.

    The role is the system message: a persona's own calls (posts, probes, memory upkeep) share
    one chain per agent; the annotator's stance and judge calls about that agent's messages
    (another system message) form chains of their own.
    """
    system = next((m["content"] for m in request.messages if m["role"] == "system"), "")
    return f"{request.identity.agent}\n{sha256_hex(system)}"


def common_prefix_len(a: str, b: str) -> int:
    """Length of the longest common prefix of two strings.

    A bisection over slice comparisons (done in C): a character loop in Python cost a third
    of a millisecond per call on prompts of a few thousand characters.
    """
    lo, hi = 0, min(len(a), len(b))  # a[:lo] == b[:lo]; the answer lies in [lo, hi]
    if a[:hi] == b[:hi]:
        return hi
    while hi - lo > 1:  # invariant from here: a[:hi] != b[:hi]
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def estimate_tokens(chars: int) -> int:
    """Estimated tokens of ``chars`` characters."""
    return chars // CHARS_PER_TOKEN


@dataclass(frozen=True)
class PrefixCount:
    """One call's estimate.

    Attributes:
        prompt_tokens: Estimated tokens of the whole prompt.
        prefix_tokens: Estimated tokens of its leading part identical to the same agent's
            previous prompt (0 for an agent's first call).
        cacheable_tokens: Estimated tokens of its leading whole blocks that an earlier prompt
            of the run to the same model (any agent) also started with (:class:`BlockCache`).
    """

    prompt_tokens: int
    prefix_tokens: int
    cacheable_tokens: int


def block_digests(
    text: str, block_chars: int = CACHE_BLOCK_CHARS, *, model: str = ""
) -> list[bytes]:
    """The chained digests of ``text``'s whole blocks of ``block_chars`` characters.

    Digest *i* is BLAKE2b over digest *i - 1* and block *i* (UTF-8); the chain starts from
    the digest of ``model``, as a provider's cache holds one model's states. So two texts
    sent to one model have the same digest *i* exactly when their first *i + 1* blocks are
    equal (short of a 128-bit collision). A partial last block has no digest.
    """
    out: list[bytes] = []
    blake2b = hashlib.blake2b
    previous = blake2b(model.encode("utf-8"), digest_size=DIGEST_BYTES).digest()
    if text.isascii():  # one byte per character: cut the encoded text (a quarter faster)
        data = text.encode("ascii")
        for start in range(0, len(data) - block_chars + 1, block_chars):
            previous = blake2b(
                previous + data[start : start + block_chars], digest_size=DIGEST_BYTES
            ).digest()
            out.append(previous)
        return out
    for start in range(0, len(text) - block_chars + 1, block_chars):
        block = text[start : start + block_chars].encode("utf-8")
        previous = blake2b(previous + block, digest_size=DIGEST_BYTES).digest()
        out.append(previous)
    return out


class BlockCache:
    """The blocks a shared provider prefix cache would hold: a bounded LRU of chain digests.

    Args:
        capacity: The most digests kept; the least recently used go first.
        block_chars: Characters per block.
    """

    def __init__(self, capacity: int = CACHE_BLOCKS, block_chars: int = CACHE_BLOCK_CHARS) -> None:
        if capacity < 1 or block_chars < 1:
            raise ValueError("capacity and block_chars must be positive")
        self.capacity = capacity
        self.block_chars = block_chars
        self._lru: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, digest: object) -> bool:
        return digest in self._lru

    def measure(self, text: str, model: str = "") -> int:
        """Characters of ``text``'s leading blocks already cached for ``model``; then cache
        all its blocks.

        Every block of ``text`` becomes recently used, its first block most recently (the
        blocks are touched last to first), so a full cache evicts a prompt's tail before its
        head, as vLLM does: an evicted head would make the rest of its chain unreachable.
        """
        digests = block_digests(text, self.block_chars, model=model)
        hits = 0
        for digest in digests:
            if digest not in self._lru:
                break
            hits += 1
        lru = self._lru
        for digest in reversed(digests):
            if digest in lru:
                lru.move_to_end(digest)
            else:
                lru[digest] = None
        while len(lru) > self.capacity:
            lru.popitem(last=False)
        return hits * self.block_chars


class PrefixMeter:
    """Measures each call against its agent's previous prompt and against the run's blocks.

    Args:
        cache_blocks: The block cache's capacity (:data:`CACHE_BLOCKS`; smaller in tests).
    """

    def __init__(self, cache_blocks: int = CACHE_BLOCKS) -> None:
        self._last: dict[str, str] = {}
        self.blocks = BlockCache(cache_blocks)

    def measure(self, request: LLMRequest) -> PrefixCount:
        """Measure ``request`` against its agent's previous prompt and the earlier prompts'
        blocks, then remember it."""
        text = prompt_text(request)
        chain = chain_key(request)
        previous = self._last.get(chain, "")
        self._last[chain] = text
        shared = common_prefix_len(previous, text)
        cacheable = self.blocks.measure(text, request.model)
        return PrefixCount(
            estimate_tokens(len(text)), estimate_tokens(shared), estimate_tokens(cacheable)
        )


def prefix_share(prefix_tokens: int, prompt_tokens: int) -> float | None:
    """The share of estimated prompt tokens that repeat a prefix (None with no prompt)."""
    return prefix_tokens / prompt_tokens if prompt_tokens else None


__all__ = [
    "CACHE_BLOCKS",
    "CACHE_BLOCK_CHARS",
    "CHARS_PER_TOKEN",
    "DIGEST_BYTES",
    "BlockCache",
    "PrefixCount",
    "PrefixMeter",
    "block_digests",
    "chain_key",
    "common_prefix_len",
    "estimate_tokens",
    "prefix_share",
    "prompt_text",
]
