"""Loading a user's plug-in class by name: ``package.module:Name`` or ``/abs/file.py:Name``.

Shared by every plug-in point (extra trackers, interaction protocols, agent classes,
intervention types). Modules are imported with :mod:`importlib`, never eval'd; a scenario's
relative ``file.py`` paths are made absolute, from the scenario's folder, when it is loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from simworld.errors import ConfigError, PluginError
from simworld.support.hashing import sha256_hex

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_LOADED: dict[str, str] = {}
"""The source file of every plug-in module loaded in this process -> the scenario field that
named it first (:func:`plugin_fault`)."""


def import_file(path: str) -> ModuleType:
    """Import a Python file as a module of its own (once per file).

    Raises:
        ImportError: ``path`` is not a Python file.
    """
    name = f"simworld_plugin_{Path(path).stem}_{sha256_hex(path)[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"not a Python file: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def is_plugin_spec(spec: str) -> bool:
    """Whether ``spec`` names a plug-in (``module:Name`` or ``file.py:Name``)."""
    module, sep, name = spec.rpartition(":")
    return bool(sep and module and name.isidentifier())


def import_object(spec: str, *, source: str | Path, field: str) -> Any:
    """The object ``spec`` names (``package.module:Name`` or ``/abs/file.py:Name``).

    Args:
        spec: The plug-in's name.
        source: The scenario file, named in errors.
        field: The scenario field that gave ``spec``, named in errors.

    Raises:
        ConfigError: The module cannot be imported or has no such name.
    """
    module_name, _, name = spec.rpartition(":")
    try:
        if module_name.endswith(".py"):
            module = import_file(module_name)
        else:
            module = importlib.import_module(module_name)
    except (ImportError, OSError, SyntaxError) as exc:
        raise ConfigError(source, field, f"{spec}: cannot import {module_name}: {exc}") from exc
    except Exception as exc:  # the module's own code failed as it was imported
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise ConfigError(
            source,
            field,
            f"{spec}: importing {module_name} failed at {where.filename}, line {where.lineno}: "
            f"{type(exc).__name__}: {exc}",
        ) from exc
    if not hasattr(module, name):
        raise ConfigError(source, field, f"{spec}: no {name} in {module_name}")
    path = getattr(module, "__file__", None)
    if path is not None and not Path(path).resolve().is_relative_to(_PACKAGE_DIR):
        _LOADED.setdefault(str(Path(path).resolve()), field)
    return getattr(module, name)


def check_call(
    function: Any, n_args: int, *, source: str | Path, field: str, spec: str, call: str
) -> None:
    """Check, before a run starts, that simworld can call a plug-in's method as it will:
    with ``n_args`` positional arguments.

    Args:
        function: The bound method (or function) to check.
        n_args: Positional arguments simworld passes.
        source: The scenario file, named in errors.
        field: The scenario field that named the plug-in.
        spec: The plug-in's name.
        call: How simworld calls it, for the message (``observe(event)``).

    Raises:
        ConfigError: It cannot be called so.
    """
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # no signature to read (a builtin): it fails when called
        return
    try:
        signature.bind(*([None] * n_args))
    except TypeError as exc:
        raise ConfigError(source, field, f"{spec}: simworld calls {call}, but {exc}") from exc


def build_error(exc: Exception, *, source: str | Path, field: str, spec: str) -> ConfigError:
    """The one-line error for a plug-in whose constructor raised ``exc``."""
    why = plugin_fault(exc) or f"{type(exc).__name__}: {exc}"
    return ConfigError(source, field, f"{spec}: could not be built: {why}")


def plugin_fault(exc: BaseException) -> str | None:
    """One line on an error raised inside a plug-in's code, or ``None`` when no plug-in
    loaded in this process is among the frames it passed through.

    The line names the innermost plug-in frame (file, line, function), the scenario field
    that loaded the file, and the error. A :class:`~simworld.errors.PluginError` (a
    plug-in's result that simworld cannot use) is its own line.
    """
    if isinstance(exc, PluginError):
        return str(exc)
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if str(Path(frame.filename).resolve()) in _LOADED
    ]
    if not frames:
        return None
    last = frames[-1]
    field = _LOADED[str(Path(last.filename).resolve())]
    error = " ".join(f"{type(exc).__name__}: {exc}".split())
    return f"plug-in error ({field}): {last.filename}, line {last.lineno}, in {last.name}: {error}"


def snake_case(name: str) -> str:
    """``MessageLength`` -> ``message_length``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


__all__ = [
    "build_error",
    "check_call",
    "import_file",
    "import_object",
    "is_plugin_spec",
    "plugin_fault",
    "snake_case",
]
