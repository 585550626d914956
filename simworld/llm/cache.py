"""Content-addressed record/replay store of model call outcomes, in SQLite."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

CACHE_MODES = ("off", "record", "replay")
WAL_SWITCH_ATTEMPTS = 200
WAL_SWITCH_WAIT_S = 0.05
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outcomes (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    outcome TEXT NOT NULL
)
"""


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch a connection to WAL, retrying while the file is locked.

    The switch does not wait on the busy timeout, so several processes opening one new file
    at once (sweep workers starting together) would otherwise fail with "database is locked".
    """
    for attempt in range(WAL_SWITCH_ATTEMPTS):
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == WAL_SWITCH_ATTEMPTS - 1:
                raise
            time.sleep(WAL_SWITCH_WAIT_S)


class ResponseCache:
    """Outcomes of logical model calls keyed by :meth:`LLMRequest.cache_key`.

    Safe for several processes: WAL journal, a busy timeout, and ``INSERT OR IGNORE`` so the
    first writer of a key wins and no write is lost or torn.

    Args:
        path: The SQLite file (created with its folder when missing); ``":memory:"`` for tests.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn: sqlite3.Connection | None = None

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection, opened (and the file created) at first use, not before."""
        if self._conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 60000")
            if self.path != ":memory:":
                _enable_wal(conn)
                conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(_SCHEMA)
            self._conn = conn
        return self._conn

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored outcome for ``key``, or ``None``."""
        row = self._db.execute("SELECT outcome FROM outcomes WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, model: str, outcome: dict[str, Any], *, replace: bool = False) -> None:
        """Store an outcome unless the key is already present (or replace what is there:
        a recorded failure tried again)."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        self._db.execute(
            f"{verb} INTO outcomes (key, model, outcome) VALUES (?, ?, ?)",
            (key, model, json.dumps(outcome, sort_keys=True)),
        )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0])

    def close(self) -> None:
        """Close the connection (if it was ever opened)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
