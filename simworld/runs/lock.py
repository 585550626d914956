"""Claiming and locking run directories, so that parallel processes never share one.

A new run claims its directory with one ``mkdir`` (atomic: of several processes asking for
the same name, exactly one gets it; the others take the next free name). Every process that
writes a run directory (a run, a resume, a replay or branch into it) holds an exclusive
``flock`` on the directory itself while it works: a second process is refused at once, with
one line, instead of both writing the same files.

A directory that holds nothing but hidden temporary files (``.manifest.json.tmp``) is a run
killed before its first manifest was written: ``run --out`` may claim it again.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from simworld.errors import ConfigError, ResumeError

MAX_CLAIM_ATTEMPTS = 10_000
_held: dict[Path, tuple[int, int]] = {}
"""Locks this process holds: directory → (file descriptor, depth)."""


def is_unstarted(path: Path) -> bool:
    """Whether ``path`` is a directory with no visible file: a run killed before it wrote
    its first manifest (or an empty directory made for it)."""
    try:
        return path.is_dir() and all(p.name.startswith(".") for p in path.iterdir())
    except OSError:
        return False


def claim(path: Path) -> None:
    """Create the run directory ``path`` for this process (its parents as needed).

    Raises:
        ConfigError: ``path`` already holds a run (or anything else than an unstarted run).
    """
    _make_parents(path)
    try:
        os.mkdir(path)
    except FileExistsError:
        if not is_unstarted(path):
            raise ConfigError(path, "", "run directory already exists") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot create the run directory: {exc.strerror}") from None


def claim_new(root: Path, scenario: str, seed: int) -> Path:
    """Claim a fresh ``root/<scenario>/<timestamp>-s<seed>`` directory (``-2``, ``-3`` …
    when another process took the name first) and return it."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = root / scenario / f"{stamp}-s{seed}"
    _make_parents(base)
    for n in range(1, MAX_CLAIM_ATTEMPTS + 1):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        except OSError as exc:
            raise ConfigError(
                path, "", f"cannot create the run directory: {exc.strerror}"
            ) from None
        return path
    raise ConfigError(base, "", f"no free run directory name after {MAX_CLAIM_ATTEMPTS} tries")


def _make_parents(path: Path) -> None:
    """Create the folders above ``path``.

    Raises:
        ConfigError: One of them is a file, or cannot be created.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in path.parents if p.is_file()), path.parent)
        reason = "is a file" if blocker.is_file() else (exc.strerror or str(exc))
        raise ConfigError(blocker, "", f"cannot hold run directories: {reason}") from None


@contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the exclusive lock on ``run_dir`` (re-entrant within this process).

    Raises:
        ResumeError: Another process holds it (a live run, resume or replay).
        ConfigError: ``run_dir`` is not a directory.
    """
    key = run_dir.resolve()
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
    else:
        try:
            fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            raise ConfigError(run_dir, "", "not a run directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ResumeError(
                f"{run_dir}: in use by another simworld process (a live run, resume or "
                "replay); try again once it has finished"
            ) from None
        _held[key] = (fd, 1)
    try:
        yield
    finally:
        fd, depth = _held[key]
        if depth > 1:
            _held[key] = (fd, depth - 1)
        else:
            del _held[key]
            os.close(fd)  # releases the lock
