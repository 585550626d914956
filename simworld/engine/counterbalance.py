"""Counterbalanced probes: the order in which a probe shows a topic's options.

LLM survey answers are known to follow the position and label of an option more than the
question (Dominguez-Olmedo et al. 2024; Tjuatja et al. 2024). With ``protocol.counterbalance``
on (the default), every private probe shows its options in an order drawn from the call's
identity (agent, step, topic, run seed), so the same persona sees different orders at
different steps and a position effect can be told apart from an opinion
(docs/metrics.md §8):

- a Likert topic is shown either in its own direction (``1 = <first label> … K = <last>``)
  or reversed (``1 = <last label> … K = <first>``), each with probability 1/2;
- a choice topic shows its option texts in a uniformly random permutation under the fixed
  letters ``A, B, …``.

The codes the model answers with (``1..K`` or the letters) stay where they are; only the
contents move. The answer is mapped back to the topic's own value before anything else
sees it; the probe row records the order shown (``order``), the code the model gave
(``shown_answer``) and its 0-based position (``position``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from simworld.config.scenario import OpinionValue, Topic
from simworld.llm.types import CallIdentity
from simworld.support.hashing import canonical_json, sha256_hex

ORDER_SALT = "counterbalance"
"""Mixed into the call identity's hash so the order is independent of the sampling seed."""


@dataclass(frozen=True)
class ShownOrder:
    """The options of one probe in the order shown.

    Attributes:
        codes: The codes shown, top to bottom (the topic's values in their own order).
        values: The topic's value whose label is shown at each position.
    """

    codes: tuple[str, ...]
    values: tuple[str, ...]

    @property
    def identity(self) -> bool:
        """Whether the options are shown in the topic's own order."""
        return self.codes == self.values

    @property
    def text(self) -> str:
        """The order as recorded: the topic's values in shown order, comma-separated."""
        return ",".join(self.values)

    def position(self, code: object) -> int | None:
        """0-based position of an answered code (None: not a code of this probe)."""
        try:
            return self.codes.index(str(code))
        except ValueError:
            return None

    def original(self, code: object) -> str | None:
        """The topic's value behind an answered code (None: not a code of this probe)."""
        pos = self.position(code)
        return None if pos is None else self.values[pos]

    def original_probs(self, probs: Mapping[str, float]) -> dict[str, float]:
        """Option probabilities keyed by shown code, re-keyed by the topic's values."""
        out: dict[str, float] = {}
        for code, p in probs.items():
            value = self.original(code)
            if value is not None:
                out[value] = p
        return out


def parse_order(text: str | None) -> tuple[str, ...] | None:
    """The recorded ``order`` column back as a tuple of values (None when not recorded)."""
    if text is None or not isinstance(text, str) or not text:
        return None
    return tuple(text.split(","))


def order_seed(identity: CallIdentity) -> int:
    """A 64-bit seed for the order, from the call's identity."""
    digest = sha256_hex(canonical_json({**identity.as_dict(), "salt": ORDER_SALT}))
    return int(digest[:16], 16)


def shown_order(topic: Topic, identity: CallIdentity, *, counterbalance: bool) -> ShownOrder:
    """The order a probe of ``topic`` shows its options in (see the module docstring).

    Args:
        topic: The probed topic.
        identity: The probe call's identity (its seed, agent, step and purpose).
        counterbalance: Permute (True) or show the topic's own order (False).

    Returns:
        The shown order; with ``counterbalance=False`` the identity order.
    """
    codes = tuple(str(v) for v in topic.scale.values)
    if not counterbalance:
        return ShownOrder(codes, codes)
    rng = np.random.default_rng(order_seed(identity))
    if topic.ordinal:
        values = codes[::-1] if rng.random() < 0.5 else codes
    else:
        values = tuple(codes[int(i)] for i in rng.permutation(len(codes)))
    return ShownOrder(codes, values)


def options_lines(topic: Topic, order: ShownOrder) -> list[tuple[str, str]]:
    """``(code, label)`` per shown position: the code stays, the label is the moved value's."""
    return [
        (c, topic.scale.label(_as_value(topic, v)))
        for c, v in zip(order.codes, order.values, strict=True)
    ]


def _as_value(topic: Topic, value: str) -> OpinionValue:
    return int(value) if topic.ordinal else value


def reversed_order(order: Sequence[str]) -> bool:
    """Whether a recorded Likert order is the reversed direction (``K,…,1``)."""
    return len(order) > 1 and [int(v) for v in order] == sorted(
        (int(v) for v in order), reverse=True
    )


__all__ = [
    "ORDER_SALT",
    "ShownOrder",
    "options_lines",
    "order_seed",
    "parse_order",
    "reversed_order",
    "shown_order",
]
