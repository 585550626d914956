"""Decode slots: the sampled calls of one serial engine generate their tokens together.

A serial engine (:class:`~simworld.llm.providers.local_engine.LlamaEngine`) prefills each
call alone in its own context. A call whose answer is sampled token by token (a post, a
reply) then moves to one of ``slots`` slots of a second llama.cpp context, and each decode
there generates the next token of every call in a slot at once. A one-token decode costs
about as much as reading the model's weights (the 262k-row output matrix most of all);
four tokens in one decode cost little more: on one core of the development host, 43 ms per
step for one slot, 63 ms for four, so 16 ms per token instead of 43.

Determinism: a call's tokens do not depend on which calls share its decodes, on the slot it
sits in, on the order calls arrive or on the thread count. Found by experiment on
llama.cpp's CPU backend (llama-cpp-python 0.3.36) and checked by ``tests/test_local_slots.py``:

* The slots' context keeps one KV stream per slot (``kv_unified=False``) with flash
  attention and a full-size sliding-window cache, as the batched engine does
  (:mod:`simworld.llm.providers.local_batch`): a sequence's cells sit at the same indices
  of its own stream whatever the other slots hold, and the kernel walks them in order.
* Every decode holds one token per busy slot, and the busy slots are always ``0 .. k-1``:
  llama.cpp splits a batch into ubatches of consecutive sequence ids, so a gap would split
  it. When a call ends, the sequence of the last busy slot moves into its slot, by its state
  bytes as below (not ``llama_memory_seq_cp``: llama.cpp copies a stream's data only at the
  next decode, by when the freed slot may hold a new call's prompt, which the copy would
  overwrite).
* A call decoding alone gets a pad token after its own (:func:`decode_padded`: at the next
  position, hidden from it by the causal mask, its cell removed right after): a decode with
  exactly one query takes flash attention's split-KV path, whose sums depend on the thread
  count. The pad asks for no logits, so it skips the output matrix (most of a token's
  work): a lone call's step cost 18 ms instead of 26 ms on 2 cores of an AVX2-only EPYC,
  against 15 ms for one unpadded token.
* At most :data:`MAX_SLOTS` slots: up to seven tokens in a decode give one set of numbers,
  eight or more another (see :mod:`simworld.llm.providers.local_batch`).

The call's prompt state moves from the engine's context by its bytes
(``llama_state_seq_get_data``/``set_data``, a few milliseconds). llama.cpp writes a
sequence's state with its cache's stream count, one for the engine's unified cache, and
refuses it in a cache of another count; :func:`as_stream` rewrites it as the slots'
context's, the call's stream holding it and the others empty. Both contexts use flash
attention, so their K and V rows are laid out alike; the moved state is bit for bit what
prefilling the prompt in the slot would give (tested).
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simworld.llm.providers.local_sampler import TokenSampler

DECODE_SLOTS = 4
"""Slots of a serial engine unless the model string's ``slots`` says otherwise."""
MAX_SLOTS = 7
_UBATCH = 64
_U32 = struct.Struct("<I")
_CELL = struct.Struct("<iI")  # position, number of sequence ids (then the ids, u32 each)
_ROWS = struct.Struct("<iQ")  # a tensor's type and bytes per cell (then its rows)
_LAYERS = struct.Struct("<II")  # V transposed?, layers
Stop = Callable[[], bool]
SlotAccept = Callable[[list[int], int], "str | None"]
"""Adds a sampled token to an answer's tokens; the finish reason once it is complete."""


class StateLayoutError(RuntimeError):
    """A sequence state is not laid out as :func:`as_stream` expects."""


def _read(fmt: struct.Struct, data: bytes, at: int) -> tuple[tuple[Any, ...], int]:
    if at + fmt.size > len(data):
        raise StateLayoutError(f"sequence state ends at byte {len(data)}, inside a field")
    return fmt.unpack_from(data, at), at + fmt.size


def as_stream(state: bytes, stream: int, streams: int) -> bytes:
    """A sequence state rewritten for a cache of ``streams`` streams, held by stream
    ``stream`` (the sequence loaded into it must be ``stream``); in ``state``, at most one
    stream per cache holds cells (one sequence's state).

    The layout read: an 8-byte header, then per cache (a sliding-window model has two) the
    stream count and, per stream, its cell count, each cell's position and sequence ids,
    and (for a non-empty stream) a V-transposed flag, the layer count, and per layer K then
    V: the tensor type, bytes per cell and the rows.

    Raises:
        StateLayoutError: ``state`` is not laid out so (another llama.cpp version), holds
            cells in two streams of a cache, or has its V rows transposed (no flash
            attention).
    """
    out = bytearray(state[:8])
    at = 8
    while at < len(state):
        (count,), at = _read(_U32, state, at)
        held = _U32.pack(0)
        for _ in range(count):
            start = at
            (cells,), at = _read(_U32, state, at)
            for _ in range(cells):
                (_pos, ids), at = _read(_CELL, state, at)
                at += 4 * ids
            if not cells:
                continue
            (transposed, layers), at = _read(_LAYERS, state, at)
            if transposed:
                raise StateLayoutError("sequence state with transposed V rows")
            for _ in range(2 * layers):
                (_type, row), at = _read(_ROWS, state, at)
                at += row * cells
            if at > len(state):
                raise StateLayoutError(f"sequence state ends at byte {len(state)}, in a tensor")
            if held != _U32.pack(0):
                raise StateLayoutError("sequence state with cells in two streams")
            held = state[start:at]
        out += _U32.pack(streams)
        for s in range(streams):
            out += held if s == stream else _U32.pack(0)
    return bytes(out)


def seq_state(ctx: Any, seq: int) -> bytes:
    """Sequence ``seq``'s state in the llama.cpp context ``ctx``, as llama.cpp writes it."""
    import llama_cpp

    size = llama_cpp.llama_state_seq_get_size(ctx, seq)
    buf = (ctypes.c_uint8 * size)()
    # string_at copies the bytes at once; slicing the ctypes array would build a list of
    # every byte first (~150 ms for a 400-token prompt's state).
    return ctypes.string_at(buf, llama_cpp.llama_state_seq_get_data(ctx, buf, size, seq))


def decode_padded(ctx: Any, batch: Any) -> bool:
    """``llama_decode`` of ``batch`` (room for one more token) in ``ctx``; whether it failed.

    A batch of a single token gets a pad token after it: the same token at the next
    position of the same sequences, hidden from the real one by the causal mask, asking for
    no logits, its cells removed right after. A decode of exactly one query over 512 cells
    or more takes flash attention's split-KV path, whose sums depend on the thread count
    (see the module docstring); the pad keeps every single token off it. The serial engine
    and the decode slots both decode through here.
    """
    import llama_cpp

    pad = batch.n_tokens == 1
    if pad:
        pos, seqs = batch.pos[0], [batch.seq_id[0][k] for k in range(batch.n_seq_id[0])]
        batch.token[1], batch.pos[1], batch.n_seq_id[1] = batch.token[0], pos + 1, len(seqs)
        for k, seq in enumerate(seqs):
            batch.seq_id[1][k] = seq
        batch.logits[1] = False
        batch.n_tokens = 2
    failed = llama_cpp.llama_decode(ctx, batch) != 0
    if pad:
        memory = llama_cpp.llama_get_memory(ctx)
        for seq in seqs:
            llama_cpp.llama_memory_seq_rm(memory, seq, pos + 1, -1)
        batch.n_tokens = 1
    return failed


def take(
    out: list[int],
    token: int,
    *,
    end: Callable[[int], bool],
    text: bool,
    budget: int,
    detok: Callable[[Sequence[int]], str],
) -> str | None:
    """Add a sampled ``token`` to ``out``; the finish reason once the answer is complete.

    Args:
        out: The tokens generated so far (``token`` is appended unless it ends the answer).
        token: The token just sampled.
        end: Whether a token ends generation (end of generation).
        text: Free text (no grammar): the answer ends at its first newline after
            non-blank text.
        budget: Tokens allowed.
        detok: Text of tokens.

    Returns:
        ``stop`` or ``length`` when the answer is complete, else ``None``.
    """
    if end(token):
        return "stop"
    out.append(token)
    if text and "\n" in detok(out).lstrip():
        return "stop"
    if len(out) >= budget:
        return "length"
    return None


@dataclass
class SlotCall:
    """A call generating in a slot.

    Attributes:
        sampler: Its sampler (closed when the call leaves its slot).
        token: The last token sampled, to evaluate next.
        pos: That token's position.
        out: The tokens generated so far.
        stop: Asked before every step; true drops the call (``cancelled``).
        accept: Adds a sampled token to ``out`` (:func:`take`).
        finish: ``stop``, ``length`` or ``cancelled`` once the call left its slot.
        error: Why its decode or its sampling failed, if one did.
    """

    sampler: TokenSampler
    token: int
    pos: int
    out: list[int]
    stop: Stop
    accept: SlotAccept
    finish: str | None = None
    error: BaseException | None = field(default=None, repr=False)


class DecodeSlots:
    """``slots`` calls of one engine generating together in a second llama.cpp context.

    Not thread-safe: its owner (the engine) calls it under the lock it runs every decode
    under.

    Args:
        model: The engine's ``llama_cpp._internals.LlamaModel``.
        n_ctx: Tokens each slot holds (the engine's context window).
        slots: How many (2 to :data:`MAX_SLOTS`).
        threads: Threads of the first decode.
    """

    def __init__(self, model: Any, n_ctx: int, slots: int, threads: int) -> None:
        import llama_cpp
        from llama_cpp import _internals

        if not 2 <= slots <= MAX_SLOTS:
            raise ValueError(f"slots must be between 2 and {MAX_SLOTS}")
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx * slots
        params.n_seq_max = slots
        params.kv_unified = False
        params.swa_full = True
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.n_batch = params.n_ubatch = _UBATCH
        params.n_threads = params.n_threads_batch = threads
        self._context = _internals.LlamaContext(model=model, params=params, verbose=False)
        self._ctx = self._context.ctx
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._n_vocab = model.n_vocab()
        self._batch = llama_cpp.llama_batch_init(slots + 1, 0, 1)  # lives as the slots
        self._threads = threads
        self.slots = slots
        self.calls: list[SlotCall] = []
        """The calls in slots, the i-th in slot i."""

    def free(self) -> bool:
        """Whether a slot is free."""
        return len(self.calls) < self.slots

    def admit(self, state: bytes, call: SlotCall) -> None:
        """Put ``call`` in the next slot, its prompt's KV loaded from ``state`` (a sequence
        state of the engine's unified context: :func:`as_stream` rewrites it).

        Raises:
            StateLayoutError: ``state`` cannot be rewritten.
            RuntimeError: No slot is free, or llama.cpp refused the state.
        """
        if not self.free():
            raise RuntimeError("no decode slot is free")
        self._load(len(self.calls), state)
        self.calls.append(call)

    def step(self, threads: int) -> None:
        """Drop cancelled calls, then evaluate every call's last token in one decode and
        sample each call's next; calls that are complete leave their slots. A failed decode
        fails every call in a slot; a call whose sampling fails leaves its slot with that
        error (``error``), the others going on."""
        import llama_cpp

        for call in [c for c in self.calls if c.stop()]:
            self._leave(call, "cancelled")
        if not self.calls:
            return
        batch = self._batch
        batch.n_tokens = len(self.calls)
        for slot, call in enumerate(self.calls):
            batch.token[slot] = call.token
            batch.pos[slot] = call.pos
            batch.n_seq_id[slot] = 1
            batch.seq_id[slot][0] = slot
            batch.logits[slot] = True
        if threads != self._threads:
            llama_cpp.llama_set_n_threads(self._ctx, threads, threads)
            self._threads = threads
        if decode_padded(self._ctx, batch):  # a lone call gets the pad
            for call in list(self.calls):
                call.error = RuntimeError("llama_decode failed in a decode slot")
                self._leave(call, "error")
            return
        done = []
        for slot, call in enumerate(self.calls):
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(self._ctx, slot), shape=(self._n_vocab,)
            )
            try:
                token = call.sampler.pick_logits(logits.copy())
                finish = call.accept(call.out, token)
            except Exception as exc:  # handed to the call it belongs to, raised there
                call.error = exc
                done.append((call, "error"))
                continue
            call.pos += 1
            if finish is None:
                call.token = token
            else:
                done.append((call, finish))
        for call, finish in done:
            self._leave(call, finish)

    def _leave(self, call: SlotCall, finish: str) -> None:
        """Free ``call``'s slot; the last busy slot's sequence moves into it."""
        import llama_cpp

        slot, last = self.calls.index(call), len(self.calls) - 1
        llama_cpp.llama_memory_seq_rm(self._mem, slot, -1, -1)
        if slot != last:
            self._load(slot, seq_state(self._ctx, last))
            llama_cpp.llama_memory_seq_rm(self._mem, last, -1, -1)
            self.calls[slot] = self.calls[last]
        self.calls.pop()
        call.finish = finish
        call.sampler.close()

    def _load(self, slot: int, state: bytes) -> None:
        """Replace slot ``slot``'s sequence with ``state`` (of any context of this model with
        flash attention: :func:`as_stream` rewrites it).

        Raises:
            StateLayoutError: ``state`` cannot be rewritten.
            RuntimeError: llama.cpp refused it.
        """
        import llama_cpp

        data = as_stream(state, slot, self.slots)
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        llama_cpp.llama_memory_seq_rm(self._mem, slot, -1, -1)
        if llama_cpp.llama_state_seq_set_data(self._ctx, buf, len(data), slot) != len(data):
            llama_cpp.llama_memory_seq_rm(self._mem, slot, -1, -1)
            raise RuntimeError("llama.cpp refused a sequence state for a decode slot")
