"""Seeded token sampling for the local provider, with fast grammar-constrained decoding.

llama-cpp-python applies a grammar to the whole vocabulary before any truncation, which for
Gemma's 262k-token vocabulary costs tens of milliseconds per token. :class:`TokenSampler`
does what llama.cpp's own command-line sampler does instead: it samples from the usual
chain (penalties, top-k, top-p, min-p, temperature, seeded draw) and asks the grammar only
whether that one token is allowed. When it is not, the grammar filters the
:data:`GRAMMAR_SHORTLIST` most likely tokens (the whole vocabulary if none of them is
allowed) and the chain samples again among what is left. Without truncation this draws
exactly from the grammar-constrained distribution; with it, it differs only in tokens the
truncation would drop anyway. Every pick is allowed by the grammar, so output always parses.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from typing import Any

import numpy as np

TOP_K = 40
TOP_P = 0.95
MIN_P = 0.05
PENALTY_LAST_N = 64
TEXT_REPEAT_PENALTY = 1.1
"""Penalty on the last :data:`PENALTY_LAST_N` tokens of free text. An answer under a grammar
gets none: the grammar's rejected first picks would otherwise enter the penalty window."""
GRAMMAR_SHORTLIST = 1024
CANDIDATES = TOP_K + PENALTY_LAST_N
_DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp draws a random seed for this value: never pass it
_TOKEN_DTYPE = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


@lru_cache(maxsize=4)
def _all_ids(n_vocab: int) -> np.ndarray:
    """Every token id, once per vocabulary size (read-only)."""
    ids = np.arange(n_vocab, dtype=np.int32)
    ids.flags.writeable = False
    return ids


class GrammarError(ValueError):
    """A grammar could not be parsed by llama.cpp."""


class TokenSampler:
    """One decoding's sampler: a seeded llama.cpp chain plus an optional grammar.

    Args:
        vocab: The model's ``llama_vocab`` pointer.
        n_vocab: Size of the vocabulary.
        temperature: Sampling temperature; 0 picks the most likely token.
        seed: Seed of the draw.
        grammar: GBNF grammar (root rule ``root``) the output must match, if any; without
            one, recently generated tokens get :data:`TEXT_REPEAT_PENALTY`.
    """

    def __init__(
        self,
        vocab: Any,
        n_vocab: int,
        *,
        temperature: float,
        seed: int,
        grammar: str | None = None,
    ) -> None:
        import llama_cpp

        self._llama = llama_cpp
        self._n_vocab = n_vocab
        self._chain = llama_cpp.llama_sampler_chain_init(
            llama_cpp.llama_sampler_chain_default_params()
        )
        self._grammar = None
        stages = []
        if grammar is None:
            stages.append(
                llama_cpp.llama_sampler_init_penalties(
                    n_vocab, PENALTY_LAST_N, TEXT_REPEAT_PENALTY, 0.0, 0.0
                )
            )
        if temperature <= 0.0:
            stages.append(llama_cpp.llama_sampler_init_greedy())
        else:
            seed &= 0xFFFFFFFF
            stages += [
                llama_cpp.llama_sampler_init_top_k(TOP_K),
                llama_cpp.llama_sampler_init_top_p(TOP_P, 1),
                llama_cpp.llama_sampler_init_min_p(MIN_P, 1),
                llama_cpp.llama_sampler_init_temp(temperature),
                llama_cpp.llama_sampler_init_dist(seed - 1 if seed == _DEFAULT_SEED else seed),
            ]
        for stage in stages:
            llama_cpp.llama_sampler_chain_add(self._chain, stage)
        if grammar is not None:
            self._grammar = llama_cpp.llama_sampler_init_grammar(
                vocab, grammar.encode("utf-8"), b"root"
            )
            if not self._grammar:
                self.close()
                raise GrammarError("llama.cpp could not parse the grammar of the JSON schema")

    def close(self) -> None:
        """Free the native samplers."""
        for sampler in (self._chain, self._grammar):
            if sampler:
                self._llama.llama_sampler_free(sampler)
        self._chain = self._grammar = None

    def __enter__(self) -> TokenSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pick(self, ctx: Any) -> int:
        """Sample the token after the last evaluated position of ``ctx`` and record it."""
        llama = self._llama
        token = int(llama.llama_sampler_sample(self._chain, ctx, -1))  # also accepts it
        if self._grammar is None:
            return token
        logits = np.ctypeslib.as_array(llama.llama_get_logits_ith(ctx, -1), shape=(self._n_vocab,))
        if not self._allowed(token, float(logits[token])):
            shortlist = np.argpartition(-logits, GRAMMAR_SHORTLIST)[:GRAMMAR_SHORTLIST]
            token = self._constrained(logits, np.sort(shortlist).astype(np.int32))
            if token < 0:
                token = self._constrained(logits, np.arange(self._n_vocab, dtype=np.int32))
        llama.llama_sampler_accept(self._grammar, token)
        return token

    def pick_logits(self, logits: np.ndarray) -> int:
        """Like :meth:`pick`, from a copy of the logits instead of a context.

        The chain sees only the :data:`CANDIDATES` most likely tokens (by id order), not the
        whole vocabulary: its penalties only lower logits, of at most
        :data:`PENALTY_LAST_N` tokens, and it keeps at most :data:`TOP_K`, so what it keeps
        is among them; building a 262k-entry array for every token would cost more than
        the rest of sampling. The grammar check is the same as in :meth:`pick`.
        """
        llama = self._llama
        ids = _all_ids(self._n_vocab)
        if self._n_vocab > CANDIDATES:
            candidates = np.sort(np.argpartition(-logits, CANDIDATES)[:CANDIDATES])
        else:
            candidates = ids
        token = self._apply(self._chain, logits, candidates.astype(np.int32))
        llama.llama_sampler_accept(self._chain, token)
        if self._grammar is None:
            return token
        if not self._allowed(token, float(logits[token])):
            shortlist = np.argpartition(-logits, GRAMMAR_SHORTLIST)[:GRAMMAR_SHORTLIST]
            token = self._constrained(logits, np.sort(shortlist).astype(np.int32))
            if token < 0:
                token = self._constrained(logits, ids)
        llama.llama_sampler_accept(self._grammar, token)
        return token

    def _array(self, logits: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, Any]:
        data = np.zeros(len(ids), dtype=_TOKEN_DTYPE)
        data["id"] = ids
        data["logit"] = logits[ids]
        llama = self._llama
        array = llama.llama_token_data_array(
            data=data.ctypes.data_as(ctypes.POINTER(llama.llama_token_data)),
            size=len(ids),
            selected=-1,
            sorted=False,
        )
        return data, array

    def _apply(self, sampler: Any, logits: np.ndarray, ids: np.ndarray) -> int:
        _data, array = self._array(logits, ids)  # ``_data`` keeps what ``array`` points to
        self._llama.llama_sampler_apply(sampler, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            raise RuntimeError("llama.cpp sampler selected no token")
        return int(array.data[array.selected].id)

    def _allowed(self, token: int, logit: float) -> bool:
        data, array = self._array(np.array([logit], dtype=np.float32), np.array([0]))
        data["id"][0] = token  # one candidate: the grammar only checks this token
        self._llama.llama_sampler_apply(self._grammar, ctypes.byref(array))
        return bool(np.isfinite(data["logit"][0]))

    def _constrained(self, logits: np.ndarray, ids: np.ndarray) -> int:
        """Grammar-filter ``ids``, then sample among the survivors; -1 when none survive."""
        data, array = self._array(logits, ids)
        self._llama.llama_sampler_apply(self._grammar, ctypes.byref(array))
        keep = ids[np.isfinite(data["logit"][: array.size])]
        if len(keep) == 0:
            return -1
        return self._apply(self._chain, logits, keep)
