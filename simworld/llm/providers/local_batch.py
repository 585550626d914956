"""Batched decoding of the embedded model: several calls share every llama.cpp decode.

:class:`BatchedEngine` answers up to ``batch`` calls at once (``local/...?batch=N``, N > 1;
the default, 1, is the serial engine). Each call owns one llama.cpp sequence; a worker
thread runs steps, and in every step the next piece of work of every call in flight (a
prompt chunk, one generated token, the tokens of an option being scored) goes into shared
``llama_decode`` calls. A call that arrives while others are decoding joins at the next step
(continuous batching). Prompts that start like a sequence already in the KV cache (a call in
flight, or a finished one kept in a spare sequence, least recently used first to go) copy
that sequence's cache with ``llama_memory_seq_cp`` instead of evaluating the shared prefix
again; per-preamble states (the persona card) are also saved and restored as in the serial
engine. Sampling is the serial engine's (seeded chain, grammar for JSON), from logits read
out of the batch; log-probabilities come from the logits each token was sampled from, and
answers over a fixed set of options are scored and drawn by the same steps as in the serial
engine (:mod:`simworld.llm.providers.local_options`).

Determinism: a call's tokens and log-probabilities do not depend on what else shares its
batches, on the order calls arrive, or on whether its prefix was copied, restored or
evaluated. That follows from the way each number is computed, found by experiment on
llama.cpp's CPU backend (llama-cpp-python 0.3.36) and checked by ``tests/test_local.py``:

* Matrix products compute every output element as one dot product over the shared
  dimension, rows of one sequence never mixing with rows of another, in an order that
  depends on the number of tokens in the ubatch only through one threshold: a ubatch of 2
  to 7 tokens gives one set of numbers, one of :data:`SMALL_UBATCH` (8) or more another
  (a token's logits changed by up to 0.65 between a ubatch of seven one-token pieces and
  one of eight; that is what ``benchmarks/bench_batched.py``'s reverse-order check caught,
  eight calls generating in one step on consecutive sequences). The number of output rows
  does not matter (1, 2 or 8 outputs in a ubatch of 8 tokens gave the same numbers). So
  pieces shorter than :data:`SMALL_UBATCH` go into ``llama_decode`` calls holding fewer
  than :data:`SMALL_UBATCH` tokens in all (at most ``7 // length`` consecutive sequences),
  and pieces of :data:`SMALL_UBATCH` or more tokens into calls with pieces of their length
  only, whose every ubatch then holds :data:`SMALL_UBATCH` tokens or more. (The serial
  engine's regime, without flash attention, has a worse problem: its attention products
  and softmax run over all KV cells in view, whose count depends on what else is cached;
  its logits changed by up to 0.95 with another sequence in the batch.)
* Attention uses flash attention with one KV *stream* per sequence (``kv_unified=False``)
  and a full-size sliding-window cache (``swa_full=True``). A sequence's tokens then sit at
  cell index = position in its own stream, however its history went, and the CPU kernel
  walks the cells in index order, skipping masked ones. With a unified cache the cells of
  a sequence are interleaved with others' and the kernel tiles queries of several
  sequences together (logits changed by up to 1.19).
* llama.cpp's CPU flash attention has two other code paths whose results differ from the
  per-row one: a *tiled* path when a ubatch holds 64 or more queries of one sequence, and a
  *split-KV* path, which sums the cache in one chunk per thread, when a ubatch holds
  exactly one query of exactly one sequence over 512 or more cells (logits changed by up to
  1.23). So no sequence puts more than :data:`SEQ_CHUNK` (< 64) tokens in one decode, and a
  sequence alone with a single token gets a pad token after it (at the next position, so
  the causal mask hides it; its cell is removed right after).
* With a per-sequence cache llama.cpp splits a batch into ubatches of *consecutive*
  sequence ids holding *equal* token counts, cutting longer sequences' tokens where the
  shortest ends. So every ``llama_decode`` holds pieces of one length only, and a ubatch
  is always a whole run of consecutive sequences with their whole pieces; the calls of
  short pieces (above) are runs of consecutive ids, so each is one ubatch.
* A ubatch with outputs has at least two (one-token pieces are outputs; longer pieces
  that need logits mark their last two tokens), so the last layer and the output matrix
  always run on two or more rows.
* What does change a token's numbers is how its *own* sequence's tokens are cut into
  pieces (a 22-token prompt evaluated whole, or cut after its 7th token, gives different
  logits; other sequences' rows in the same ubatch, within the rules above, change
  nothing). So a prompt is evaluated in pieces aligned to multiples of :data:`SEQ_CHUNK`
  absolute positions, and only whole aligned pieces are reused (copied, kept in place, or
  saved as a per-preamble state): a prefix shared up to the middle of a piece, a partial
  last piece and generated tokens are evaluated again. (The serial engine cuts prompts by
  their content instead, at the preamble's end and at line ends:
  :func:`~simworld.llm.providers.local_engine.piece_ends`; the grid keeps this engine's
  pieces of one length per decode.)

The threshold of 8 tokens was measured on this build's AVX2 kernels (``extra_bufts`` off);
other CPU kernels may cut elsewhere, which ``tests/test_local.py`` would show (eight calls
generating together must answer as each does alone).

Memory: ``n_ctx`` tokens of KV per sequence (full-size sliding-window cache included), for
``batch`` active sequences plus ``batch // 2`` (at least two) spare ones that keep recent
prefixes: with Gemma 3 270M, 18 layers x 512 bytes x 2 (K and V) per token, about 75 MB per
sequence at ``n_ctx=4096``, 0.9 GB for ``batch=8``; the per-preamble state cache is capped at
:data:`~simworld.llm.providers.local_engine.PREFIX_CACHE_BYTES` as in the serial engine.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Generator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from simworld.llm.providers.local_engine import (
    EngineConfig,
    EnginePool,
    Generation,
    LlamaEngine,
    OnePerConfig,
    Sampling,
    SeqStates,
    _common_prefix,
    _gbnf,
    _quiet_llama_logs,
    check_build,
    first_line,
    grid_ends,
    prompt_budget,
    settle,
    state_tokens,
    use_extra_bufts,
)
from simworld.llm.providers.local_options import (
    AnswerOptions,
    Evaluations,
    Fork,
    drawn_answer,
    log_softmax,
    logprob_entry,
    score_options,
    top_count,
)
from simworld.llm.providers.local_sampler import TokenSampler

SEQ_CHUNK = 32
SMALL_UBATCH = 8
MIN_SPARE = 2
_LOG = logging.getLogger("simworld.llm.providers.local")
_BACKEND_LOCK = threading.Lock()
_BACKEND_READY: list[bool] = []


@dataclass
class _Eval:
    """Tokens of one sequence to evaluate at ``pos`` (what is cached from ``pos`` on goes).

    Attributes:
        seq: The sequence.
        pos: Position of the first token.
        tokens: The tokens.
        outputs: Whether each token's logits are wanted.
    """

    seq: int
    pos: int
    tokens: list[int]
    outputs: list[bool]


@dataclass
class _Request:
    future: Future[Generation]
    tokens: list[int]
    preamble_len: int
    sampling: Sampling
    budget: int


@dataclass
class _Job:
    """A call in flight: its sequence, its steps, and the evaluation it waits for."""

    request: _Request
    seq: int
    steps: Generator[_Eval, list[np.ndarray], Generation]
    pending: _Eval | None = None
    rows: list[np.ndarray] = field(default_factory=list)


class BatchedEngine(OnePerConfig):
    """A loaded GGUF model answering up to ``config.batch`` calls at once.

    Args:
        config: The model file and its load options.
    """

    def __init__(self, config: EngineConfig) -> None:
        import llama_cpp
        from llama_cpp import _internals

        _quiet_llama_logs()
        with _BACKEND_LOCK:
            if not _BACKEND_READY:
                llama_cpp.llama_backend_init()
                _BACKEND_READY.append(True)
        super().__init__(config)
        self.batch = max(1, config.batch)
        self.n_seqs = self.batch + max(MIN_SPARE, self.batch // 2)
        threads = config.thread_count
        self.extra_bufts = use_extra_bufts(config.extra_bufts)
        model_params = llama_cpp.llama_model_default_params()
        model_params.use_extra_bufts = self.extra_bufts
        self._model = _internals.LlamaModel(
            path_model=str(config.path), params=model_params, verbose=False
        )
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = config.n_ctx * self.n_seqs
        params.n_batch = params.n_ubatch = self.n_seqs * SEQ_CHUNK
        params.n_seq_max = self.n_seqs
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = False
        params.swa_full = True
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        self._context = _internals.LlamaContext(model=self._model, params=params, verbose=False)
        self._ctx = self._context.ctx
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._vocab = llama_cpp.llama_model_get_vocab(self._model.model)
        self._n_vocab = self._model.n_vocab()
        self._cached: list[list[int]] = [[] for _ in range(self.n_seqs)]
        self._canon = [0] * self.n_seqs  # leading cached tokens evaluated in whole chunks
        self._busy = [False] * self.n_seqs
        self._last_use = [0] * self.n_seqs
        self._clock = 0
        self._copy_sources: set[int] = set()
        self._states = SeqStates()
        self._state_tokens = state_tokens(self._model.model, config.n_ctx)
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.stats = {"decodes": 0, "copied_tokens": 0, "restored_tokens": 0, "pads": 0}
        self._thread = threading.Thread(
            target=self._run, name=f"simworld-batch-{config.path.stem}", daemon=True
        )
        self._thread.start()

    # -- public --------------------------------------------------------------------------------
    def tokenize(self, text: str, *, bos: bool) -> list[int]:
        """Token ids of ``text``."""
        return self._model.tokenize(text.encode("utf-8"), bos, False)

    def submit(self, prompt: str, *, preamble: str, sampling: Sampling) -> Future[Generation]:
        """Queue one continuation of ``prompt``; the future holds its :class:`Generation`.

        Args:
            prompt: The completion-style prompt.
            preamble: Leading part of ``prompt`` that repeats across calls (its KV state
                is kept for reuse).
            sampling: Decoding settings.

        Returns:
            A future that fails with
            :class:`~simworld.llm.providers.local_engine.ContextOverflowError` when the
            prompt does not fit the context window.
        """
        future: Future[Generation] = Future()
        try:
            tokens = self.tokenize(prompt, bos=True)
            budget = prompt_budget(self.config, len(tokens), sampling.max_tokens)
            preamble_len = _common_prefix(self.tokenize(preamble, bos=True), tokens)
        except Exception as exc:  # the caller sees it through the future
            future.set_exception(exc)
            return future
        with self._cond:
            if self._closed:
                future.set_exception(RuntimeError(f"the engine of {self.config.path} is closed"))
                return future
            self._queue.append(_Request(future, tokens, preamble_len, sampling, budget))
            self._cond.notify()
        return future

    def generate(self, prompt: str, *, preamble: str, sampling: Sampling) -> Generation:
        """Decode one continuation of ``prompt`` (waits while the batch is full).

        Raises:
            ContextOverflowError: The prompt does not fit the context window.
        """
        return self.submit(prompt, preamble=preamble, sampling=sampling).result()

    def close(self) -> None:
        """Finish the calls in flight and queued, then stop the worker thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    # -- scheduler -----------------------------------------------------------------------------
    def _run(self) -> None:
        jobs: dict[int, _Job] = {}
        while True:
            with self._cond:
                while not self._queue and not jobs and not self._closed:
                    self._cond.wait()
                if self._closed and not self._queue and not jobs:
                    return
                admitted: list[_Request] = []
                while self._queue and len(jobs) + len(admitted) < self.batch:
                    request = self._queue.popleft()
                    if not request.future.cancelled():
                        admitted.append(request)
            try:
                for request in admitted:
                    self._start(request, jobs)
                self._step(jobs)
            except Exception as exc:  # a bug here must not leave callers waiting forever
                _LOG.exception("the batched engine of %s failed", self.config.path)
                for job in jobs.values():
                    settle(job.request.future, error=exc)
                    self._forget(job.seq)
                    self._busy[job.seq] = False
                jobs.clear()

    def _start(self, request: _Request, jobs: dict[int, _Job]) -> None:
        try:
            seq = self._admit(request.tokens)
        except Exception as exc:
            settle(request.future, error=exc)
            return
        job = _Job(request, seq, self._steps(seq, request))
        jobs[seq] = job
        self._advance(job, jobs, None)

    def _advance(
        self, job: _Job, jobs: dict[int, _Job], rows: list[np.ndarray] | BaseException | None
    ) -> None:
        """Run ``job`` up to its next evaluation, or finish it."""
        try:
            if isinstance(rows, BaseException):
                job.pending = job.steps.throw(rows)
            elif rows is None:
                job.pending = next(job.steps)
            else:
                job.pending = job.steps.send(rows)
            return
        except StopIteration as stop:
            settle(job.request.future, stop.value)
        except Exception as exc:
            settle(job.request.future, error=exc)
            self._forget(job.seq)
        self._end(job, jobs)

    def _end(self, job: _Job, jobs: dict[int, _Job]) -> None:
        """Free ``job``'s sequence for the next call."""
        job.steps.close()
        del jobs[job.seq]
        self._busy[job.seq] = False

    def _step(self, jobs: dict[int, _Job]) -> None:
        """Drop the jobs whose callers cancelled them, evaluate what every other job waits
        for, then move each on."""
        for job in [job for job in jobs.values() if job.request.future.cancelled()]:
            self._forget(job.seq)  # as after a failure
            self._end(job, jobs)
        pending = {seq: job.pending for seq, job in jobs.items() if job.pending is not None}
        results = self._evaluate(pending)
        for seq in sorted(results):
            self._advance(jobs[seq], jobs, results[seq])

    # -- sequences and prefixes ----------------------------------------------------------------
    def _admit(self, tokens: list[int]) -> int:
        """A free sequence for a prompt, holding the longest cached prefix of it."""
        limit = len(tokens) - 1
        source, shared = -1, 0
        if self.config.prefix_reuse:
            for seq, cached in enumerate(self._cached):
                whole = cached[: self._canon[seq]]
                n = min(_common_prefix(whole, tokens), limit) // SEQ_CHUNK * SEQ_CHUNK
                if n > shared:
                    source, shared = seq, n
        free = [s for s in range(self.n_seqs) if not self._busy[s]]
        if source >= 0 and not self._busy[source]:
            seq = source
        else:
            calm = [s for s in free if s not in self._copy_sources] or free
            seq = min(calm, key=lambda s: self._last_use[s])
        saved = self._closest_state(tokens, limit)
        self._busy[seq] = True
        self._clock += 1
        self._last_use[seq] = self._clock
        try:
            self._fill(seq, source, shared, saved)
        except Exception:
            self._busy[seq] = False
            self._forget(seq)
            raise
        return seq

    def _fill(self, seq: int, source: int, shared: int, saved: tuple[tuple[int, ...], int]) -> None:
        """Give ``seq`` the longest of: the leading tokens of a saved state (its key and how
        many), ``shared`` tokens of ``source``."""
        import llama_cpp

        if saved[1] > shared and seq not in self._copy_sources:
            self._restore(seq, *saved)
        elif seq == source:
            self._truncate(seq, shared)
        elif shared > 0:
            # the copy of the whole stream happens at the next llama_decode
            llama_cpp.llama_memory_seq_cp(self._mem, source, seq, -1, -1)
            self._copy_sources.add(source)
            self._cached[seq] = list(self._cached[source])
            self._canon[seq] = self._canon[source]
            self._truncate(seq, shared)
            self.stats["copied_tokens"] += shared
        else:
            self._truncate(seq, 0)

    def _truncate(self, seq: int, n: int) -> None:
        """Drop the cached tokens of ``seq`` from position ``n`` on."""
        import llama_cpp

        if len(self._cached[seq]) > n or n == 0:
            llama_cpp.llama_memory_seq_rm(self._mem, seq, n if n else -1, -1)
            del self._cached[seq][n:]
        self._canon[seq] = min(self._canon[seq], n)

    def _forget(self, seq: int) -> None:
        """Empty ``seq`` (after a failure its cache may not match what was asked)."""
        self._truncate(seq, 0)

    def _closest_state(self, tokens: list[int], limit: int) -> tuple[tuple[int, ...], int]:
        if not self.config.prefix_reuse:
            return (), 0
        return self._states.closest(tokens, grid_ends(len(tokens), SEQ_CHUNK), limit)

    def _restore(self, seq: int, key: tuple[int, ...], keep: int) -> None:
        self._truncate(seq, 0)
        self._states.restore(self._ctx, seq, key, keep, self.config.path)
        self._cached[seq] = list(key[:keep])
        self._canon[seq] = keep
        self.stats["restored_tokens"] += keep

    # -- evaluation ----------------------------------------------------------------------------
    def _evaluate(self, pending: dict[int, _Eval]) -> dict[int, list[np.ndarray] | BaseException]:
        """Evaluate every pending piece; the logits rows of each piece's outputs, by sequence.

        Pieces go into ``llama_decode`` calls of one piece length each (see
        :func:`_groups`): pieces shorter than :data:`SMALL_UBATCH` tokens in calls of fewer
        than :data:`SMALL_UBATCH` tokens in all, a lone one-token piece with a pad token
        after it (see the module docstring).
        """
        by_len: dict[int, list[_Eval]] = {}
        for piece in pending.values():
            by_len.setdefault(len(piece.tokens), []).append(piece)
        padded: set[int] = set()
        calls: list[list[_Eval]] = []
        for length in sorted(by_len):
            for group in _groups(sorted(by_len[length], key=lambda e: e.seq), length):
                if len(group) == 1 and length == 1:
                    piece = group[0]
                    padded.add(piece.seq)
                    group = [
                        _Eval(piece.seq, piece.pos, [*piece.tokens, piece.tokens[-1]], [True, True])
                    ]
                calls.append(group)
        results: dict[int, list[np.ndarray] | BaseException] = {}
        for pieces in calls:
            try:
                rows = self._decode(pieces)
            except Exception as exc:
                for piece in pieces:
                    results[piece.seq] = exc
                    self._forget(piece.seq)
                continue
            for piece in pieces:
                n = len(pending[piece.seq].tokens)
                if piece.seq in padded:
                    self._truncate(piece.seq, piece.pos + n)
                    self.stats["pads"] += 1
                results[piece.seq] = rows[piece.seq][: len(rows[piece.seq]) - (piece.seq in padded)]
        return results

    def _decode(self, pieces: list[_Eval]) -> dict[int, list[np.ndarray]]:
        import llama_cpp

        total = sum(len(p.tokens) for p in pieces)
        for piece in pieces:
            if len(piece.tokens) > SEQ_CHUNK:
                raise ValueError(f"a piece of {len(piece.tokens)} tokens (max {SEQ_CHUNK})")
            if len(self._cached[piece.seq]) < piece.pos:
                raise RuntimeError(f"sequence {piece.seq} has a gap before {piece.pos}")
            self._truncate(piece.seq, piece.pos)
        batch = llama_cpp.llama_batch_init(total, 0, 1)
        wanted: list[tuple[int, int]] = []
        try:
            batch.n_tokens = total
            j = 0
            for piece in pieces:
                for k, (token, out) in enumerate(zip(piece.tokens, piece.outputs, strict=True)):
                    batch.token[j] = token
                    batch.pos[j] = piece.pos + k
                    batch.n_seq_id[j] = 1
                    batch.seq_id[j][0] = piece.seq
                    batch.logits[j] = out
                    if out:
                        wanted.append((piece.seq, j))
                    j += 1
            code = llama_cpp.llama_decode(self._ctx, batch)
            self._copy_sources.clear()
            self.stats["decodes"] += 1
            if code != 0:
                raise RuntimeError(f"llama_decode failed on {self.config.path} (code {code})")
            rows: dict[int, list[np.ndarray]] = {p.seq: [] for p in pieces}
            for seq, index in wanted:
                ptr = llama_cpp.llama_get_logits_ith(self._ctx, index)
                rows[seq].append(np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy())
        finally:
            llama_cpp.llama_batch_free(batch)
        for piece in pieces:
            self._cached[piece.seq].extend(piece.tokens)
            whole = len(piece.tokens) == SEQ_CHUNK and piece.pos % SEQ_CHUNK == 0
            if whole and self._canon[piece.seq] == piece.pos:
                self._canon[piece.seq] = piece.pos + SEQ_CHUNK
        return rows

    # -- one call ------------------------------------------------------------------------------
    def _steps(self, seq: int, request: _Request) -> Generator[_Eval, list[np.ndarray], Generation]:
        """One call: prefill, sampling, log-probabilities; yields what to evaluate."""
        import llama_cpp

        tokens, s = request.tokens, request.sampling
        pos = cached = len(self._cached[seq])
        save_at = min(request.preamble_len, self._state_tokens) // SEQ_CHUNK * SEQ_CHUNK
        if not self.config.prefix_reuse:
            save_at = 0
        if not pos < save_at < len(tokens) or tuple(tokens[:save_at]) in self._states:
            save_at = 0
        rows: list[np.ndarray] = []
        while pos < len(tokens):
            end = min(pos // SEQ_CHUNK * SEQ_CHUNK + SEQ_CHUNK, len(tokens))
            chunk = tokens[pos:end]
            last = end == len(tokens)
            outputs = [last and i >= len(chunk) - 2 for i in range(len(chunk))]
            rows = yield _Eval(seq, pos, chunk, outputs)
            pos = end
            if pos == save_at:
                key = tuple(tokens[:save_at])
                self._states.save(self._ctx, seq, key, grid_ends(save_at, SEQ_CHUNK))
        logits = rows[-1]
        options = AnswerOptions.of(
            self.config.drawn_answers, s.schema, request.budget, self._tokens, self._detok
        )
        if options is not None:
            steps = drawn_answer(options, logits, len(tokens), s, self._detok)
            drawn, text, logprobs = yield from self._evals(seq, steps)
            return Generation(text, len(tokens), len(drawn), "stop", logprobs, cached)
        grammar = None if s.schema is None else _gbnf(json.dumps(s.schema, sort_keys=True))
        want = s.top_logprobs is not None
        k = top_count(s.top_logprobs)
        out: list[int] = []
        entries: list[dict[str, Any]] = []
        seen: list[np.ndarray] = []
        with TokenSampler(
            self._vocab,
            self._n_vocab,
            temperature=s.temperature,
            seed=s.seed,
            grammar=grammar,
        ) as sampler:
            while True:
                token = sampler.pick_logits(logits)
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    finish = "stop"
                    break
                out.append(token)
                if want:
                    row = log_softmax(logits)
                    entries.append(logprob_entry(row, token, k, self._detok))
                    seen.append(row)
                if grammar is None and "\n" in self._detok(out).lstrip():
                    finish = "stop"
                    break
                if len(out) >= request.budget:
                    finish = "length"
                    break
                step = yield _Eval(seq, len(tokens) + len(out) - 1, [token], [True])
                logits = step[-1]
        generated = len(out)
        text = self._detok(out)
        if s.schema is None:
            out, text = first_line(out, self._detok)
        logprobs = None
        if want and out:
            steps = score_options(
                out, len(tokens), seen, entries[: len(out)], s.schema, self._tokens, self._detok
            )
            logprobs = yield from self._evals(seq, steps)
        return Generation(text, len(tokens), generated, finish, logprobs, cached)

    def _evals(self, seq: int, steps: Evaluations) -> Generator[_Eval, list[np.ndarray], Any]:
        """Run ``steps`` on sequence ``seq``: what it asks to evaluate goes out in pieces of at
        most :data:`SEQ_CHUNK` tokens, every token an output (a fork's parts one after
        another, in the call's one sequence); its result."""
        try:
            ask = next(steps)
            while True:
                rows: list[np.ndarray] = []
                for tokens, pos in ask.asks() if isinstance(ask, Fork) else [ask]:
                    for i in range(0, len(tokens), SEQ_CHUNK):
                        piece = tokens[i : i + SEQ_CHUNK]
                        rows += yield _Eval(seq, pos + i, piece, [True] * len(piece))
                ask = steps.send(rows)
        except StopIteration as stop:
            return stop.value

    def _tokens(self, text: str) -> list[int]:
        return self.tokenize(text, bos=False)

    def _detok(self, tokens: Sequence[int]) -> str:
        return self._model.detokenize(list(tokens), False).decode("utf-8", errors="replace")


@lru_cache(maxsize=1)
def _check_build_once() -> bool:
    """:func:`check_build` until it passes once in this process (``inline`` mode asks before
    every call; a failed check is not cached, so it raises again)."""
    check_build()
    return True


def load_engine(config: EngineConfig) -> LlamaEngine | EnginePool | BatchedEngine:
    """The process's engine for ``config``: a :class:`BatchedEngine` for ``batch`` > 1, else
    the serial :class:`~simworld.llm.providers.local_engine.LlamaEngine`, or an
    :class:`~simworld.llm.providers.local_engine.EnginePool` of them for ``engines`` > 1.

    Raises:
        BuildMismatchError: llama.cpp was compiled for another CPU (:func:`check_build`).
    """
    _check_build_once()
    if config.batch > 1:
        return BatchedEngine.get(config)
    if config.engines > 1:
        return EnginePool.get(config)
    return LlamaEngine.get(config)


def _runs(pieces: list[_Eval]) -> list[list[_Eval]]:
    """Pieces sorted by sequence id cut into runs of consecutive ids."""
    runs: list[list[_Eval]] = []
    for piece in pieces:
        if runs and runs[-1][-1].seq == piece.seq - 1:
            runs[-1].append(piece)
        else:
            runs.append([piece])
    return runs


def _groups(pieces: list[_Eval], length: int) -> list[list[_Eval]]:
    """Pieces of ``length`` tokens (sorted by sequence id) cut into ``llama_decode`` calls.

    Pieces of :data:`SMALL_UBATCH` tokens or more all go into one call (llama.cpp cuts it
    into ubatches of consecutive sequence ids, each of :data:`SMALL_UBATCH` tokens or more).
    Shorter pieces go into calls of consecutive sequence ids holding fewer than
    :data:`SMALL_UBATCH` tokens in all, a run cut into parts as equal as can be.
    """
    if length >= SMALL_UBATCH:
        return [pieces]
    cap = (SMALL_UBATCH - 1) // length
    out: list[list[_Eval]] = []
    for run in _runs(pieces):
        parts = -(-len(run) // cap)
        size, extra = divmod(len(run), parts)
        start = 0
        for i in range(parts):
            end = start + size + (i < extra)
            out.append(run[start:end])
            start = end
    return out
