"""Reading a GGUF file's metadata header (the model's key-value pairs) without loading it.

Only what simworld checks before a run is read: the context length the model was trained
with. The layout (little-endian): magic ``GGUF``, version (u32), tensor count (u64),
key-value count (u64), then each pair as key (u64 length and UTF-8 bytes), value type
(u32) and value; arrays hold their element type (u32), length (u64) and elements.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

MAGIC = b"GGUF"
_STRING, _ARRAY = 8, 9
# fixed-size value types: their struct format
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}


class GGUFError(ValueError):
    """The file is not a GGUF file, or its header is cut short or malformed."""


def _read(fh: BinaryIO, fmt: str) -> int | float | bool:
    size = struct.calcsize(fmt)
    data = fh.read(size)
    if len(data) != size:
        raise GGUFError("the header ends early")
    value: int | float | bool = struct.unpack(fmt, data)[0]
    return value


def _string(fh: BinaryIO) -> str:
    size = int(_read(fh, "<Q"))
    data = fh.read(size)
    if len(data) != size:
        raise GGUFError("the header ends early")
    return data.decode("utf-8", errors="replace")


def _value(fh: BinaryIO, kind: int) -> object:
    """One value of type ``kind``; an array's elements are skipped (``None``)."""
    if kind in _SCALARS:
        return _read(fh, _SCALARS[kind])
    if kind == _STRING:
        return _string(fh)
    if kind == _ARRAY:
        element, count = int(_read(fh, "<I")), int(_read(fh, "<Q"))
        if element in _SCALARS:
            fh.seek(struct.calcsize(_SCALARS[element]) * count, 1)
        else:
            for _ in range(count):
                _value(fh, element)
        return None
    raise GGUFError(f"unknown value type {kind}")


def trained_context(path: Path) -> int | None:
    """The context length ``path``'s model was trained with (``<architecture>.context_length``),
    or ``None`` when the header does not say.

    Raises:
        GGUFError: Not a GGUF file, or a malformed header.
        OSError: The file cannot be read.
    """
    with open(path, "rb") as fh:
        if fh.read(len(MAGIC)) != MAGIC:
            raise GGUFError(f"{path} is not a GGUF file")
        _read(fh, "<I")  # version
        _read(fh, "<Q")  # tensor count
        pairs = int(_read(fh, "<Q"))
        arch, lengths = "", dict[str, int]()
        for _ in range(pairs):
            key, kind = _string(fh), int(_read(fh, "<I"))
            value = _value(fh, kind)
            if key == "general.architecture" and isinstance(value, str):
                arch = value
            elif key.endswith(".context_length") and isinstance(value, int):
                lengths[key] = value
            if arch and f"{arch}.context_length" in lengths:
                return lengths[f"{arch}.context_length"]
    return None
