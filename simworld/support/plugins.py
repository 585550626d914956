"""Loading a user's plug-in class by name: ``package.module:Name`` or ``/abs/file.py:Name``.

Shared by every plug-in point (extra trackers, interaction protocols, agent classes,
intervention types). Modules are imported with :mod:`importlib`, never eval'd; a scenario's
relative ``file.py`` paths are made absolute, from the scenario's folder, when it is loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from simworld.errors import ConfigError
from simworld.support.hashing import sha256_hex


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
    if not hasattr(module, name):
        raise ConfigError(source, field, f"{spec}: no {name} in {module_name}")
    return getattr(module, name)


def snake_case(name: str) -> str:
    """``MessageLength`` -> ``message_length``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


__all__ = ["import_file", "import_object", "is_plugin_spec", "snake_case"]
