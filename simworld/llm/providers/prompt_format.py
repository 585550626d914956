"""The prompt format simworld's own providers parse: one home for the patterns.

The fake provider answers from what the prompt says, and the local provider turns a chat into
one dialogue; both read conventions of the templates in ``simworld/prompts/prompts.yaml``.
Those conventions are pinned here (and by a test that renders the templates and parses them):

- ``Topic: <statement>``: the topic line of ``post``, ``pair_open``, ``pair_reply``,
  ``group_turn``, ``probe`` and ``asch``;
- ``  <value> = <label>``: one option line each (``option_line``);
- ``- <statement>: <label>``: the persona's start views (``start_view_line``);
- ``You are <name>,``: the opening of the persona's system prompt (``persona_system``).
"""

from __future__ import annotations

import re

OPTION_LINE = re.compile(r"^  (\S+) = (.+)$", re.MULTILINE)
"""An option line: ``(value, label)``."""
TOPIC_LINE = re.compile(r"^Topic: (.+)$", re.MULTILINE)
"""The topic line: ``statement``."""
SPEAKER = re.compile(r"^You are ([^,.\n]{1,80})[,.]")
"""The persona's name at the start of the system prompt."""
