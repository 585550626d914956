r"""How much of each prompt repeats the same agent's previous prompt: the provider-cacheable prefix.

Providers with prefix caches (vLLM, llama.cpp servers, hosted APIs) reuse the computed state
of a prompt's leading tokens when a new prompt starts with them. simworld cannot see those
caches, so it measures what they could reuse: for every call, the leading part of its prompt
that is identical to the previous prompt of the same agent in the same role
(:func:`chain_key`: the call identity's ``agent`` and the system message, so a persona's own
calls form one chain and the annotator's stance or judge calls about its messages another).

Tokens are estimated, not counted: the prompt is the chat messages as sent (each role and
content, in order, one ``role\ncontent\n`` block per message), and both the prompt and its
shared prefix are converted at :data:`CHARS_PER_TOKEN` characters per token (rounded down).
The estimate is cheap, provider-independent and deterministic; the share (shared / prompt)
is what matters, and it does not depend on the divisor much.

Deterministic by construction: the gateway measures a call when it starts, before its first
``await``; calls gathered together start in their given order, and one agent's calls within
a phase run one after the other, so an agent's "previous prompt" never depends on which call
returns first, or on the concurrency.
"""

from __future__ import annotations

from dataclasses import dataclass

from simworld.llm.types import LLMRequest
from simworld.support.hashing import sha256_hex

CHARS_PER_TOKEN = 4
"""Characters per estimated token (the usual rule of thumb for English BPE vocabularies)."""


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
    """

    prompt_tokens: int
    prefix_tokens: int


class PrefixMeter:
    """Remembers each agent's last prompt and measures the next one against it."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}

    def measure(self, request: LLMRequest) -> PrefixCount:
        """Measure ``request`` against its agent's previous prompt, then remember it."""
        text = prompt_text(request)
        chain = chain_key(request)
        previous = self._last.get(chain, "")
        self._last[chain] = text
        shared = common_prefix_len(previous, text)
        return PrefixCount(estimate_tokens(len(text)), estimate_tokens(shared))


def prefix_share(prefix_tokens: int, prompt_tokens: int) -> float | None:
    """The share of estimated prompt tokens that repeat a prefix (None with no prompt)."""
    return prefix_tokens / prompt_tokens if prompt_tokens else None


__all__ = [
    "CHARS_PER_TOKEN",
    "PrefixCount",
    "PrefixMeter",
    "chain_key",
    "common_prefix_len",
    "estimate_tokens",
    "prefix_share",
    "prompt_text",
]
