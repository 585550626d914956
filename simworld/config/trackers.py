"""The ``trackers:`` section of a scenario: stance extraction, judges, BFI probes, extras."""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_STANCE_TEMPERATURE = 0.0
DEFAULT_CONSENSUS_THRESHOLD = 1.0
DEFAULT_BFI_INVENTORY: Final = "bfi10"
DEFAULT_BELIEVE_AT = 4
DEFAULT_SIGNAL_MODAL_SHARE = 0.8
DEFAULT_SIGNAL_POSITION_BIAS = 0.5
TRACKER_SPEC = r"^([A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*|[^:\n]+\.py):[A-Za-z_][\w]*$"
"""``package.module:ClassName`` or ``path/to/file.py:ClassName`` (a path relative to the
scenario file); imported with importlib, never evaluated."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BfiConfig(_Strict):
    """Big Five inventory administered as a private probe (docs/metrics.md §4).

    Attributes:
        steps: Steps after whose interaction (0: before any) every agent takes the inventory.
        inventory: ``bfi10`` (Rammstedt & John 2007) or ``bfi44`` (John & Srivastava 1999).
        shuffle_items: Show the items in a seeded random order per administration.
        shuffle_options: Show the answer options in a seeded random order per administration.
    """

    steps: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [0])
    inventory: Literal["bfi10", "bfi44"] = DEFAULT_BFI_INVENTORY
    shuffle_items: bool = True
    shuffle_options: bool = True


class BeliefConfig(_Strict):
    """Belief states on one claim, after Liu et al. 2024 (FPS, arXiv 2403.09498).

    An agent believes the claim at a probe when its answer on ``topic`` is at least
    ``believe_at``; see :func:`simworld.measures.belief_states` for the S / B / R states.

    Attributes:
        topic: A Likert topic stating the (false) claim.
        believe_at: The lowest answer that counts as believing (4 = "Agree" on five points).
    """

    topic: str
    believe_at: int = Field(default=DEFAULT_BELIEVE_AT, ge=1)


class SignalConfig(_Strict):
    """When the signal checks of a topic's probe answers warn (docs/metrics.md §8).

    Attributes:
        modal_share: Warn that answers are degenerate when at least this share of a
            topic's probe answers is the same option at every probe step (the lowest
            per-step modal share reaches it).
        position_bias: Warn that answers are mostly position-driven when the position-bias
            index reaches this value.
    """

    modal_share: float = Field(default=DEFAULT_SIGNAL_MODAL_SHARE, gt=0.0, le=1.0)
    position_bias: float = Field(default=DEFAULT_SIGNAL_POSITION_BIAS, gt=0.0, le=1.0)


INLINE_STANCE = "inline"
"""``trackers.stance: inline``: the speaker reports its stated position in the speech call."""


class TrackersConfig(_Strict):
    """What the engine measures besides the private opinion probes.

    Attributes:
        stance: Extract each public message's stated position (needed for D_i in
            docs/metrics.md §1 and stated neighbour opinions in §3): ``true`` with a
            separate structured call per message (an annotator reads the message),
            ``inline`` in the speech call itself (the speaker writes its message and reports
            the position it states in one structured answer: one call fewer per message,
            but the position is self-reported, not read off the text by a third party),
            ``false`` not at all.
        stance_temperature: Sampling temperature of the stance calls.
        judge: Also ask an LLM judge whether each message impersonates another persona
            (reported beside the pattern measure, which is always computed).
        bfi: Administer a Big Five inventory at some steps (off when absent).
        belief: Track belief states on a claim (off when absent).
        consensus_threshold: Share of the modal opinion that counts as consensus (§5).
        signal: Thresholds of the signal checks' warnings (§8).
        extra: More trackers, ``package.module:ClassName`` or ``file.py:ClassName`` (a
            Python file next to the scenario, or a path relative to it); each class is
            built with no arguments (or with ``context=`` when its constructor takes it)
            and must have ``observe(event)`` and ``rows()``. Their frames are written,
            re-derived by ``simworld analyze`` and shown in the report like the built-ins.
    """

    stance: bool | Literal["inline"] = True
    stance_temperature: float = Field(default=DEFAULT_STANCE_TEMPERATURE, ge=0.0, le=2.0)
    judge: bool = False
    bfi: BfiConfig | None = None
    belief: BeliefConfig | None = None
    consensus_threshold: float = Field(default=DEFAULT_CONSENSUS_THRESHOLD, gt=0.0, le=1.0)
    signal: SignalConfig = Field(default_factory=SignalConfig)
    extra: list[Annotated[str, Field(pattern=TRACKER_SPEC)]] = Field(default_factory=list)


__all__ = ["INLINE_STANCE", "BeliefConfig", "BfiConfig", "SignalConfig", "TrackersConfig"]
