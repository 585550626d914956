"""One in-process llama-cpp-python model: canonical prefill, prefix reuse, sampling, scoring.

Determinism. llama.cpp's CPU kernels give slightly different numbers for the same token
depending on how many tokens share its batch, so a plain prefix-reusing ``Llama`` makes a
call's output depend on which call ran before it. The engine therefore cuts every prompt
into pieces by its content alone (:func:`piece_ends`: at the end of the preamble, at line
ends after it, at most :data:`PREFILL_CHUNK` tokens apart) and evaluates each piece in one
batch. It reuses a prefix of an earlier evaluation only where that evaluation cut its
tokens at the same places (:func:`reusable`), whether it is still in the KV cache from the
previous call or restored from a saved state (a preamble's, or a recent prompt's cut back
to the pieces it shares with the new one). Every token's KV entry is thus computed the same
way whatever the history, and the same seed gives the same output in any call order, with
prefix reuse on or off. Cutting at line ends is what lets a prompt reuse the lines it
shares with an agent's earlier one (the topic line, earlier memories) rather than only the
whole pieces before them. Sampling (see
:mod:`simworld.llm.providers.local_sampler`) is seeded and grammar-constrained for JSON answers.

An answer that is one of a fixed set of options (a schema whose only property is an
``answer`` enum) is not sampled token by token: every option is scored as a continuation of
the prompt, all in one decode with each option in its own sequence
(:meth:`LlamaEngine._decode_fork`), and the answer drawn from those scores with the seed
(:func:`~simworld.llm.providers.local_options.drawn_answer`). Other answers are sampled, and
their log-probabilities computed afterwards by re-evaluating the generated tokens in one
batch (OpenAI-format entries with the top alternatives); an ``answer`` enum among other
properties has its value's tokens replaced by one entry whose alternatives are every option,
each scored as a whole continuation
(:func:`~simworld.llm.providers.local_options.score_options`).

Generating together. A sampled answer (free text, or JSON other than a drawn option) is
generated in one of the engine's decode slots (:mod:`simworld.llm.providers.local_slots`,
``slots`` per engine): after its prompt is prefilled here, its KV state moves to a second
context where every decode gives each call in a slot its next token, while the engine
prefills the next call. Both contexts use flash attention, so a moved state is the same
numbers the slot would compute; within the rules that module states, a call's tokens do not
depend on which calls share its decodes. With ``slots=1``, or when log-probabilities are
asked for (they re-evaluate the answer after the prompt), the call generates here, one
token per decode.

Cancelling. Cancelling the future :meth:`LlamaEngine.submit` returns (a timed-out call's
``asyncio`` wrapper does) stops the call before its next prefill chunk or generated token,
so an abandoned call does not hold the engine; the chunks it evaluated stay reusable.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from simworld.llm.providers.local_options import (
    AnswerOptions,
    Fork,
    drawn_answer,
    drive,
    in_turn,
    log_softmax,
    logprob_entry,
    score_options,
    top_count,
)
from simworld.llm.providers.local_sampler import TokenSampler
from simworld.llm.providers.local_slots import (
    DecodeSlots,
    SlotAccept,
    SlotCall,
    decode_padded,
    seq_state,
    take,
)

DEFAULT_N_CTX = 4096
DEFAULT_BATCH = 1
PREFILL_CHUNK = 64
"""Most tokens the serial engine evaluates in one batch (:func:`piece_ends`)."""
LINE_PIECE = 16
"""Fewest tokens of a piece that ends at a line end (:func:`piece_ends`). A short piece costs
more per token than a long one (about 6 ms a decode plus 1.4 ms a token on 2 cores); on the
main job's prompts, limits of 12 to 24 tokens saved about the same, while 32 no longer cut
at the topic line that an agent's calls on one topic share."""
PREFIX_CACHE_BYTES = 512 * 1024 * 1024
PROMPT_CACHE_BYTES = 768 * 1024 * 1024
FORK_SEQS = 32
"""Sequences of the serial engine's context: the prompt's, and one per option scored with it
(:meth:`LlamaEngine._decode_fork`; a fork of more branches is evaluated in turn). 32 covers
a choice scale of 26 letters plus stance extraction's "none"; a sequence costs no KV memory
in the unified cache."""
_SEQ = 0
_LOG = logging.getLogger("simworld.llm.providers.local")


# CPU features whose llama.cpp kernels are reached through the extra CPU buffer types; with
# those on, the first decode of the Gemma file segfaults (llama-cpp-python 0.3.36).
AMX_FLAGS = frozenset({"amx_tile", "amx_int8", "amx_bf16"})
EXTRA_BUFTS_CHOICES = ("auto", "on", "off")
_CPUINFO = Path("/proc/cpuinfo")
_PARAMS_LOCK = threading.Lock()
_SYSTEM_INFO_LOCK = threading.Lock()


class ContextOverflowError(ValueError):
    """The prompt does not fit the model's context window."""


class CallCancelledError(Exception):
    """The caller cancelled the call: the engine stopped working on it."""


Stop = Callable[[], bool]
"""Asked between prefill chunks and generated tokens: true once the call is cancelled."""


def _never_stop() -> bool:
    return False


def settle(future: Future[Any], value: Any = None, *, error: BaseException | None = None) -> None:
    """Give ``future`` its result (or ``error``) unless its caller has cancelled it."""
    try:
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
    except InvalidStateError:
        pass  # cancelled meanwhile: nobody waits for it


@dataclass(frozen=True)
class EngineConfig:
    """What identifies one loaded model: one engine per distinct config per process.

    Attributes:
        path: The GGUF file.
        n_ctx: Context window in tokens.
        threads: CPU threads (0: all cores).
        prefix_reuse: Reuse the KV cache of shared prompt prefixes.
        extra_bufts: llama.cpp's extra CPU buffer types (AMX kernels, repacked weights):
            ``auto`` (off: they crash on CPUs with AMX and gain nothing measurable
            elsewhere), ``on`` or ``off``. See :func:`use_extra_bufts`.
        batch: Calls decoded together (1: the serial :class:`LlamaEngine`; more: the
            batched engine of :mod:`simworld.llm.providers.local_batch`).
        drawn_answers: Draw an answer that is one of a fixed set of options from the
            options' scores (see :mod:`simworld.llm.providers.local_options`); off, it is
            sampled token by token, as every other answer.
        engines: Serial engines answering calls at once (``batch=1`` only), sharing the
            ``threads`` and the saved states: an :class:`EnginePool` for more than one.
        slots: Sampled calls of one serial engine generating together (1: one after
            another); see :mod:`simworld.llm.providers.local_slots`.
    """

    path: Path
    n_ctx: int = DEFAULT_N_CTX
    threads: int = 0
    prefix_reuse: bool = True
    extra_bufts: str = "auto"
    batch: int = DEFAULT_BATCH
    drawn_answers: bool = True
    engines: int = 1
    slots: int = 1

    @property
    def thread_count(self) -> int:
        """The threads to run on: ``threads``, or this machine's cores for 0."""
        return self.threads or os.cpu_count() or 1


@dataclass(frozen=True)
class Sampling:
    """How to decode one answer.

    Attributes:
        max_tokens: Output limit.
        temperature: Sampling temperature (0: greedy).
        seed: Sampler seed.
        schema: JSON Schema for grammar-constrained output (``{}``: any JSON object).
        top_logprobs: Alternatives per token to report; ``None`` for no log-probabilities.
    """

    max_tokens: int
    temperature: float
    seed: int
    schema: dict[str, Any] | None = None
    top_logprobs: int | None = None


@dataclass
class Generation:
    """One decoded continuation.

    Attributes:
        text: The raw continuation (free text is cut after its first non-blank line).
        prompt_tokens: Tokens in the prompt.
        completion_tokens: Tokens generated.
        finish_reason: ``stop`` or ``length``.
        logprobs: OpenAI-format ``logprobs.content`` entries, when requested.
        cached_tokens: Prompt tokens not evaluated for this call: their KV was still in
            place, copied from another sequence or restored from a saved per-preamble
            state. Not part of the answer: two generations with equal answers compare
            equal whatever their cached counts.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    logprobs: list[dict[str, Any]] | None = None
    cached_tokens: int = field(default=0, compare=False)


def _cpuinfo_field(name: str, cpuinfo: Path) -> str | None:
    """The value of the first processor's ``name`` line in ``cpuinfo``; ``None`` where the
    file is missing, unreadable or has no such line."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


def cpu_flags(cpuinfo: Path = _CPUINFO) -> frozenset[str]:
    """The CPU feature flags the kernel reports (the ``flags`` line of ``/proc/cpuinfo``).

    Args:
        cpuinfo: The file to read.

    Returns:
        The flags of the first processor; empty where the file is missing or unreadable.
    """
    return frozenset((_cpuinfo_field("flags", cpuinfo) or "").split())


def cpu_model(cpuinfo: Path = _CPUINFO) -> str | None:
    """The CPU's model name (the ``model name`` line of ``/proc/cpuinfo``), if known.

    Args:
        cpuinfo: The file to read.
    """
    return _cpuinfo_field("model name", cpuinfo)


BUILD_FEATURES = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX_VNNI": "avx_vnni",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}
"""The instruction sets llama.cpp's ``llama_print_system_info()`` says its CPU code was
compiled for (``AVX512 = 1``), and the ``/proc/cpuinfo`` flag of each."""


def reinstall_command() -> str:
    """The command that compiles the installed llama-cpp-python again, for this machine."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pin = f"=={version('llama-cpp-python')}"
    except PackageNotFoundError:
        pin = ""
    return f"pip install --force-reinstall --no-cache-dir --no-deps llama-cpp-python{pin}"


class BuildMismatchError(RuntimeError):
    """llama.cpp was compiled for instructions this CPU does not have."""


def compiled_for(info: str) -> list[str]:
    """The features a llama.cpp build says it was compiled with, in the order printed.

    Args:
        info: What ``llama_print_system_info()`` prints (``CPU : AVX2 = 1 | REPACK = 1 |``).

    Returns:
        The names set to 1 (``AVX2``, ``REPACK``).
    """
    names = []
    for item in info.replace(":", "|").split("|"):
        name, sep, value = item.partition("=")
        if sep and value.strip() == "1":
            names.append(name.strip())
    return names


def missing_features(system_info: str, flags: frozenset[str]) -> list[str]:
    """The instruction sets a llama.cpp build uses that a CPU lacks.

    pip compiles llama-cpp-python for the CPU it builds on (``GGML_NATIVE``) and caches the
    wheel; a wheel built on one machine and installed on another (a shared home directory, a
    copied venv or pip cache) stops with an illegal instruction on a CPU without them.

    Args:
        system_info: What ``llama_print_system_info()`` prints (``AVX2 = 1 | ...``).
        flags: The CPU's feature flags (:func:`cpu_flags`); empty when unknown, and then
            nothing is reported.

    Returns:
        The build's names of the missing instruction sets, in the order printed.
    """
    if not flags:
        return []
    return [
        name
        for name in compiled_for(system_info)
        if (flag := BUILD_FEATURES.get(name)) is not None and flag not in flags
    ]


@lru_cache(maxsize=1)
def _read_system_info() -> str:
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode("utf-8", errors="replace")


def system_info() -> str:
    """What llama.cpp's ``llama_print_system_info()`` prints, read once a process.

    The native function clears and refills one static string on every call and returns its
    buffer, and ctypes lets threads into it at once: two threads calling it together read
    each other's half-written text (in ``inline`` mode a run's first calls check the build
    from their own threads, and runs failed with a ``UnicodeDecodeError`` from it). So it is
    read under a lock, once.
    """
    with _SYSTEM_INFO_LOCK:
        return _read_system_info()


def build_record(config: EngineConfig) -> dict[str, Any]:
    """What decides the embedded model's numbers on this machine, besides the model file.

    llama.cpp computes with kernels chosen for the instructions it was compiled for (pip
    compiles it for the CPU it builds on), and their floating-point sums differ from one
    instruction set to another: the same scenario and seed give other answers on another kind
    of CPU or build. The run's manifest lists this record (``model_builds``) so two runs can be
    told apart. Needs llama-cpp-python; read in the process that loads the model.

    Args:
        config: The engine's config (its ``extra_bufts`` choice).

    Returns:
        ``llama_cpp_python`` (its version), ``compiled_for`` (:func:`compiled_for`), ``cpu``
        (:func:`cpu_model`) and ``extra_bufts`` (``on`` or ``off``, as loaded).
    """
    from importlib.metadata import version

    return {
        "llama_cpp_python": version("llama-cpp-python"),
        "compiled_for": compiled_for(system_info()),
        "cpu": cpu_model(),
        "extra_bufts": "on" if use_extra_bufts(config.extra_bufts) else "off",
    }


def check_build(flags: frozenset[str] | None = None, info: str | None = None) -> None:
    """Refuse to load a model with a llama.cpp build compiled for another CPU.

    Args:
        flags: The CPU's feature flags (default: this machine's, :func:`cpu_flags`).
        info: What the build says it was compiled for (default: :func:`system_info`).

    Raises:
        BuildMismatchError: Naming what the CPU lacks and the command that rebuilds it here.
    """
    info = system_info() if info is None else info
    missing = missing_features(info, cpu_flags() if flags is None else flags)
    if missing:
        raise BuildMismatchError(
            f"llama-cpp-python was compiled for instructions this CPU lacks "
            f"({', '.join(missing)}): built on another machine or with other flags; rebuild "
            "it on this one: " + reinstall_command()
        )


def use_extra_bufts(choice: str) -> bool:
    """Whether to load a model with llama.cpp's extra CPU buffer types.

    The extra buffer types (AMX tiles, weights repacked for AVX2/AVX-512): on CPUs with AMX
    the first decode of the Gemma file segfaults inside llama.cpp with them; where they work
    (builds without AMX kernels, AVX-512 or AVX2 only) turning them off cost nothing
    measurable, prefill and decode within a few percent (``benchmarks/bench_extra_bufts.py``),
    and with them on an AVX2-only build made the batched engine's answers depend on which
    calls share a batch (the serial engine's stayed identical). So ``auto`` turns them off on
    every host, whatever its CPU, and ``on`` forces them.

    Args:
        choice: ``auto``, ``on`` or ``off``.

    Returns:
        True to keep llama.cpp's default (extra buffer types on).
    """
    return choice == "on"


@contextmanager
def defaults_set(
    model: dict[str, Any] | None = None, context: dict[str, Any] | None = None
) -> Iterator[None]:
    """While inside, the models and contexts llama-cpp-python creates in this process get
    these fields set in their parameters.

    ``llama_cpp.Llama`` takes no arguments for some of llama.cpp's parameters (such as
    ``use_extra_bufts``, ``n_seq_max``, ``kv_unified``); it builds them from
    ``llama_model_default_params()`` and ``llama_context_default_params()``, so those
    functions are wrapped for the duration (under a lock, so concurrent loads cannot see
    each other's wrappers).

    Args:
        model: Fields of ``llama_model_params``.
        context: Fields of ``llama_context_params``.
    """
    import llama_cpp.llama_cpp as native

    changes = {
        "llama_model_default_params": model or {},
        "llama_context_default_params": context or {},
    }
    with _PARAMS_LOCK:
        defaults = {name: getattr(native, name) for name in changes}

        def wrapped(name: str) -> Callable[[], Any]:
            def params() -> Any:
                value = defaults[name]()
                for field_name, field_value in changes[name].items():
                    setattr(value, field_name, field_value)
                return value

            return params

        for name in changes:
            setattr(native, name, wrapped(name))
        try:
            yield
        finally:
            for name, function in defaults.items():
                setattr(native, name, function)


def extra_bufts_set(keep: bool) -> AbstractContextManager[None]:
    """While inside, every model llama-cpp-python loads in this process keeps (or not)
    llama.cpp's extra CPU buffer types (see :func:`defaults_set`).

    Args:
        keep: The ``use_extra_bufts`` value of the models loaded inside.
    """
    return defaults_set(model={"use_extra_bufts": keep})


def _load_llama(config: EngineConfig, threads: int, *, extra_bufts: bool) -> Any:
    """A ``llama_cpp.Llama`` for ``config``, with or without the extra buffer types; its
    context holds :data:`FORK_SEQS` sequences in one KV cache, for options scored together
    (:meth:`LlamaEngine._decode_fork`)."""
    import llama_cpp

    context = {"n_seq_max": FORK_SEQS, "kv_unified": True}
    with defaults_set(model={"use_extra_bufts": extra_bufts}, context=context):
        return llama_cpp.Llama(
            model_path=str(config.path),
            n_ctx=config.n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            flash_attn=True,
            swa_full=True,
            verbose=False,
        )


def _quiet_llama_logs() -> None:
    """Send llama.cpp's native log lines to the ``simworld.llm.providers.local`` logger at
    debug level."""
    import llama_cpp

    @llama_cpp.llama_log_callback
    def forward(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        _LOG.debug("%s", text.decode("utf-8", errors="replace").rstrip())

    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))
    _quiet_llama_logs.callback = forward  # type: ignore[attr-defined]  # keep it alive


# llama-cpp-python's schema converter lets raw control characters (a newline, say) into
# strings, which JSON forbids; its own JSON grammar, like llama.cpp's converter, excludes them.
_LOOSE_STRING_CHAR = r'char ::= [^"\\] |'
_JSON_STRING_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


@lru_cache(maxsize=64)
def _gbnf(schema_json: str) -> str:
    """The GBNF grammar of a JSON Schema (``{}``: any JSON value); strings hold no raw
    control characters, so every answer the grammar allows is valid JSON."""
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if schema_json == "{}":
        return JSON_GBNF
    return json_schema_to_gbnf(schema_json).replace(_LOOSE_STRING_CHAR, _JSON_STRING_CHAR)


def prompt_budget(config: EngineConfig, n_prompt: int, max_tokens: int) -> int:
    """How many tokens may follow a prompt of ``n_prompt`` tokens.

    Raises:
        ContextOverflowError: The prompt leaves no room in the context window.
    """
    budget = min(max_tokens, config.n_ctx - n_prompt)
    if budget <= 0:
        raise ContextOverflowError(
            f"prompt of {n_prompt} tokens does not fit the context window of "
            f"{config.n_ctx} tokens of {config.path} (raise ?n_ctx=)"
        )
    return budget


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def piece_ends(
    tokens: Sequence[int], preamble_len: int, state_len: int, ends_line: Callable[[int], bool]
) -> list[int]:
    """Where the serial engine cuts ``tokens`` into the pieces it evaluates one batch each:
    the end of every piece, the last being ``len(tokens)``.

    A piece ends at the end of the preamble, at ``state_len`` (states are saved there), after
    :data:`PREFILL_CHUNK` tokens, and, after the preamble, at the end of a line once it holds
    :data:`LINE_PIECE` tokens. Each cut depends only on the tokens before it, so two prompts
    that share a prefix (and a preamble) are cut alike within it.

    Args:
        tokens: The prompt.
        preamble_len: Tokens of the preamble (0: none).
        state_len: Most tokens a saved state holds (:func:`state_tokens`).
        ends_line: Whether a token's text ends with a newline.
    """
    ends, last = [], 0
    for at in range(1, len(tokens)):
        if (
            at - last >= PREFILL_CHUNK
            or at in (preamble_len, state_len)
            or (at > preamble_len and at - last >= LINE_PIECE and ends_line(tokens[at - 1]))
        ):
            ends.append(at)
            last = at
    ends.append(len(tokens))
    return ends


def grid_ends(n: int, chunk: int) -> list[int]:
    """The ends of the pieces of ``n`` tokens cut at multiples of ``chunk`` (the batched
    engine's cuts), the last being ``n``."""
    return [*range(chunk, n, chunk), n] if n else []


def reusable(ends: Sequence[int], held_ends: Sequence[int], shared: int) -> int:
    """How many leading tokens of a prompt cut at ``ends`` can be taken from an evaluation
    cut at ``held_ends`` that shares its first ``shared`` tokens: up to the last piece end
    both have, with the same ends before it, within ``shared`` (0: none)."""
    n = 0
    for mine, held in zip(ends, held_ends, strict=False):
        if mine != held or mine > shared:
            break
        n = mine
    return n


def state_tokens(model: Any, n_ctx: int) -> int:
    """Most tokens a saved sequence state holds whole.

    A model with sliding-window attention layers (Gemma 3: 512 positions) saves only the
    last window of those layers' KV, so a state of a longer sequence cut back to fewer
    tokens would miss their first positions; states are therefore saved of at most
    ``n_swa`` tokens.

    Args:
        model: The ``llama_model`` pointer.
        n_ctx: The context window (the limit of a model without sliding windows).
    """
    import llama_cpp

    n_swa = int(llama_cpp.llama_model_n_swa(model))
    return n_swa if 0 < n_swa < n_ctx else n_ctx


class SeqStates:
    """Saved KV states of llama.cpp sequences, keyed by the prompt tokens they hold. The
    least recently used go first once they hold more than ``capacity`` bytes (the newest is
    always kept). A state is bytes, not tied to the context it came from: the engines of an
    :class:`EnginePool` share one store, each restoring what another saved; every method
    holds the store's lock.

    Args:
        capacity: Bytes of saved state to keep.
    """

    def __init__(self, capacity: int = PREFIX_CACHE_BYTES) -> None:
        self._states: OrderedDict[tuple[int, ...], tuple[Any, int, np.ndarray, list[int]]] = (
            OrderedDict()
        )
        self._bytes = 0
        self._capacity = capacity
        self._lock = threading.RLock()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._states

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        """The saved keys, least recently used first."""
        with self._lock:
            return iter(list(self._states))

    def closest(
        self, tokens: Sequence[int], ends: Sequence[int], limit: int
    ) -> tuple[tuple[int, ...], int]:
        """The saved state that gives ``tokens`` the most reusable leading tokens.

        Args:
            tokens: The prompt.
            ends: Where the prompt is cut into pieces (:func:`reusable`).
            limit: Most tokens to take from a state.

        Returns:
            The state's key and how many of its leading tokens to keep (``((), 0)`` when no
            state shares a whole piece); the first saved wins a tie.
        """
        want = np.asarray(tokens[:limit], dtype=np.int64)
        best: tuple[tuple[int, ...], int] = ((), 0)
        with self._lock:
            saved = [(key, entry[2], entry[3]) for key, entry in self._states.items()]
        for key, held, held_ends in saved:
            n = min(len(held), len(want))
            differ = np.flatnonzero(held[:n] != want[:n])
            shared = reusable(ends, held_ends, int(differ[0]) if differ.size else n)
            if shared > best[1]:
                best = (key, shared)
        return best

    def save(self, ctx: Any, seq: int, key: tuple[int, ...], ends: Sequence[int]) -> None:
        """Save sequence ``seq`` of context ``ctx`` (holding ``key``, evaluated in pieces
        ending at ``ends``), unless already saved."""
        import llama_cpp

        if key in self:
            return
        size = llama_cpp.llama_state_seq_get_size(ctx, seq)
        buf = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buf, size, seq)
        if written == 0:
            return
        held_ends = [end for end in ends if end <= len(key)]
        with self._lock:
            if key in self._states:  # another engine saved it meanwhile
                return
            self._states[key] = (buf, written, np.asarray(key, dtype=np.int64), held_ends)
            self._bytes += size
            while self._bytes > self._capacity and len(self._states) > 1:
                self.discard(next(iter(self._states)))

    def discard(self, key: tuple[int, ...]) -> None:
        """Forget the state saved for ``key`` (if it is still saved)."""
        with self._lock:
            entry = self._states.pop(key, None)
            if entry is not None:
                self._bytes -= len(entry[0])

    def restore(self, ctx: Any, seq: int, key: tuple[int, ...], keep: int, path: Path) -> bool:
        """Replace sequence ``seq`` of ``ctx`` with the first ``keep`` tokens of the state
        saved for ``key``.

        Returns:
            False, leaving ``seq`` as it was, when the state is no longer saved (another
            engine sharing the store let it go since :meth:`closest` found it).

        Raises:
            RuntimeError: llama.cpp refused the state (of the model file ``path``).
        """
        import llama_cpp

        with self._lock:
            entry = self._states.get(key)
            if entry is None:
                return False
            self._states.move_to_end(key)
        buf, written, *_ = entry
        memory = llama_cpp.llama_get_memory(ctx)
        llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
        if not llama_cpp.llama_state_seq_set_data(ctx, buf, written, seq):
            raise RuntimeError(f"could not restore a cached prefix state of {path}")
        if keep < len(key):
            llama_cpp.llama_memory_seq_rm(memory, seq, keep, -1)
        return True


class OnePerConfig:
    """An engine class of which a process loads one instance per config, on first use."""

    _instances: ClassVar[dict[tuple[type, EngineConfig], Any]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, config: EngineConfig) -> None:
        self.config = config

    @classmethod
    def get(cls, config: EngineConfig) -> Self:
        """The process's engine of this class for ``config``, loaded on first use."""
        with OnePerConfig._instances_lock:
            engine = OnePerConfig._instances.get((cls, config))
            if engine is None:
                engine = OnePerConfig._instances[cls, config] = cls(config)
            return engine  # stored under its own class


class Evaluating:
    """The preambles the engines of an :class:`EnginePool` are evaluating now. An engine
    about to evaluate a preamble that another is evaluating waits until that one has saved
    its state, lending it its share of the cores meanwhile, instead of evaluating it too
    (an agent's probes, sent at once, reach both engines before either saved the persona's
    preamble).

    Args:
        lend: Called with -1 when an engine starts waiting and +1 when it stops (the pool
            counts a waiting engine as idle when it shares out the cores).
    """

    def __init__(self, lend: Callable[[int], None]) -> None:
        self._lend = lend
        self._lock = threading.Lock()
        self._events: dict[tuple[int, ...], threading.Event] = {}

    def claim(self, key: tuple[int, ...]) -> threading.Event | None:
        """Claim the evaluation of ``key``: ``None`` when the caller now holds it (and must
        :meth:`release` it), else the event that is set once its holder releases it."""
        with self._lock:
            event = self._events.get(key)
            if event is None:
                self._events[key] = threading.Event()
            return event

    def release(self, key: tuple[int, ...]) -> None:
        """End the evaluation of ``key`` (saved or failed), waking who waits for it."""
        with self._lock:
            event = self._events.pop(key, None)
        if event is not None:
            event.set()

    def wait(self, event: threading.Event, stop: Stop) -> None:
        """Wait for ``event``, asking ``stop`` every 50 ms.

        Raises:
            CallCancelledError: ``stop`` said so.
        """
        self._lend(-1)
        try:
            while not event.wait(0.05):
                if stop():
                    raise CallCancelledError
        finally:
            self._lend(1)


class LlamaEngine(OnePerConfig):
    """A loaded GGUF model; its prefills and decodes run one at a time, under a lock, and up
    to ``config.slots`` sampled calls generate together in its decode slots.

    Args:
        config: The model file and its load options.
        stores: The saved preamble and prompt states to use (an :class:`EnginePool`'s
            engines share theirs); by default the engine's own.
        threads: Asked before every ``llama_decode`` how many threads to run it on (an
            :class:`EnginePool` shares the cores among its busy engines); by default
            ``config.threads`` (0: every core).
        evaluating: The preambles the engines sharing ``stores`` are evaluating now (an
            :class:`EnginePool`'s); an engine alone has none.
    """

    def __init__(
        self,
        config: EngineConfig,
        stores: tuple[SeqStates, SeqStates] | None = None,
        threads: Callable[[], int] | None = None,
        evaluating: Evaluating | None = None,
    ) -> None:
        import llama_cpp

        _quiet_llama_logs()
        super().__init__(config)
        fixed = config.thread_count
        self._threads = threads or (lambda: fixed)
        self._threads_set = self._threads()
        self.extra_bufts = use_extra_bufts(config.extra_bufts)
        self._llm = _load_llama(config, self._threads_set, extra_bufts=self.extra_bufts)
        self._vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self._n_vocab = self._llm.n_vocab()
        self._lock = threading.Lock()
        self._turn = threading.Condition(self._lock)
        self._count = threading.Lock()
        self._prefills = 0  # calls waiting for the lock to prefill
        self._slots = (
            DecodeSlots(self._llm._model, config.n_ctx, config.slots, self._threads_set)
            if config.slots > 1
            else None
        )
        self._worker: ThreadPoolExecutor | None = None
        self._canonical: list[int] = []  # the prompt whose KV the cache holds
        self._canonical_ends: list[int] = []  # and where it was cut (piece_ends)
        self.preamble = ""
        """The preamble of the last call (an :class:`EnginePool` sends a call to an idle
        engine that holds its preamble)."""
        if stores is None:
            stores = (SeqStates(PREFIX_CACHE_BYTES), SeqStates(PROMPT_CACHE_BYTES))
        self._preambles, self._prompts = stores
        self._evaluating = evaluating
        self.state_tokens = state_tokens(self._llm.model, config.n_ctx)
        self._batch = llama_cpp.llama_batch_init(PREFILL_CHUNK, 0, 1)  # lives as the engine
        self._line_ends: dict[int, bool] = {}

    def tokenize(self, text: str, *, bos: bool) -> list[int]:
        """Token ids of ``text``."""
        return self._llm.tokenize(text.encode("utf-8"), add_bos=bos, special=False)

    def submit(self, prompt: str, *, preamble: str, sampling: Sampling) -> Future[Generation]:
        """:meth:`generate` in one of this engine's worker threads (one per decode slot);
        the future holds the result. Cancelling the future, even while the call runs, stops
        it before its next prefill chunk or generated token."""
        with self._count:
            if self._worker is None:
                self._worker = ThreadPoolExecutor(
                    self.config.slots, thread_name_prefix="simworld-serial"
                )
        future: Future[Generation] = Future()
        self._worker.submit(self._answer, future, prompt, preamble, sampling)
        return future

    def _answer(
        self, future: Future[Generation], prompt: str, preamble: str, sampling: Sampling
    ) -> None:
        """Settle ``future`` with the call's generation (the worker thread's job)."""
        if future.cancelled():
            return
        try:
            value = self.generate(
                prompt, preamble=preamble, sampling=sampling, stop=future.cancelled
            )
        except CallCancelledError:
            return
        except Exception as exc:  # the caller sees it through the future
            settle(future, error=exc)
            return
        settle(future, value)

    def generate(
        self, prompt: str, *, preamble: str, sampling: Sampling, stop: Stop = _never_stop
    ) -> Generation:
        """Decode one continuation of ``prompt``.

        Args:
            prompt: The completion-style prompt.
            preamble: Leading part of ``prompt`` that repeats across calls (its KV state
                is kept for reuse).
            sampling: Decoding settings.
            stop: Asked before every prefill chunk and generated token.

        Returns:
            The continuation, token counts and (when asked) log-probabilities.

        Raises:
            ContextOverflowError: The prompt does not fit the context window.
            CallCancelledError: ``stop`` said so.
        """
        tokens = self.tokenize(prompt, bos=True)
        budget = prompt_budget(self.config, len(tokens), sampling.max_tokens)
        preamble_len = _common_prefix(self.tokenize(preamble, bos=True), tokens) if preamble else 0
        options = AnswerOptions.of(
            self.config.drawn_answers, sampling.schema, budget, self._tokens, self._detok
        )
        with self._prefill_turn():
            self.preamble = preamble
            last_logits, cached = self._prefill(tokens, preamble_len, stop)
            if options is not None:
                steps = drawn_answer(options, last_logits, len(tokens), sampling, self._detok)
                out, text, logprobs = drive(steps, self._decode_all, self._decode_fork)
                return Generation(text, len(tokens), len(out), "stop", logprobs, cached)
            if self._slots is None or sampling.top_logprobs is not None:
                sampled, finish = self._sample(sampling, budget, stop)
                out, text = self._answer_text(sampled, sampling)
                logprobs = None
                if sampling.top_logprobs is not None and out:
                    logprobs = self._logprobs(tokens, out, last_logits, sampling)
                return Generation(text, len(tokens), len(sampled), finish, logprobs, cached)
            started = self._start_in_slot(sampling, budget, len(tokens), stop)
        sampled, finish = started if isinstance(started, tuple) else self._finish_in_slot(started)
        text = self._answer_text(sampled, sampling)[1]
        return Generation(text, len(tokens), len(sampled), finish, None, cached)

    @contextmanager
    def _prefill_turn(self) -> Iterator[None]:
        """Hold the engine's lock for a call's prefill; calls generating in slots let a call
        waiting for it have it before their next step, so it joins them sooner."""
        with self._count:
            self._prefills += 1
        try:
            self._turn.acquire()
        finally:
            with self._count:
                self._prefills -= 1
        try:
            yield
        finally:
            self._turn.notify_all()
            self._turn.release()

    # -- prefill -------------------------------------------------------------------------------
    def _prefill(self, tokens: list[int], preamble_len: int, stop: Stop) -> tuple[np.ndarray, int]:
        """Evaluate ``tokens`` piece by piece (:func:`piece_ends`), reusing the pieces already
        in the KV cache or saved; returns the logits after the last token and the number of
        leading tokens reused (not evaluated). Stopped by ``stop``, the KV cache keeps the
        pieces evaluated so far, for the next call.

        Two stores of saved states: each preamble's (kept while it fits
        :data:`PREFIX_CACHE_BYTES`) and recent prompts' (:data:`PROMPT_CACHE_BYTES`), so an
        agent's next call (the same persona, topic and earlier memories) starts from its
        last one even when other agents' calls ran between. A prompt state a call starts
        from is replaced by that call's own, which holds the newer memories. States hold at
        most :attr:`state_tokens` tokens (see :func:`state_tokens`). In a pool, a call waits
        for a preamble another engine is evaluating (:class:`Evaluating`), and takes the
        next best state when the one it chose was let go meanwhile.
        """
        ends = piece_ends(tokens, preamble_len, self.state_tokens, self._ends_line)
        start, preamble_at, prompt_at = 0, 0, 0
        source: tuple[int, ...] = ()  # the prompt state this call starts from
        restore: tuple[SeqStates, tuple[int, ...], int] | None = None
        limit = len(tokens) - 1  # the last piece is evaluated: its logits are needed
        if self.config.prefix_reuse:
            shared = min(_common_prefix(self._canonical, tokens), limit)
            start = reusable(ends, self._canonical_ends, shared)
            restore = self._closest_state(tokens, ends, limit, start)
            preamble_at = min(preamble_len, self.state_tokens)
            prompt_at = min(len(tokens), self.state_tokens)
        claimed: tuple[int, ...] = ()  # a preamble other engines wait for this call to save
        while self._evaluating is not None:
            if preamble_at <= max(start, restore[2] if restore else 0):
                break
            preamble = tuple(tokens[:preamble_at])
            event = self._evaluating.claim(preamble)
            if event is None:
                claimed = preamble
                break
            self._evaluating.wait(event, stop)
            restore = self._closest_state(tokens, ends, limit, start)
        begin = 0  # what the cache holds of ``tokens``, whatever happens next
        try:
            while restore is not None:
                store, key, keep = restore
                if self._restore(store, key, keep):
                    start = keep
                    source = key if store is self._prompts else ()
                    break
                # another engine let it go meanwhile: the next best
                restore = self._closest_state(tokens, ends, limit, start)
            self._llm.n_tokens = begin = start
            for end in ends:
                if end <= begin:
                    continue
                if stop():
                    raise CallCancelledError
                self._eval(tokens[begin:end], logits=end == len(tokens))
                begin = end
                if end not in (preamble_at, prompt_at):
                    continue
                held = tuple(tokens[:end])
                if end == preamble_at:
                    self._preambles.save(self._llm.ctx, _SEQ, held, ends)
                    self._release(claimed)
                    claimed = ()  # released: a later claim of it is another call's
                if end == prompt_at:
                    self._prompts.save(self._llm.ctx, _SEQ, held, ends)
                    if source and source != held and source in self._prompts:
                        self._prompts.discard(source)
        finally:
            self._release(claimed)
            self._canonical = tokens[:begin]
            self._canonical_ends = [end for end in ends if end <= begin]
        return self._logits(-1), start

    def _release(self, claimed: tuple[int, ...]) -> None:
        """Release the preamble this call claimed, if any."""
        if claimed and self._evaluating is not None:
            self._evaluating.release(claimed)

    def _closest_state(
        self, tokens: list[int], ends: list[int], limit: int, start: int
    ) -> tuple[SeqStates, tuple[int, ...], int] | None:
        """The saved state (its store, key and tokens to keep) that gives ``tokens`` more
        than the ``start`` tokens the cache holds already; ``None`` if none does."""
        found = [
            (store, *store.closest(tokens, ends, limit))
            for store in (self._preambles, self._prompts)
        ]
        best = max(found, key=lambda f: f[2])
        return best if best[2] > start else None

    def _ends_line(self, token: int) -> bool:
        """Whether the text of ``token`` ends with a newline (remembered per token)."""
        ends = self._line_ends.get(token)
        if ends is None:
            ends = self._line_ends[token] = self._detok([token]).endswith("\n")
        return ends

    def _eval(self, tokens: list[int], *, logits: bool) -> None:
        """Evaluate ``tokens`` after the ``n_tokens`` in the cache, in one ``llama_decode``
        of at most :data:`PREFILL_CHUNK` tokens, as ``Llama.eval`` does, except that only
        ``logits`` asks for the logits after the last one. A prompt's earlier pieces thus skip
        the output matrix (Gemma's 262k-token vocabulary: about as much work as the rest of
        the model for one token); the cache holds the same numbers either way, since the
        keys and values of every layer are computed before the output rows are picked.
        """
        import llama_cpp

        llm, batch = self._llm, self._batch
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(llm.ctx), -1, llm.n_tokens, -1)
        batch.n_tokens = len(tokens)
        for j, token in enumerate(tokens):
            batch.token[j] = token
            batch.pos[j] = llm.n_tokens + j
            batch.n_seq_id[j] = 1
            batch.seq_id[j][0] = _SEQ
            batch.logits[j] = False
        batch.logits[len(tokens) - 1] = logits
        self._decode(batch)
        llm.input_ids[llm.n_tokens : llm.n_tokens + len(tokens)] = tokens
        llm.n_tokens += len(tokens)

    def _decode(self, batch: Any) -> None:
        """``llama_decode`` of ``batch`` (room for one more token), on as many threads as the
        engine has now; a single token gets a pad.

        The thread count changes no number: every output element of llama.cpp's CPU
        operations is computed whole by one thread, which ``tests/test_local.py`` checks,
        except in flash attention's split-KV path, which sums the cache in one chunk per
        thread and runs for a batch of exactly one query over 512 cells or more. So a single
        token is decoded with a pad token after it, as a lone call in a decode slot is
        (:func:`~simworld.llm.providers.local_slots.decode_padded`; ``tests/test_local_slots.py``
        checks that the answer then does not depend on the thread count). On every thread
        the engine has, 18 ms a token instead of 23 ms on one thread of two AVX2 cores
        (``bench_local.py`` (d)).
        """
        import llama_cpp

        threads = self._threads()
        if threads != self._threads_set:
            llama_cpp.llama_set_n_threads(self._llm.ctx, threads, threads)
            self._threads_set = threads
        if decode_padded(self._llm.ctx, batch):
            raise RuntimeError(f"llama_decode failed on {self.config.path}")

    def _restore(self, store: SeqStates, key: tuple[int, ...], keep: int) -> bool:
        """Start the cache from ``keep`` tokens of a saved state; False if it is gone."""
        if not store.restore(self._llm.ctx, _SEQ, key, keep, self.config.path):
            return False
        self._llm.n_tokens = keep
        self._llm.input_ids[:keep] = key[:keep]
        return True

    # -- decoding ------------------------------------------------------------------------------
    def _sampler(self, s: Sampling, budget: int) -> tuple[TokenSampler, SlotAccept]:
        """A sampler for ``s`` and the rule that adds a sampled token to the answer."""
        grammar = None
        if s.schema is not None:
            grammar = _gbnf(json.dumps(s.schema, sort_keys=True))
        sampler = TokenSampler(
            self._vocab,
            self._n_vocab,
            temperature=s.temperature,
            seed=s.seed,
            grammar=grammar,
        )
        accept = partial(
            take, end=self._is_eog, text=grammar is None, budget=budget, detok=self._detok
        )
        return sampler, accept

    def _is_eog(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def _sample(self, s: Sampling, budget: int, stop: Stop) -> tuple[list[int], str]:
        """Sample up to ``budget`` tokens after the prefilled prompt; ``(ids, finish)``.

        Raises:
            CallCancelledError: ``stop`` said so before a token.
        """
        out: list[int] = []
        sampler, accept = self._sampler(s, budget)
        with sampler:
            while True:
                finish = accept(out, sampler.pick(self._llm.ctx))
                if finish is not None:
                    return out, finish
                if stop():
                    raise CallCancelledError
                self._eval([out[-1]], logits=True)

    def _start_in_slot(
        self, s: Sampling, budget: int, n_prompt: int, stop: Stop
    ) -> tuple[list[int], str] | SlotCall:
        """Sample the first token after the prefilled prompt, then move the call to a decode
        slot (waiting for one to be free): the call in its slot (:meth:`_finish_in_slot`
        ends it), or ``(ids, finish)`` when the first token completes the answer. Holds the
        engine's lock.

        Raises:
            CallCancelledError: ``stop`` said so before the second token.
        """
        assert self._slots is not None
        out: list[int] = []
        sampler, accept = self._sampler(s, budget)
        try:
            finish = accept(out, sampler.pick(self._llm.ctx))
            if finish is None and stop():
                raise CallCancelledError
            if finish is not None:
                sampler.close()
                return out, finish
            state = self._seq_state()  # before waiting: another call may prefill meanwhile
            while not self._slots.free():
                self._turn.wait()
            call = SlotCall(sampler, out[-1], n_prompt, out, stop, accept)
            self._slots.admit(state, call)
        except BaseException:
            sampler.close()
            raise
        return call

    def _finish_in_slot(self, call: SlotCall) -> tuple[list[int], str]:
        """Run slot steps until ``call`` is complete; ``(ids, finish)``.

        Raises:
            CallCancelledError: The call's ``stop`` said so.
            RuntimeError: A decode of its slot failed.
            Exception: What its sampler raised (the other calls in slots go on).
        """
        assert self._slots is not None
        while call.finish is None:
            with self._turn:
                while call.finish is None and self._prefills and self._slots.free():
                    self._turn.wait(0.05)
                if call.finish is None:
                    self._slots.step(self._threads())
                self._turn.notify_all()
        if call.error is not None:
            raise call.error
        if call.finish == "cancelled":
            raise CallCancelledError
        return call.out, call.finish

    def _seq_state(self) -> bytes:
        """The state of the engine's sequence (the prompt's KV), as llama.cpp writes it."""
        return seq_state(self._llm.ctx, _SEQ)

    def _answer_text(self, sampled: list[int], s: Sampling) -> tuple[list[int], str]:
        """The answer's tokens and text: free text up to its first newline after non-blank
        text (:func:`first_line`), JSON whole."""
        if s.schema is None:
            return first_line(sampled, self._detok)
        return sampled, self._detok(sampled)

    def _detok(self, tokens: Sequence[int]) -> str:
        return self._llm.detokenize(list(tokens)).decode("utf-8", errors="replace")

    def _logits(self, index: int) -> np.ndarray:
        import llama_cpp

        ptr = llama_cpp.llama_get_logits_ith(self._llm.ctx, index)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()

    def _decode_all(self, tokens: Sequence[int], n_past: int) -> list[np.ndarray]:
        """Evaluate ``tokens`` at ``n_past`` in one batch; the logits after each token."""
        return self._decode_fork(Fork(list(tokens), [], n_past))

    def _decode_fork(self, fork: Fork) -> list[np.ndarray]:
        """Answer ``fork`` with one ``llama_decode``: the shared tokens belong to the prompt's
        sequence and to one sequence per non-empty branch (each a copy of the prompt's, which
        costs no evaluation in the unified KV cache), each branch's tokens to its own. So
        every branch sees the prompt and the shared tokens, and no other branch. The
        branches' sequences are removed afterwards; the shared tokens stay in the prompt's
        (a later evaluation at a position after them continues from them).

        The numbers depend only on the fork (the cache then holds just the prompt), so the
        same prompt and options score the same whatever ran before.
        """
        import llama_cpp

        branches = [branch for branch in fork.branches if branch]
        if len(branches) >= FORK_SEQS:
            return in_turn(fork, self._decode_all)
        ctx = self._llm.ctx
        memory = llama_cpp.llama_get_memory(ctx)
        llama_cpp.llama_memory_seq_rm(memory, _SEQ, fork.pos, -1)
        seqs = range(_SEQ + 1, _SEQ + 1 + len(branches))
        for seq in seqs:
            llama_cpp.llama_memory_seq_cp(memory, _SEQ, seq, -1, -1)
        after = fork.pos + len(fork.shared)
        entries = [(token, fork.pos + j, [_SEQ, *seqs]) for j, token in enumerate(fork.shared)]
        for seq, branch in zip(seqs, branches, strict=True):
            entries += [(token, after + j, [seq]) for j, token in enumerate(branch)]
        batch = llama_cpp.llama_batch_init(max(2, len(entries)), 0, 1 + len(branches))  # a pad
        try:
            batch.n_tokens = len(entries)
            for j, (token, pos, ids) in enumerate(entries):
                batch.token[j] = token
                batch.pos[j] = pos
                batch.n_seq_id[j] = len(ids)
                for k, seq in enumerate(ids):
                    batch.seq_id[j][k] = seq
                batch.logits[j] = True
            if entries:
                self._decode(batch)
            return [self._logits(j) for j in range(len(entries))]
        finally:
            llama_cpp.llama_batch_free(batch)
            for seq in seqs:
                llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
            self._llm.n_tokens = fork.pos

    # -- log-probabilities ---------------------------------------------------------------------
    def _logprobs(
        self, prompt: list[int], out: list[int], last: np.ndarray, s: Sampling
    ) -> list[dict[str, Any]]:
        """Per-token entries; an ``answer`` enum becomes one entry scoring every option."""
        k = top_count(s.top_logprobs)
        rows = [log_softmax(last)]
        if len(out) > 1:
            rows += [log_softmax(r) for r in self._decode_all(out[:-1], len(prompt))]
        entries = [
            logprob_entry(row, token, k, self._detok) for token, row in zip(out, rows, strict=True)
        ]
        steps = score_options(out, len(prompt), rows, entries, s.schema, self._tokens, self._detok)
        return drive(steps, self._decode_all)

    def _tokens(self, text: str) -> list[int]:
        return self.tokenize(text, bos=False)


class EnginePool(OnePerConfig):
    """``config.engines`` serial engines of one model answering calls at once.

    Each engine is a :class:`LlamaEngine` with its own llama.cpp context (each maps the
    weights from the file, and the mappings share their pages in memory; the run-size
    estimate allows :data:`~simworld.runs.estimate.ENGINE_BYTES` for each engine after the
    first). The engines share the saved preamble and prompt states, so a call reuses what
    any engine evaluated (and waits for a preamble another engine is evaluating, see
    :class:`Evaluating`), and they share the cores: before every decode an engine takes
    ``threads // busy`` of them, ``busy`` being the engines working on a call, so a call
    alone gets every core. Two one-thread engines on two cores spare the barrier a
    two-thread engine waits at after each of the model's many small operations: the main
    job ran faster with two than with one (``docs/benchmarks-main-job.md``). A call's
    answer does not depend on the engine that runs it, on its thread count or on what ran
    before (see :class:`LlamaEngine`), so what the model says is the same for any number of
    engines (a run's files differ only where they record the model string). Each engine
    takes up to ``config.slots`` calls at once, the least busy engine the next call: one
    prefills while the others generate in its decode slots.

    Args:
        config: The model and its options (``config.engines`` > 1, ``config.batch`` 1).
    """

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self._cores = config.thread_count
        self._busy = 0
        self._cond = threading.Condition()
        stores = (SeqStates(PREFIX_CACHE_BYTES), SeqStates(PROMPT_CACHE_BYTES))
        evaluating = Evaluating(self._lend)
        self.engines = [
            LlamaEngine(config, stores, self._threads_now, evaluating)
            for _ in range(config.engines)
        ]
        self._load = {id(engine): 0 for engine in self.engines}  # calls on each engine
        self._workers = ThreadPoolExecutor(
            len(self.engines) * config.slots, thread_name_prefix="simworld-pool"
        )

    def _threads_now(self) -> int:
        return max(1, self._cores // max(1, self._busy))

    def _lend(self, change: int) -> None:
        """An engine stops (-1) or resumes (+1) working on its call."""
        with self._cond:
            self._busy += change

    def tokenize(self, text: str, *, bos: bool) -> list[int]:
        """Token ids of ``text``."""
        return self.engines[0].tokenize(text, bos=bos)

    def submit(self, prompt: str, *, preamble: str, sampling: Sampling) -> Future[Generation]:
        """Queue one call for the next idle engine; see :meth:`LlamaEngine.submit`."""
        future: Future[Generation] = Future()
        self._workers.submit(self._answer, future, prompt, preamble, sampling)
        return future

    def generate(self, prompt: str, *, preamble: str, sampling: Sampling) -> Generation:
        """Decode one continuation of ``prompt`` (see :meth:`LlamaEngine.generate`)."""
        return self.submit(prompt, preamble=preamble, sampling=sampling).result()

    def _answer(
        self, future: Future[Generation], prompt: str, preamble: str, sampling: Sampling
    ) -> None:
        """Run one call on the least busy engine, the first holding its preamble among
        those (a worker thread's job: there are ``slots`` per engine, so one always has
        room)."""
        with self._cond:
            least = min(self._load.values())
            ready = [e for e in self.engines if self._load[id(e)] == least]
            engine = next((e for e in ready if e.preamble == preamble), ready[0])
            self._load[id(engine)] += 1
            if self._load[id(engine)] == 1:
                self._busy += 1
        try:
            engine._answer(future, prompt, preamble, sampling)
        finally:
            with self._cond:
                self._load[id(engine)] -= 1
                if self._load[id(engine)] == 0:
                    self._busy -= 1


def first_line(out: list[int], detok: Callable[[Sequence[int]], str]) -> tuple[list[int], str]:
    """Tokens and text of ``out`` up to the first newline after non-blank text."""
    text = detok(out)
    body = text.lstrip()
    if "\n" not in body:
        return out, text
    keep = text[: len(text) - len(body)] + body.split("\n", 1)[0]
    if len(out) > 1 and detok(out[:-1]).startswith(keep):
        out = out[:-1]
    return out, keep
