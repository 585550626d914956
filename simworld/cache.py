"""Content-addressed record/replay store of model call outcomes, in SQLite."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

CACHE_MODES = ("off", "record", "replay")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outcomes (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    outcome TEXT NOT NULL
)
"""


class ResponseCache:
    """Outcomes of logical model calls keyed by :meth:`LLMRequest.cache_key`.

    Safe for several processes: WAL journal, a busy timeout, and ``INSERT OR IGNORE`` so the
    first writer of a key wins and no write is lost or torn.

    Args:
        path: The SQLite file (created with its folder when missing); ``":memory:"`` for tests.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 60000")
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute(_SCHEMA)

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored outcome for ``key``, or ``None``."""
        row = self._db.execute("SELECT outcome FROM outcomes WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, model: str, outcome: dict[str, Any]) -> None:
        """Store an outcome unless the key is already present."""
        self._db.execute(
            "INSERT OR IGNORE INTO outcomes (key, model, outcome) VALUES (?, ?, ?)",
            (key, model, json.dumps(outcome, sort_keys=True)),
        )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0])

    def close(self) -> None:
        """Close the connection."""
        self._db.close()
