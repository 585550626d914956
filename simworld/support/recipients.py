"""Who a ``message`` event reaches: its ``to`` field, written compactly or as a list.

A message heard by all of its speaker's neighbours would list every one of them; on a
complete graph that is O(n²) ids per step. Such a message records instead

    "to": {"neighbours_of": "<agent id>"}

meaning: every neighbour of that agent (always the speaker) in the network *as the
transcript records it at that point* — the ``run_start`` event's ``edges``, changed by the
``edges_removed`` and ``edges_added`` of the ``intervention`` events before the message.
Every other message (a partner, a group's linked members, a subset a plugin's
``addressees`` chose, a single neighbour) lists its listeners' ids explicitly, as every
message of transcripts written before this form existed does.

The engine writes the compact form only where it resolves, through this very class, to
the listeners it delivered to; a graph change no event records therefore falls back to the
explicit list. Readers resolve both forms with :class:`Recipients` (fed every event in
order), or read a whole transcript with :func:`explicit_events`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

Event = dict[str, Any]
RecipientsFormat = Literal["compact", "explicit"]
"""How a run directory's transcript writes ``to``: ``compact`` (since the form existed)
or ``explicit`` (a list on every message: run directories written before; the manifest's
``recipients`` field says which, absent meaning ``explicit``)."""
COMPACT: RecipientsFormat = "compact"
EXPLICIT: RecipientsFormat = "explicit"
NEIGHBOURS_OF = "neighbours_of"
"""The key of the compact ``to``."""
MIN_COMPACT = 2
"""Fewest listeners written compactly (one id is shorter as a list)."""


class UnresolvedRecipients(ValueError):
    """A message's ``to`` that names no known agent, or has neither form."""


class Recipients:
    """The network as a transcript records it, and the listeners of its messages.

    Feed it every event in transcript order (:meth:`observe`); then :meth:`of` gives a
    message's listeners whichever form its ``to`` has.
    """

    def __init__(self) -> None:
        self._node: dict[str, int] = {}
        self._key: dict[int, str] = {}
        self._adjacent: dict[int, set[int]] = {}
        self._lists: dict[str, list[str]] = {}

    def observe(self, event: Event) -> None:
        """Follow the network through ``run_start`` and ``intervention`` events."""
        kind = event.get("type")
        if kind == "run_start":
            self._node, self._key, self._adjacent = {}, {}, {}
            for agent in event.get("agents") or []:
                node = int(agent["node"])
                self._node[str(agent["agent"])] = node
                self._key[node] = str(agent["agent"])
                self._adjacent[node] = set()
            self._change(event.get("edges"), add=True)
            self._lists = {}
        elif kind == "intervention":
            # a custom intervention may carry these keys too: the engine writes the compact
            # form only where this reading of them holds (see the module's docstring)
            self._change(event.get("edges_removed"), add=False)
            self._change(event.get("edges_added"), add=True)

    def _change(self, edges: Any, *, add: bool) -> None:
        if not isinstance(edges, list):
            return
        for edge in edges:
            if not (isinstance(edge, list) and len(edge) == 2):
                continue
            u, v = edge
            if not (isinstance(u, int) and isinstance(v, int)) or u == v:
                continue
            if u not in self._adjacent or v not in self._adjacent:
                continue
            if add:
                self._adjacent[u].add(v)
                self._adjacent[v].add(u)
            else:
                self._adjacent[u].discard(v)
                self._adjacent[v].discard(u)
            self._lists.pop(self._key[u], None)
            self._lists.pop(self._key[v], None)

    def neighbours(self, agent: str) -> list[str]:
        """The ids of ``agent``'s neighbours now, in node order (a shared list: read only).

        Raises:
            UnresolvedRecipients: No such agent in the ``run_start`` event.
        """
        found = self._lists.get(agent)
        if found is None:
            node = self._node.get(agent)
            if node is None:
                raise UnresolvedRecipients(f"no agent {agent!r} in the run_start event")
            found = self._lists[agent] = [self._key[n] for n in sorted(self._adjacent[node])]
        return found

    def of(self, message: Event) -> list[str]:
        """The ids of the agents ``message`` reached, in the order recorded.

        Raises:
            UnresolvedRecipients: A ``to`` of neither form, or naming an unknown agent.
        """
        to = message.get("to")
        if to is None:
            return []
        if isinstance(to, list):
            return to
        if isinstance(to, dict) and set(to) == {NEIGHBOURS_OF}:
            return self.neighbours(str(to[NEIGHBOURS_OF]))
        raise UnresolvedRecipients(f"'to' is neither a list of ids nor {{{NEIGHBOURS_OF!r}: id}}")

    def compact(self, speaker: str, listeners: Sequence[str]) -> list[str] | dict[str, str]:
        """The ``to`` to write for a message of ``speaker`` heard by ``listeners``.

        The compact form when the listeners are exactly the speaker's neighbours (at least
        :data:`MIN_COMPACT`) as recorded; else the list.
        """
        listed = list(listeners)
        whole = len(listed) >= MIN_COMPACT and speaker in self._node
        return {NEIGHBOURS_OF: speaker} if whole and listed == self.neighbours(speaker) else listed

    def explicit(self, event: Event) -> Event:
        """``event`` with its ``to`` as a list (the same object if it was one already).

        Raises:
            UnresolvedRecipients: See :meth:`of`.
        """
        to = event.get("to")
        if to is None or isinstance(to, list):
            return event
        return {**event, "to": self.of(event)}


def explicit_events(events: Iterable[Event]) -> Iterator[Event]:
    """Events in order, every ``message``'s ``to`` as a list (see :class:`Recipients`).

    Raises:
        UnresolvedRecipients: A ``to`` that does not resolve (see :meth:`Recipients.of`).
    """
    recipients = Recipients()
    for event in events:
        recipients.observe(event)
        yield recipients.explicit(event) if event.get("type") == "message" else event


__all__ = [
    "COMPACT",
    "EXPLICIT",
    "NEIGHBOURS_OF",
    "Recipients",
    "RecipientsFormat",
    "UnresolvedRecipients",
    "explicit_events",
]
