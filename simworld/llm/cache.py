"""Content-addressed record/replay store of model call outcomes, in SQLite."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from simworld.errors import ConfigError

CACHE_MODES = ("off", "record", "replay")
SQLITE_HEADER = b"SQLite format 3\x00"
KEY_BATCH = 500
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


def check_cache_file(path: str | Path, *, deep: bool = False, writable: bool = False) -> None:
    """Check, before anything is written, that ``path`` can be the record/replay cache.

    Args:
        path: The SQLite file (it may not exist yet).
        deep: Also read the whole database (``PRAGMA quick_check``): for a cache a run is
            about to be resumed or replayed from.
        writable: The run records into it: the file, or the folder it is to be made in, must
            be writable.

    Raises:
        ConfigError: ``path`` is a directory, sits under a file, cannot be written (with
            ``writable``), is not a SQLite database, or is damaged.
    """
    p = Path(path)
    if str(path) == ":memory:":
        return
    if p.is_dir():
        raise ConfigError(p, "", "is a directory; the cache is a SQLite file")
    parent = next((a for a in p.parents if a.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(p, "", f"{parent} is a file, not a directory")
    target = p if p.exists() else parent
    if writable and target is not None and not os.access(target, os.W_OK):
        raise ConfigError(p, "", f"cannot record into the cache: {target} is not writable")
    if not p.exists():
        return
    try:
        with open(p, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise ConfigError(p, "", f"cannot read the cache: {exc.strerror or exc}") from None
    if head and head != SQLITE_HEADER:
        raise ConfigError(p, "", "damaged: not a SQLite database (bad header)")
    if deep and head:
        try:
            conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=60.0)
            try:
                result = conn.execute("PRAGMA quick_check(1)").fetchone()
                conn.execute("SELECT key, outcome FROM outcomes LIMIT 1").fetchall()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            if not os.access(p.parent, os.W_OK):  # read-only storage, not damage
                raise ConfigError(
                    p,
                    "",
                    f"cannot open the cache: {p.parent} is not writable, and SQLite writes "
                    "beside a cache even to read it (its -wal and -shm files); copy the cache "
                    "to writable storage and give it with --cache",
                ) from None
            raise ConfigError(p, "", f"damaged: {exc}") from None
        if result is None or result[0] != "ok":
            raise ConfigError(p, "", f"damaged: {result[0] if result else 'unreadable'}")


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

    def missing(self, keys: list[str]) -> list[str]:
        """The keys of ``keys`` that the cache does not hold, in their order."""
        held: set[str] = set()
        unique = sorted(set(keys))
        for i in range(0, len(unique), KEY_BATCH):
            batch = unique[i : i + KEY_BATCH]
            marks = ",".join("?" * len(batch))
            rows = self._db.execute(f"SELECT key FROM outcomes WHERE key IN ({marks})", batch)
            held.update(row[0] for row in rows)
        return [k for k in keys if k not in held]

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0])

    def close(self) -> None:
        """Close the connection (if it was ever opened)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
