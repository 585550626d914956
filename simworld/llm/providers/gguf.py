"""Reading a GGUF file's metadata header (the model's key-value pairs) without loading it.

Only what simworld checks before a run is read: the context length the model was trained
with. The layout (little-endian): magic ``GGUF``, version (u32), tensor count (u64),
key-value count (u64), then each pair as key (u64 length and UTF-8 bytes), value type
(u32) and value; arrays hold their element type (u32), length (u64) and elements.
"""

from __future__ import annotations

import os
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


class _Header:
    """Reads a GGUF header's values from ``fh``, never past its ``size`` bytes (a garbled
    length fails as a short header instead of asking for gigabytes)."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self._fh, self._size = fh, size

    def _within(self, n: int) -> None:
        if n > self._size - self._fh.tell():
            raise GGUFError("the header ends early")

    def bytes(self, n: int) -> bytes:
        self._within(n)
        return self._fh.read(n)

    def number(self, fmt: str) -> int | float | bool:
        value: int | float | bool = struct.unpack(fmt, self.bytes(struct.calcsize(fmt)))[0]
        return value

    def string(self) -> str:
        return self.bytes(int(self.number("<Q"))).decode("utf-8", errors="replace")

    def value(self, kind: int) -> object:
        """One value of type ``kind``; an array's elements are skipped (``None``)."""
        if kind in _SCALARS:
            return self.number(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            element, count = int(self.number("<I")), int(self.number("<Q"))
            if element in _SCALARS:
                skip = struct.calcsize(_SCALARS[element]) * count
                self._within(skip)
                self._fh.seek(skip, os.SEEK_CUR)
            else:
                for _ in range(count):
                    self.value(element)
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
        header = _Header(fh, os.fstat(fh.fileno()).st_size)
        if header.bytes(len(MAGIC)) != MAGIC:
            raise GGUFError(f"{path} is not a GGUF file")
        header.number("<I")  # version
        header.number("<Q")  # tensor count
        pairs = int(header.number("<Q"))
        arch, lengths = "", dict[str, int]()
        for _ in range(pairs):
            key, kind = header.string(), int(header.number("<I"))
            value = header.value(kind)
            if key == "general.architecture" and isinstance(value, str):
                arch = value
            elif key.endswith(".context_length") and isinstance(value, int):
                lengths[key] = value
            if arch and f"{arch}.context_length" in lengths:
                return lengths[f"{arch}.context_length"]
    return None
