"""The embedded local model: prompt conversion, grammar, seeds, errors, and real end-to-end runs."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import json
import math
import os
import random
import re
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import llama_cpp
import numpy as np
import pandas as pd
import pytest
from conftest import gguf_header, gguf_string

from simworld.cli import main
from simworld.config.memory import DEFAULT_MEMORY_MAX_TOKENS
from simworld.llm.litellm_backend import (
    CallIdentity,
    LiteLLMModel,
    LLMRequest,
    cached_prompt_tokens,
    json_schema,
)
from simworld.llm.providers import local
from simworld.llm.providers.fake import _SAYINGS
from simworld.llm.providers.gguf import GGUFError, trained_context
from simworld.llm.providers.local import (
    BasePrompt,
    LocalModelError,
    check_model,
    parse_model,
    to_prompt,
)
from simworld.llm.providers.local_batch import (
    SEQ_CHUNK,
    SMALL_UBATCH,
    BatchedEngine,
    _Eval,
    _groups,
    load_engine,
)
from simworld.llm.providers.local_engine import (
    _JSON_STRING_CHAR,
    _LOOSE_STRING_CHAR,
    BUILD_FEATURES,
    FORK_SEQS,
    LINE_PIECE,
    PREFILL_CHUNK,
    BuildMismatchError,
    EngineConfig,
    EnginePool,
    Evaluating,
    Generation,
    LlamaEngine,
    Sampling,
    SeqStates,
    _gbnf,
    build_record,
    check_build,
    compiled_for,
    cpu_flags,
    cpu_model,
    grid_ends,
    missing_features,
    piece_ends,
    reusable,
    system_info,
    use_extra_bufts,
)
from simworld.llm.providers.local_options import (
    AnswerOptions,
    Fork,
    _answer_span,
    draw_option,
    in_turn,
    log_softmax,
)
from simworld.llm.providers.local_sampler import TEXT_REPEAT_PENALTY, TokenSampler
from simworld.llm.providers.local_slots import DECODE_SLOTS
from simworld.memory.reflection import insights_model

MODEL = "local/gemma3-270m"
SYSTEM = (
    "You are Ana Lima, a 40-year-old woman from Brazil. You work as a teacher.\n"
    "Where you stood at the start:\n- Remote work is good.: Agree"
)
LIKERT_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer", "enum": [1, 2, 3, 4, 5]}},
    "required": ["answer"],
    "additionalProperties": False,
}
CHOICE_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["A", "B", "C", "D"]}},
    "required": ["answer"],
    "additionalProperties": False,
}
# An answer among other properties: sampled token by token, then every option scored.
REASON_SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
        "why": {"type": "string"},
    },
    "required": ["answer", "why"],
    "additionalProperties": False,
}
PROBE = (
    "Topic: Companies should let employees work from home as much as they want.\n"
    "Options:\n  1 = Strongly disagree\n  2 = Disagree\n  3 = Neutral\n  4 = Agree\n"
    '  5 = Strongly agree\nReply with a JSON object {"answer": X} where X is one of 1, 2, 3, 4, 5.'
)


@pytest.fixture(scope="module")
def engine() -> LlamaEngine:
    return LlamaEngine.get(dataclasses.replace(parse_model(MODEL), batch=1, engines=1))


@pytest.fixture(scope="module")
def serial() -> LlamaEngine:
    """An engine without decode slots: its calls generate one token at a time, in turn."""
    return LlamaEngine(dataclasses.replace(parse_model(MODEL), batch=1, engines=1, slots=1))


def _generate(engine: LlamaEngine, user: str, **kwargs) -> str:
    prompt = to_prompt([{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}])
    sampling = Sampling(**{"max_tokens": 40, "temperature": 0.8, "seed": 1, **kwargs})
    return engine.generate(prompt.text, preamble=prompt.preamble, sampling=sampling).text


# -- prompt conversion ------------------------------------------------------------------------
def test_prompt_is_a_transcript_the_persona_continues():
    prompt = to_prompt(
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "What do you think?"},
            {"role": "assistant", "content": "I agree."},
            {"role": "user", "content": "Why?"},
        ]
    )
    assert prompt.speaker == "Ana Lima"
    assert prompt.text.startswith(prompt.preamble)
    assert SYSTEM in prompt.preamble and "What do you think?" not in prompt.preamble
    assert "Interviewer: What do you think?\nAna Lima: I agree.\nInterviewer: Why?" in prompt.text
    assert prompt.text.endswith("\nAna Lima:")


def test_prompt_without_system_message_uses_default_speaker():
    prompt = to_prompt([{"role": "user", "content": "Hello?"}])
    assert prompt.speaker == "Participant"
    assert prompt.text.endswith("Interviewer: Hello?\nParticipant:")


def test_preamble_is_shared_across_calls_of_one_persona():
    a = to_prompt([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "One"}])
    b = to_prompt([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Two"}])
    assert a.preamble == b.preamble and a.text != b.text


# -- model strings and errors -----------------------------------------------------------------
def test_missing_gguf_path_is_one_clear_line(tmp_path):
    missing = tmp_path / "nope" / "model.gguf"
    with pytest.raises(LocalModelError) as err:
        check_model(f"local/{missing}")
    message = str(err.value)
    assert str(missing) in message and "\n" not in message
    assert message.startswith("llm.model 'local/")


def test_non_gguf_file_and_bad_options_are_rejected(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model")
    with pytest.raises(LocalModelError, match="is not a GGUF file"):
        check_model(f"local/{junk}")
    with pytest.raises(LocalModelError, match="unknown option"):
        check_model("local/gemma3-270m?temperature=3")
    with pytest.raises(LocalModelError, match="n_ctx"):
        check_model("local/gemma3-270m?n_ctx=12")
    with pytest.raises(LocalModelError, match="name a model"):
        check_model("local/")
    with pytest.raises(LocalModelError, match="answers must be one of"):
        check_model("local/gemma3-270m?answers=guessed")
    assert parse_model(MODEL).drawn_answers
    assert not parse_model(MODEL + "?answers=sampled").drawn_answers


def test_the_trained_context_is_read_from_the_gguf_header(tmp_path):
    tokens = struct.pack("<IQ", 8, 3) + b"".join(gguf_string(t) for t in ("a", "bb", "ccc"))
    scores = struct.pack("<IQ", 6, 2) + struct.pack("<2f", 0.5, 1.5)
    pairs = [
        ("general.architecture", 8, gguf_string("llama")),
        ("tokenizer.ggml.tokens", 9, tokens),  # arrays before the length are skipped
        ("tokenizer.ggml.scores", 9, scores),
        ("other.context_length", 4, struct.pack("<I", 99)),  # another architecture's
        ("llama.context_length", 4, struct.pack("<I", 2048)),
    ]
    assert trained_context(gguf_header(tmp_path / "a.gguf", pairs)) == 2048
    assert trained_context(gguf_header(tmp_path / "b.gguf", pairs[:4])) is None
    cut = gguf_header(tmp_path / "c.gguf", pairs)
    cut.write_bytes(cut.read_bytes()[:-3])
    with pytest.raises(GGUFError, match="ends early"):
        trained_context(cut)
    huge = tmp_path / "huge.gguf"  # a key 2**62 bytes long: refused, not read
    huge.write_bytes(b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1 << 62) + b"x" * 64)
    with pytest.raises(GGUFError, match="ends early"):
        trained_context(huge)
    assert trained_context(parse_model(MODEL).path) == 32768


def test_n_ctx_above_the_trained_context_is_refused_before_a_run(tmp_path, capsys):
    check_model(f"{MODEL}?n_ctx=32768")
    with pytest.raises(LocalModelError, match="n_ctx 40000 is above the 32768 tokens"):
        check_model(f"{MODEL}?n_ctx=40000")
    scenario = str(Path(__file__).resolve().parents[1] / "scenarios/opinion_exchange.yaml")
    out = tmp_path / "run"
    code = main(["run", scenario, "--model", f"{MODEL}?n_ctx=40000", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "n_ctx 40000" in err and "\n" not in err and not out.exists()


def test_bad_extra_bufts_option_is_rejected():
    with pytest.raises(LocalModelError, match="extra_bufts must be one of"):
        check_model("local/gemma3-270m?extra_bufts=maybe")
    assert parse_model("local/gemma3-270m?extra_bufts=OFF").extra_bufts == "off"
    assert parse_model(MODEL).extra_bufts == "auto"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_int8 amx_tile\n\nflags : other\n")
    assert cpu_flags(info) == frozenset({"fpu", "avx2", "amx_int8", "amx_tile"})
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_the_cpu_model_is_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9B14\n\nmodel name : other\n")
    assert cpu_model(info) == "AMD EPYC 9B14"
    info.write_text("processor\t: 0\nflags\t: fpu\n")
    assert cpu_model(info) is None
    assert cpu_model(tmp_path / "missing") is None


def test_the_build_record_names_what_llama_cpp_was_compiled_for():
    info = "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 0 | AMX_INT8 = 0 | REPACK = 1 | LLAMAFILE = 1 |"
    assert compiled_for(info) == ["SSE3", "AVX2", "REPACK", "LLAMAFILE"]
    record = build_record(parse_model(MODEL))
    assert record["compiled_for"] == compiled_for(system_info())
    assert "AVX" in record["compiled_for"]  # every x86-64 build this project makes
    assert record["llama_cpp_python"] == importlib.metadata.version("llama-cpp-python")
    assert (record["cpu"], record["extra_bufts"]) == (cpu_model(), "off")
    assert build_record(parse_model(MODEL + "?extra_bufts=on"))["extra_bufts"] == "on"


def test_a_build_for_instructions_the_cpu_lacks_is_named():
    info = "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 0 | REPACK = 1 |"
    avx2 = frozenset({"pni", "avx2"})
    assert missing_features(info, avx2) == ["AVX512", "AVX512_VNNI"]
    assert missing_features(info, avx2 | {"avx512f", "avx512_vnni"}) == []
    assert missing_features(info, frozenset()) == []  # flags unknown: nothing claimed
    every = frozenset(BUILD_FEATURES.values())
    check_build(every, info)
    with pytest.raises(BuildMismatchError, match=r"lacks \(AVX2, AVX512\).*--no-cache-dir"):
        check_build(every - {"avx2", "avx512f"}, info)


def test_the_installed_build_fits_this_cpu():
    """What a run checks before loading the model: fails where llama-cpp-python came from a
    machine with other instructions (a wheel from a shared pip cache)."""
    check_build()
    assert not missing_features(system_info(), cpu_flags())


def test_the_build_is_read_whole_by_threads_checking_it_at_once():
    """In ``inline`` mode a run's first calls check the build from their own threads:
    llama.cpp rebuilds the text in one static buffer on each call, so unguarded threads read
    each other's half-written text (runs failed with a UnicodeDecodeError)."""
    expected = llama_cpp.llama_print_system_info().decode()
    start = threading.Barrier(8)

    def read() -> list[str]:
        start.wait()
        return [system_info() for _ in range(300)]

    with ThreadPoolExecutor(8) as pool:
        seen = {text for texts in pool.map(lambda _: read(), range(8)) for text in texts}
    assert seen == {expected}


def test_extra_buffer_types_are_off_unless_forced():
    assert use_extra_bufts("auto") is False  # a crash with AMX, no measurable gain elsewhere
    assert use_extra_bufts("off") is False
    assert use_extra_bufts("on") is True


@pytest.mark.slow
def test_first_decode_does_not_crash_on_this_host():
    """Loads the shipped model as simworld does on this CPU and decodes, in a child process.

    On a host where the chosen configuration crashes llama.cpp (extra buffer types on an AMX
    CPU), the child dies of a signal and this test fails instead of killing the test run.
    """
    code = (
        "from simworld.llm.providers.local import parse_model\n"
        "from simworld.llm.providers.local_engine import (\n"
        "    LlamaEngine, Sampling, use_extra_bufts)\n"
        f"engine = LlamaEngine.get(parse_model({MODEL!r}))\n"
        "assert engine.extra_bufts == use_extra_bufts('auto')\n"
        "out = engine.generate('Q: Say yes.\\nA:', preamble='', "
        "sampling=Sampling(max_tokens=4, temperature=0.0, seed=1))\n"
        "print('decoded', out.completion_tokens)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.startswith("decoded ")


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(LocalModelError, match=r"pip install 'simworld\[local\]'"):
        check_model(MODEL)


def test_llama_cpp_is_imported_only_when_a_local_model_is_used():
    code = (
        "import sys, simworld.llm.providers.registry as registry, "
        "simworld.llm.litellm_backend as backend; backend.LiteLLMModel(); "
        "registry.check_model('fake/default'); print('llama_cpp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_other_providers_pass_unchecked():
    check_model("fake/default")
    check_model("openai/gpt-4o-mini")


def test_batch_option_picks_the_engine_and_the_parallelism():
    assert parse_model(MODEL).batch == 1
    assert parse_model(MODEL + "?batch=8").batch == 8
    assert local.parallelism(MODEL + "?engines=1&slots=1") == 1
    assert local.parallelism(MODEL + "?engines=1") == DECODE_SLOTS
    assert local.parallelism(MODEL + "?batch=8") == 8
    assert local.parallelism(MODEL + "?threads=1&batch=3") == 3
    assert local.parallelism(MODEL + "?batch=nope") == 1
    assert LiteLLMModel().parallelism(MODEL + "?batch=1&threads=1&slots=2") == 2
    assert LiteLLMModel().parallelism("fake/default") is None
    for bad in ("0", "17", "two"):
        with pytest.raises(LocalModelError, match="batch"):
            check_model(f"{MODEL}?batch={bad}")


def test_engines_option_defaults_to_one_serial_engine_per_core_up_to_two():
    cores = os.cpu_count() or 1
    assert parse_model(MODEL).engines == local.parallelism(MODEL + "?slots=1") == min(2, cores)
    assert parse_model(MODEL + "?engines=auto&threads=1").engines == 1
    assert parse_model(MODEL + "?threads=4").engines == 2
    assert parse_model(MODEL + "?batch=8").engines == 1  # the batched engine is one
    assert parse_model(MODEL + "?engines=3").engines == 3
    assert local.parallelism(MODEL + "?engines=3&slots=2") == 6
    for bad in ("0", "9", "two", ""):
        with pytest.raises(LocalModelError, match="engines must be auto or between 1 and 8"):
            check_model(f"{MODEL}?engines={bad}")
    with pytest.raises(LocalModelError, match="engines above 1 needs batch=1"):
        check_model(f"{MODEL}?engines=2&batch=4")


def test_batch_one_is_the_serial_engine(engine):
    assert load_engine(dataclasses.replace(parse_model(MODEL), batch=1, engines=1)) is engine
    config = dataclasses.replace(parse_model(MODEL), batch=1, engines=2)
    assert isinstance(load_engine(config), EnginePool)


def test_relative_and_absolute_paths_resolve(monkeypatch):
    packaged = parse_model(MODEL).path
    assert parse_model(f"local/{packaged}").path == packaged
    monkeypatch.chdir(packaged.parent)
    assert parse_model(f"local/{packaged.name}?threads=1").path == packaged


def test_prompt_longer_than_the_context_is_a_non_retryable_error():
    import litellm

    LiteLLMModel()  # registers the providers
    with pytest.raises(litellm.ContextWindowExceededError, match="context window of 256"):
        litellm.completion(
            model=MODEL + "?n_ctx=256",
            messages=[{"role": "user", "content": "word " * 400}],
            max_tokens=8,
            num_retries=0,
        )


def test_cli_reports_a_bad_local_model_in_one_line(make_scenario, tmp_path, capsys):
    scenario = make_scenario({"population.size": 3, "network": {"generator": "complete"}})
    args = ["run", str(scenario), "--model", f"local/{tmp_path}/missing.gguf", "--quiet"]
    code = main([*args, "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "c.db")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "missing.gguf" in err and "Traceback" not in err


def test_packaged_model_is_assembled_atomically_and_verified(tmp_path):
    target_dir = tmp_path / "models"
    path = local.packaged_model_path.__wrapped__(target_dir)
    assert path.parent == target_dir and path.name == local.PACKAGED_FILE
    assert local._sha256_file(path) == local.GEMMA3_270M_SHA256
    assert [p.name for p in target_dir.iterdir()] == [local.PACKAGED_FILE]  # no temp file left
    path.write_bytes(b"GGUF corrupted")
    assert local.packaged_model_path.__wrapped__(target_dir) == path
    assert local._sha256_file(path) == local.GEMMA3_270M_SHA256


def test_model_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert local.model_cache_dir() == tmp_path / "simworld" / "models"


# -- decoding ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("schema", "allowed"), [(LIKERT_SCHEMA, {1, 2, 3, 4, 5})])
def test_grammar_makes_every_answer_parse(engine, schema, allowed):
    for seed in range(4):
        text = _generate(engine, PROBE, seed=seed, temperature=1.5, schema=schema)
        assert json.loads(text)["answer"] in allowed


def test_grammar_with_string_enum(engine):
    user = "Which first: A = transport, B = housing, C = policing, D = parks?"
    for seed in range(3):
        assert json.loads(_generate(engine, user, seed=seed, schema=CHOICE_SCHEMA))["answer"] in {
            "A",
            "B",
            "C",
            "D",
        }


def test_free_text_is_penalised_for_repeating_itself_and_a_grammar_answer_is_not(engine):
    """The sampler's one rule, for both engines: free text gets the repeat penalty, an answer
    under a grammar none. Greedy picks of the same logits: ``a`` (10) first; penalised, it
    drops to 10 / 1.1 below ``b`` (9.5)."""
    a, b = (engine._llm.tokenize(c, add_bos=False, special=False)[0] for c in (b"a", b"b"))
    logits = np.full(engine._n_vocab, -10.0, dtype=np.float32)
    logits[a], logits[b] = 10.0, 9.5
    assert 10.0 / TEXT_REPEAT_PENALTY < 9.5
    picks = {}
    for grammar in (None, 'root ::= ("a" | "b")+'):
        with TokenSampler(
            engine._vocab, engine._n_vocab, temperature=0.0, seed=1, grammar=grammar
        ) as sampler:
            picks[grammar is None] = [sampler.pick_logits(logits) for _ in range(2)]
    assert picks == {True: [a, b], False: [a, a]}


INSIGHTS_PROMPT = (
    "Question: Is the tap water safe?\nStatements you remember, each with a label in brackets:\n"
    "[m1] Sam: URGENT: the tap water was contaminated with chemicals and the council hides it.\n"
    "[m2] Official fact-check: the water tests of last week were all clean.\n"
    "[m3] Lea: I drank it all week and nobody I know got sick.\n"
    "What high-level insights (at most 2) can you infer? Reply with a JSON object "
    '{"insights": [{"text": "...", "evidence": ["m1", "m2"]}]}.'
)


def test_reflection_answers_parse_within_the_memory_budget(engine):
    """Bounded strings and citation lists, and no raw control characters in strings, make
    the grammar close every reflection answer inside ``memory.max_tokens``."""
    model = insights_model(["m1", "m2", "m3"], 2, with_importance=False)
    schema = json_schema(model)
    for seed in range(3):
        text = _generate(
            engine,
            INSIGHTS_PROMPT,
            seed=seed,
            temperature=1.5,
            schema=schema,
            max_tokens=DEFAULT_MEMORY_MAX_TOKENS,
        )
        model.model_validate(json.loads(text))


def test_schema_grammar_strings_exclude_control_characters():
    grammar = _gbnf(json.dumps({"type": "object", "properties": {"a": {"type": "string"}}}))
    assert _JSON_STRING_CHAR in grammar and _LOOSE_STRING_CHAR not in grammar


def test_free_text_is_one_stripped_line_capped_by_max_tokens(engine):
    for seed in range(4):
        text = _generate(engine, "Say where you stand on remote work.", seed=seed, max_tokens=12)
        assert "\n" not in text.strip()
    prompt = to_prompt([{"role": "user", "content": "Tell me a long story."}])
    gen = engine.generate(
        prompt.text, preamble=prompt.preamble, sampling=Sampling(5, 0.8, 3, None, None)
    )
    assert gen.completion_tokens <= 5 and gen.prompt_tokens > 10


def test_same_seed_same_output_whatever_ran_before(engine):
    first = _generate(engine, PROBE + "\nExplain briefly.", seed=42, max_tokens=24)
    _generate(engine, "Something else entirely, to disturb the KV cache.", seed=3)
    again = _generate(engine, PROBE + "\nExplain briefly.", seed=42, max_tokens=24)
    cold = LlamaEngine(EngineConfig(engine.config.path, prefix_reuse=False, batch=1))
    without_reuse = _generate(cold, PROBE + "\nExplain briefly.", seed=42, max_tokens=24)
    assert first == again == without_reuse
    other = [_generate(engine, PROBE + "\nExplain briefly.", seed=s, max_tokens=24) for s in (1, 2)]
    assert len({first, *other}) > 1


def test_prefix_states_are_kept_per_preamble(engine):
    messages = [{"role": "system", "content": SYSTEM * 3}, {"role": "user", "content": "?"}]
    prompt = to_prompt(messages)
    _generate(engine, "warm up")
    engine.generate(prompt.text, preamble=prompt.preamble, sampling=Sampling(2, 0.0, 0))
    preamble = tuple(engine.tokenize(prompt.preamble, bos=True))
    assert preamble in set(engine._preambles)  # saved whole: a piece ends where it does


@pytest.mark.slow
@pytest.mark.parametrize("heard", [10, 40], ids=["short", "longer-than-the-window"])
def test_a_later_call_starts_from_an_earlier_prompt_state(engine, heard):
    """An agent's next prompt (same card, topic and earlier memories, one more memory) reuses
    the saved state of its last prompt beyond the preamble although other calls ran between,
    replaces that state with its own, and answers as an engine without reuse does; also
    when the earlier prompt is longer than the model's sliding window (Gemma 3: 512
    tokens), whose states keep only the window's last positions."""
    lines = [f"- Speaker {i}: I think remote work saves me {i} hours a week." for i in range(50)]

    def prompt(memories: list[str]) -> BasePrompt:
        user = "What you have heard recently:\n" + "\n".join(memories) + "\n" + PROBE
        return to_prompt(
            [{"role": "system", "content": SYSTEM * 3}, {"role": "user", "content": user}]
        )

    first, later = prompt(lines[:heard]), prompt([*lines[:12], "- Ana: I disagree."])
    sampling = Sampling(8, 0.8, 5, LIKERT_SCHEMA, None)
    warm = LlamaEngine(engine.config)  # a new instance: nothing saved yet
    warm.generate(first.text, preamble=first.preamble, sampling=sampling)
    for other in ("Something else entirely.", "And again something else."):
        warm.generate(other, preamble="", sampling=Sampling(2, 0.0, 0))
    gen = warm.generate(later.text, preamble=later.preamble, sampling=sampling)
    preamble = len(warm.tokenize(later.preamble, bos=True))
    assert gen.cached_tokens > preamble + PREFILL_CHUNK
    assert all(len(key) <= warm.state_tokens for key in warm._prompts)
    assert tuple(warm.tokenize(later.text, bos=True)) in set(warm._prompts)
    assert len(list(warm._prompts)) == 3  # first's state gave way to later's
    cold = LlamaEngine(dataclasses.replace(engine.config, prefix_reuse=False))
    assert gen == cold.generate(later.text, preamble=later.preamble, sampling=sampling)


def _long_probe(lines: int) -> BasePrompt:
    """A probe whose prompt is many prefill chunks long."""
    heard = "\n".join(f"- Speaker {i}: remote work gave me {i} evenings." for i in range(lines))
    user = "What you have heard recently:\n" + heard + "\n" + PROBE
    return to_prompt([{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}])


_CANCELLED_SAMPLING = Sampling(40, 0.8, 3, REASON_SCHEMA, None)


def _cancel_at(
    engine: LlamaEngine, prompt: BasePrompt, when, monkeypatch
) -> tuple[Future[Generation], list[int]]:
    """Submit ``prompt`` to ``engine``, its future cancelled inside the model's eval when
    ``when(sizes)`` says so (``sizes``: the token counts evaluated so far, this one
    included); returns the future and those sizes, once the call has ended."""
    real, sizes, submitted, gate = engine._eval, [], [], threading.Event()

    def counted(tokens, *, logits) -> None:
        gate.wait()
        sizes.append(len(tokens))
        if when(sizes):
            submitted[0].cancel()
        real(tokens, logits=logits)

    monkeypatch.setattr(engine, "_eval", counted)
    submitted.append(
        engine.submit(prompt.text, preamble=prompt.preamble, sampling=_CANCELLED_SAMPLING)
    )
    gate.set()
    engine._worker.submit(lambda: None).result(timeout=300)  # the call has ended
    monkeypatch.setattr(engine, "_eval", real)
    return submitted[0], sizes


@pytest.mark.slow
def test_a_cancelled_call_stops_before_its_next_prefill_chunk(serial, monkeypatch):
    """A call cancelled while its prompt is evaluated stops before the next chunk (a
    timed-out call does not hold the engine); the next call reuses the chunk it evaluated
    and answers as an engine without reuse does."""
    fresh = LlamaEngine(serial.config)  # a new instance: nothing cached yet
    prompt = _long_probe(30)
    chunks = -(-len(fresh.tokenize(prompt.text, bos=True)) // PREFILL_CHUNK)
    assert chunks > 4
    future, sizes = _cancel_at(fresh, prompt, lambda sizes: len(sizes) == 1, monkeypatch)
    assert future.cancelled()
    assert sizes == [PREFILL_CHUNK]
    gen = fresh.generate(prompt.text, preamble=prompt.preamble, sampling=_CANCELLED_SAMPLING)
    assert gen.cached_tokens == PREFILL_CHUNK
    cold = LlamaEngine(dataclasses.replace(serial.config, prefix_reuse=False))
    assert gen == cold.generate(prompt.text, preamble=prompt.preamble, sampling=_CANCELLED_SAMPLING)


def test_a_cancelled_call_stops_before_its_next_token(serial, monkeypatch):
    """A call cancelled while it generates stops before its next token."""
    prompt = _long_probe(30)
    whole = serial.generate(prompt.text, preamble=prompt.preamble, sampling=_CANCELLED_SAMPLING)
    assert whole.completion_tokens > 3  # uncancelled, it generates several tokens

    def at_first_token(sizes: list[int]) -> bool:
        return sizes[-1] == 1 and sizes.count(1) == 1

    future, sizes = _cancel_at(serial, prompt, at_first_token, monkeypatch)
    assert future.cancelled()
    assert sizes.count(1) == 1
    after = serial.generate(prompt.text, preamble=prompt.preamble, sampling=_CANCELLED_SAMPLING)
    assert after == dataclasses.replace(whole, cached_tokens=after.cached_tokens)


def test_a_timed_out_provider_call_cancels_its_engine_call(monkeypatch):
    """``asyncio``'s timeout around the provider's call cancels the engine's future, which
    is what stops the work (in the child process too)."""
    pending: Future[Generation] = Future()

    class Waiting:
        def submit(self, prompt: str, *, preamble: str, sampling: Sampling) -> Future[Generation]:
            return pending

    monkeypatch.setattr(local, "engine_for", lambda model, config: Waiting())
    call = local.LocalLLM().acompletion(
        model="gemma3-270m", messages=[{"role": "user", "content": "Hi"}], optional_params={}
    )
    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(call, 0.5))
    assert pending.cancelled()


def test_reused_prompt_tokens_are_reported(engine):
    cold = LlamaEngine(engine.config)  # a new instance: nothing cached yet
    prompts = [
        to_prompt([{"role": "system", "content": SYSTEM * 3}, {"role": "user", "content": u}])
        for u in ("Hello?", "Where do you live?")
    ]
    first, second = (
        cold.generate(p.text, preamble=p.preamble, sampling=Sampling(2, 0.0, 0)) for p in prompts
    )
    assert first.cached_tokens == 0
    assert second.cached_tokens == len(cold.tokenize(prompts[1].preamble, bos=True))


def _is_newline(token: int) -> bool:
    return token == 0


@pytest.mark.parametrize("seed", range(20))
def test_a_prompt_is_cut_by_its_content_alone(seed):
    """Pieces end at the preamble's end, at the state length, at most PREFILL_CHUNK tokens
    apart, and after the preamble at a line end once LINE_PIECE tokens long; two prompts
    sharing a prefix are cut alike within it (what makes reuse exact)."""
    rng = random.Random(seed)
    tokens = [0 if rng.random() < 0.08 else rng.randint(1, 9) for _ in range(rng.randint(1, 700))]
    preamble, state = rng.randint(0, len(tokens)), rng.choice([512, 10_000])
    ends = piece_ends(tokens, preamble, state, _is_newline)
    assert ends[-1] == len(tokens) and ends == sorted(set(ends))
    assert all(b - a <= PREFILL_CHUNK for a, b in zip([0, *ends], ends, strict=False))
    assert {preamble, state} & set(range(1, len(tokens))) <= set(ends)
    for start, end in zip([0, *ends], ends[:-1], strict=False):
        at_line = tokens[end - 1] == 0 and end > preamble and end - start >= LINE_PIECE
        assert at_line or end - start == PREFILL_CHUNK or end in (preamble, state)
    for at, token in enumerate(tokens[:-1], start=1):
        if (
            token == 0
            and at > preamble
            and at - max([0, *(e for e in ends if e < at)]) >= LINE_PIECE
        ):
            assert at in ends
    cut = rng.randint(1, len(tokens))
    other = tokens[:cut] + [rng.randint(0, 9) for _ in range(rng.randint(0, 300))]
    other_ends = piece_ends(other, preamble, state, _is_newline)
    assert [e for e in ends if e <= cut] == [e for e in other_ends if e <= cut]


def test_reuse_stops_where_the_cuts_differ():
    assert reusable([64, 100, 164, 200], [64, 100, 130], 150) == 100
    assert reusable([64, 100], [64, 90, 100], 100) == 64
    assert reusable([64, 128, 150], [64, 128], 127) == 64
    assert reusable([20, 84], [20, 84], 10) == 0
    assert grid_ends(130, 64) == [64, 128, 130] and grid_ends(128, 64) == [64, 128]
    assert grid_ends(0, 64) == []


def test_a_prompt_reuses_the_line_it_shares_beyond_the_preamble(engine):
    """Two prompts with one card and one topic line, then different questions: the second
    takes the preamble and the topic line from the first (a piece ends at that line's end,
    not at a multiple of PREFILL_CHUNK) and answers as an engine without reuse does."""
    topic = PROBE.split("\n", 1)[0]
    prompts = [
        to_prompt([{"role": "system", "content": SYSTEM}, {"role": "user", "content": u}])
        for u in (f"{topic}\nWhy?", f"{topic}\nWhat would change your mind?")
    ]
    fresh = LlamaEngine(engine.config)  # a new instance: nothing cached yet
    sampling = Sampling(6, 0.8, 2)
    fresh.generate(prompts[0].text, preamble=prompts[0].preamble, sampling=sampling)
    second = fresh.generate(prompts[1].text, preamble=prompts[1].preamble, sampling=sampling)
    tokens = fresh.tokenize(prompts[1].text, bos=True)
    preamble = len(fresh.tokenize(prompts[1].preamble, bos=True))
    line_end = next(
        at for at in range(preamble + LINE_PIECE, len(tokens)) if fresh._ends_line(tokens[at - 1])
    )
    assert fresh._detok(tokens[preamble:line_end]).rstrip().endswith(topic)
    assert second.cached_tokens == line_end
    cold = LlamaEngine(dataclasses.replace(engine.config, prefix_reuse=False))
    assert second == cold.generate(prompts[1].text, preamble=prompts[1].preamble, sampling=sampling)


@pytest.mark.slow
def test_a_failed_evaluation_leaves_no_stale_reuse(engine, monkeypatch):
    """A call that fails after evaluating part of its prompt leaves the cache holding that
    part, and the next call reuses only what the cache holds: the same prompt as before the
    failure answers as an engine without reuse does (logits included)."""
    fresh = LlamaEngine(engine.config)  # a new instance: nothing cached yet
    first, other = _long_probe(30), _long_probe(31)  # the same lines, then other text
    sampling = Sampling(4, 0.8, 9, None, 3)
    fresh.generate(first.text, preamble=first.preamble, sampling=sampling)
    real = fresh._eval

    def fails_after_evaluating(tokens, *, logits):
        real(tokens, logits=logits)
        raise RuntimeError("llama_decode failed")

    monkeypatch.setattr(fresh, "_eval", fails_after_evaluating)
    with pytest.raises(RuntimeError):
        fresh.generate(other.text, preamble=other.preamble, sampling=sampling)
    monkeypatch.setattr(fresh, "_eval", real)
    again = fresh.generate(first.text, preamble=first.preamble, sampling=sampling)
    cold = LlamaEngine(dataclasses.replace(engine.config, prefix_reuse=False))
    expected = cold.generate(first.text, preamble=first.preamble, sampling=sampling)
    assert again == expected and again.logprobs


def test_only_a_prompts_last_piece_asks_for_logits(engine, monkeypatch):
    """The earlier pieces skip the output matrix (their logits are never read)."""
    asked: list[tuple[int, bool]] = []
    fresh = LlamaEngine(dataclasses.replace(engine.config, prefix_reuse=False))
    real = fresh._eval

    def spy(tokens, *, logits):
        asked.append((len(tokens), logits))
        real(tokens, logits=logits)

    monkeypatch.setattr(fresh, "_eval", spy)
    prompt = _long_probe(20)
    fresh.generate(prompt.text, preamble=prompt.preamble, sampling=Sampling(3, 0.0, 0))
    n = len(fresh.tokenize(prompt.text, bos=True))
    pieces, total = [], 0
    for size, logits in asked:
        if total >= n:
            break
        pieces.append(logits)
        total += size
    assert total == n and len(pieces) > 3
    assert pieces == [False] * (len(pieces) - 1) + [True]
    assert all(logits for _, logits in asked[len(pieces) :])  # generated tokens: sampled


def test_the_response_carries_the_reused_prompt_tokens():
    future: Future[Generation] = Future()
    future.set_result(Generation("Hi.", 100, 2, "stop", None, 64))
    response = local._response("gemma3-270m", future)
    assert cached_prompt_tokens(response.usage) == 64
    assert response.usage.prompt_tokens == 100
    assert Generation("Hi.", 100, 2, "stop") == Generation("Hi.", 100, 2, "stop", None, 64)


def test_logprobs_score_every_option(engine):
    async def call(seed: int) -> tuple[str, dict, int]:
        request = LLMRequest(
            model=MODEL,
            messages=({"role": "system", "content": SYSTEM}, {"role": "user", "content": PROBE}),
            identity=CallIdentity(seed, "ana", 0, "probe:remote_work"),
            temperature=0.7,
            max_tokens=30,
            schema=LIKERT_SCHEMA,
            schema_name="Answer",
            logprobs=True,
        )
        done = await LiteLLMModel().complete(request, attempt=0, timeout_s=60)
        return done.text, done.extra, done.cached_prompt_tokens

    text, extra, _ = asyncio.run(call(5))
    probs = extra["option_probs"]
    assert set(probs) == {"1", "2", "3", "4", "5"}
    assert sum(probs.values()) == pytest.approx(1.0)
    assert all(p > 0 for p in probs.values())
    answer_entry = extra["logprobs"][-1]
    assert {alt["token"][:1] for alt in answer_entry["top_logprobs"]} == set("12345")
    assert str(json.loads(text)["answer"]) == answer_entry["token"][0]
    again, extra_again, cached = asyncio.run(call(5))
    assert (again, extra_again) == (text, extra)
    assert cached > 0  # the same prompt again: its whole chunks were reused


def _option_scores(entry: dict) -> dict[int, float]:
    """An answer entry's alternatives, ``"3}"`` (or ``"3, ..."``) read as option 3."""
    return {
        int(re.match(r"\s*(\d+)", alt["token"]).group(1)): alt["logprob"]
        for alt in entry["top_logprobs"]
    }


@pytest.mark.slow
def test_an_answer_alone_is_drawn_from_its_reported_options(engine):
    """An ``answer`` enum alone is not sampled token by token: the answer is the option the
    call's seed draws from the scores its log-probabilities report."""
    prompt = to_prompt([{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROBE}])
    drawn_texts = {}
    for seed in range(6):
        sampling = Sampling(40, 0.8, seed, LIKERT_SCHEMA, 2)
        gen = engine.generate(prompt.text, preamble=prompt.preamble, sampling=sampling)
        scores = _option_scores(gen.logprobs[-1])
        assert sorted(scores) == [1, 2, 3, 4, 5]
        drawn = [1, 2, 3, 4, 5][draw_option([scores[v] for v in range(1, 6)], 0.8, seed)]
        assert gen.text == f'{{"answer": {drawn}}}'
        assert gen.completion_tokens == len(engine.tokenize(gen.text, bos=False))
        drawn_texts[seed] = gen.text
    assert len(set(drawn_texts.values())) > 1
    sampled = LlamaEngine.get(dataclasses.replace(engine.config, drawn_answers=False))
    texts = {
        seed: sampled.generate(
            prompt.text,
            preamble=prompt.preamble,
            sampling=Sampling(40, 0.8, seed, LIKERT_SCHEMA, 2),
        ).text
        for seed in range(6)
    }
    assert texts != drawn_texts  # ?answers=sampled samples them token by token


def _prefilled(engine: LlamaEngine, user: str) -> int:
    """Prefill ``user`` (after the test persona) into the serial engine; its token count."""
    prompt = to_prompt([{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}])
    tokens = engine.tokenize(prompt.text, bos=True)
    engine._prefill(tokens, 0, lambda: False)
    return len(tokens)


def _option_probs(options: AnswerOptions, rows: list) -> list[float]:
    """Each option's probability from a fork's rows (shared tokens' first, then branches)."""
    first = log_softmax(rows[len(options.shared) - 1])
    scores, at = [], len(options.shared)
    for own in options.own:
        follow = rows[at : at + len(own) - 1]
        at += len(own) - 1
        scores.append(
            first[own[0]] + sum(log_softmax(r)[t] for t, r in zip(own[1:], follow, strict=True))
        )
    total = sum(math.exp(x) for x in scores)
    return [math.exp(x) / total for x in scores]


def _fork_decoded(
    engine: LlamaEngine, monkeypatch: pytest.MonkeyPatch, enum: list
) -> tuple[AnswerOptions, Fork, list, list[int]]:
    """Prefill the test probe, then answer the fork of ``enum``'s options with the serial
    engine: the options, the fork, its rows, and the token count of every ``llama_decode``
    the fork made."""
    import llama_cpp

    options = AnswerOptions.of(
        True, {"properties": {"answer": {"enum": enum}}}, 40, engine._tokens, engine._detok
    )
    assert options is not None and options.shared
    fork = Fork(options.shared, [own[:-1] for own in options.own], _prefilled(engine, PROBE))
    decodes: list[int] = []
    real_decode = llama_cpp.llama_decode

    def counted(ctx, batch):
        decodes.append(batch.n_tokens)
        return real_decode(ctx, batch)

    with monkeypatch.context() as patched:
        patched.setattr(llama_cpp, "llama_decode", counted)
        rows = engine._decode_fork(fork)
    return options, fork, rows, decodes


def test_options_are_scored_together_as_each_alone(engine, monkeypatch):
    """The serial engine scores every option in one decode, each in its own sequence: the
    options' probabilities match evaluating them one after another (to llama.cpp's batch
    rounding), which also shows the rows come back in the fork's order; nothing of the
    branches' sequences stays in the cache."""
    import llama_cpp

    options, fork, together, decodes = _fork_decoded(engine, monkeypatch, [1, 2, 3, 4, 5, "none"])
    assert decodes == [len(options.shared) + sum(len(b) for b in fork.branches)]
    memory = llama_cpp.llama_get_memory(engine._llm.ctx)
    ends = [llama_cpp.llama_memory_seq_pos_max(memory, seq) for seq in range(FORK_SEQS)]
    assert ends == [fork.pos - 1 + len(options.shared)] + [-1] * (FORK_SEQS - 1)
    in_order = in_turn(fork, engine._decode_all)
    assert len(together) == len(in_order)
    probs, expected = (
        _option_probs(options, together),
        _option_probs(options, in_order),
    )
    assert sum(abs(a - b) for a, b in zip(probs, expected, strict=True)) / 2 < 0.1


def test_a_choice_of_26_letters_and_none_is_scored_in_one_decode(engine, monkeypatch):
    """The largest scale a scenario allows (letters A to Z), plus stance extraction's
    ``none``, fits the serial engine's sequences: one decode, every option scored."""
    enum = [chr(c) for c in range(ord("A"), ord("Z") + 1)] + ["none"]
    options, fork, rows, decodes = _fork_decoded(engine, monkeypatch, enum)
    assert decodes == [len(options.shared) + sum(len(b) for b in fork.branches)]
    probs = _option_probs(options, rows)
    assert len(probs) == 27 and sum(probs) == pytest.approx(1.0)


def test_a_drawn_answer_is_the_same_whatever_ran_before(engine):
    """Options scored together depend on the prompt alone: the same drawn answer, with the
    same log-probabilities, after other calls (a sampled answer, another probe) as before."""
    prompt = to_prompt([{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROBE}])
    sampling = Sampling(40, 0.8, 3, LIKERT_SCHEMA, 5)
    first = engine.generate(prompt.text, preamble=prompt.preamble, sampling=sampling)
    _generate(engine, "Something else entirely, to disturb the KV cache.", seed=3)
    _generate(engine, PROBE.replace("home", "the office"), schema=LIKERT_SCHEMA, top_logprobs=5)
    again = engine.generate(prompt.text, preamble=prompt.preamble, sampling=sampling)
    assert (again.text, again.logprobs) == (first.text, first.logprobs)


def test_an_answer_among_other_fields_is_sampled_then_scored(engine):
    prompt = to_prompt([{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROBE}])
    for seed in range(2):
        sampling = Sampling(40, 0.8, seed, REASON_SCHEMA, 2)
        gen = engine.generate(prompt.text, preamble=prompt.preamble, sampling=sampling)
        value = _answer_span(gen.text)
        assert value is not None and value[2] in {1, 2, 3, 4, 5}
        entry = gen.logprobs[-1]
        assert sorted(_option_scores(entry)) == [1, 2, 3, 4, 5]
        assert entry["logprob"] == _option_scores(entry)[value[2]]
        assert gen.text.endswith(entry["token"])


# -- a pool of serial engines ---------------------------------------------------------------
@pytest.fixture(scope="module")
def pool() -> EnginePool:
    return EnginePool(dataclasses.replace(parse_model(MODEL), batch=1, engines=2, threads=2))


def _persona_calls() -> list[tuple[BasePrompt, Sampling]]:
    """Calls of three personas: a drawn probe with log-probabilities, a free-text answer and
    an answer among other fields (sampled, then scored)."""
    calls = []
    for i, name in enumerate(("Ana Lima", "Bo Chen", "Cy Okafor")):
        system = SYSTEM.replace("Ana Lima", name)
        for user, sampling in (
            (PROBE, Sampling(8, 0.7, 11 + i, LIKERT_SCHEMA, 3)),
            ("What do you think about remote work?", Sampling(24, 0.7, 21 + i)),
            (PROBE, Sampling(30, 0.8, 31 + i, REASON_SCHEMA, 2)),
        ):
            prompt = to_prompt(
                [{"role": "system", "content": system}, {"role": "user", "content": user}]
            )
            calls.append((prompt, sampling))
    return calls


def test_a_pool_answers_as_one_engine_does(pool, engine, monkeypatch):
    """Calls sent at once run on both engines, one thread each while both work, and answer
    as an engine alone on every core, without reuse, does: texts and log-probabilities."""
    threads: list[int] = []
    for member in pool.engines:
        real = member._decode

        def spy(batch, real=real, member=member):
            threads.append(member._threads())
            real(batch)

        monkeypatch.setattr(member, "_decode", spy)
    calls = _persona_calls()
    futures = [pool.submit(p.text, preamble=p.preamble, sampling=s) for p, s in calls]
    answers = [future.result() for future in futures]
    cold = LlamaEngine(dataclasses.replace(engine.config, prefix_reuse=False, threads=2))
    expected = [cold.generate(p.text, preamble=p.preamble, sampling=s) for p, s in calls]
    assert answers == expected
    assert all(a.logprobs for a, (_, s) in zip(answers, calls, strict=True) if s.top_logprobs)
    assert all(member.preamble for member in pool.engines)  # both took calls
    assert 1 in threads  # two engines at work split the two cores
    threads.clear()
    prompt, sampling = calls[1]
    alone = pool.generate(prompt.text, preamble=prompt.preamble, sampling=sampling)
    assert alone == expected[1] and set(threads) == {2}  # a call alone gets both


def test_the_engines_of_a_pool_share_saved_states(pool):
    """A persona's preamble evaluated by one engine is restored by the other."""
    system = SYSTEM.replace("Ana Lima", "Dee Novak") + "\nShe grows tomatoes."
    first, second = (
        to_prompt([{"role": "system", "content": system}, {"role": "user", "content": user}])
        for user in ("What do you think?", PROBE)
    )
    sampling = Sampling(4, 0.0, 0)
    pool.engines[0].generate(first.text, preamble=first.preamble, sampling=sampling)
    gen = pool.engines[1].generate(second.text, preamble=second.preamble, sampling=sampling)
    assert gen.cached_tokens >= len(pool.tokenize(second.preamble, bos=True)) - 1 > 0


def test_a_preamble_another_engine_is_evaluating_is_waited_for(pool, monkeypatch):
    """Two calls of one new persona sent at once: the second engine waits (lending its
    core) until the first has saved the preamble, then restores it instead of evaluating
    it too."""
    system = SYSTEM.replace("Ana Lima", "Eve Moreau") + "\nShe keeps bees."
    first, second = (
        to_prompt([{"role": "system", "content": system}, {"role": "user", "content": user}])
        for user in ("What do you think?", PROBE)
    )
    preamble = len(pool.tokenize(first.preamble, bos=True)) - 1
    slow = pool.engines[0]
    real = slow._eval

    def slow_eval(tokens, *, logits):
        time.sleep(0.3)
        real(tokens, logits=logits)

    monkeypatch.setattr(slow, "_eval", slow_eval)
    lent: list[int] = []
    lend = pool._lend
    monkeypatch.setattr(pool, "_lend", lambda change: (lent.append(change), lend(change)))
    monkeypatch.setattr(slow._evaluating, "_lend", pool._lend)
    sampling = Sampling(4, 0.0, 0)
    one = pool.submit(first.text, preamble=first.preamble, sampling=sampling)
    time.sleep(0.1)  # the slow engine has taken the first call
    two = pool.submit(second.text, preamble=second.preamble, sampling=sampling)
    assert one.result().cached_tokens == 0
    assert two.result().cached_tokens >= preamble > 0 and lent == [-1, 1]
    alone = LlamaEngine(dataclasses.replace(pool.config, engines=1, prefix_reuse=False))
    assert two.result() == alone.generate(second.text, preamble=second.preamble, sampling=sampling)


def test_a_call_waiting_for_a_preamble_whose_evaluation_failed_evaluates_it(engine):
    """The engine evaluating a preamble fails and releases it unsaved: the call waiting for
    it claims it, evaluates it and answers as an engine without reuse does."""
    lent: list[int] = []
    evaluating = Evaluating(lent.append)
    waiter = LlamaEngine(engine.config, (SeqStates(), SeqStates()), evaluating=evaluating)
    held, claims = threading.Event(), []
    claim = evaluating.claim

    def claimed_elsewhere(key):
        claims.append(key)
        return held if len(claims) == 1 else claim(key)

    evaluating.claim = claimed_elsewhere  # type: ignore[method-assign]
    prompt, sampling = _long_probe(3), Sampling(4, 0.0, 0)
    future = waiter.submit(prompt.text, preamble=prompt.preamble, sampling=sampling)
    time.sleep(0.3)
    assert not future.done() and lent == [-1]
    held.set()  # released unsaved
    gen = future.result()
    assert gen.cached_tokens == 0 and lent == [-1, 1] and len(claims) == 2
    assert not evaluating._events  # the waiter released what it claimed
    cold = LlamaEngine(dataclasses.replace(engine.config, prefix_reuse=False))
    assert gen == cold.generate(prompt.text, preamble=prompt.preamble, sampling=sampling)


def test_a_preamble_claimed_again_after_its_save_stays_claimed(engine, monkeypatch):
    """Once a call has saved and released the preamble it claimed, its end does not release
    it again: a claim another call made meanwhile stands until that call releases it."""
    evaluating = Evaluating(lambda _change: None)
    prompts = SeqStates()
    caller = LlamaEngine(engine.config, (SeqStates(), prompts), evaluating=evaluating)
    prompt = _long_probe(12)
    preamble = tuple(caller.tokenize(prompt.preamble, bos=True))
    others: list[object] = []
    save = prompts.save

    def claimed_meanwhile(*args, **kwargs):  # saved after the preamble, before the call ends
        if not others:
            others.append(evaluating.claim(preamble))
        save(*args, **kwargs)

    monkeypatch.setattr(prompts, "save", claimed_meanwhile)
    caller.generate(prompt.text, preamble=prompt.preamble, sampling=Sampling(4, 0.0, 0))
    assert others == [None]  # released by the caller at its save, then claimed anew
    assert preamble in evaluating._events
    evaluating.release(preamble)


def test_a_state_let_go_meanwhile_gives_way_to_the_next_best(engine, monkeypatch):
    """When another engine sharing the store lets a state go between finding and restoring
    it, the call starts from the next best saved state (here the persona's preamble), and
    from none when every state goes; it answers the same either way."""
    stores = (SeqStates(), SeqStates())
    first, other = LlamaEngine(engine.config, stores), LlamaEngine(engine.config, stores)
    prompt = _long_probe(12)
    sampling = Sampling(6, 0.8, 5, None, 2)
    expected = first.generate(prompt.text, preamble=prompt.preamble, sampling=sampling)
    preamble = len(first.tokenize(prompt.preamble, bos=True))
    taken: list[tuple[int, ...]] = []
    for store in stores:
        found = store.closest

        def closest_then_gone(tokens, ends, limit, store=store, found=found):
            key, keep = found(tokens, ends, limit)
            if keep > preamble or len(taken) > 1:  # the prompt's state, or every state
                store.discard(key)
                taken.append(key)
            return key, keep

        monkeypatch.setattr(store, "closest", closest_then_gone)
    gen = other.generate(prompt.text, preamble=prompt.preamble, sampling=sampling)
    assert gen == expected and gen.cached_tokens == preamble
    fresh = LlamaEngine(engine.config, stores)
    gen = fresh.generate(prompt.text, preamble=prompt.preamble, sampling=sampling)
    assert gen == expected and gen.cached_tokens == 0 and len(taken) >= 3


# -- the batched engine -----------------------------------------------------------------------
# Long enough (over 512 tokens) that a lone sequence's one-token decode would take
# llama.cpp's split-KV attention path, which the engine must avoid.
LONG_SYSTEM = (
    SYSTEM
    + "\n"
    + "\n".join(
        f"- Memory {i}: a neighbour said that remote work {'helps' if i % 2 else 'hurts'} "
        f"families in town number {i}."
        for i in range(24)
    )
)
OTHER_USERS = [
    "Say where you stand on nuclear power.",
    "Tell me about your job in one sentence.",
    PROBE,
    "Which first: A = transport, B = housing, C = policing, D = parks?",
    "What did your neighbours say this week?",
    "Describe your town.",
    "Is remote work good for families?",
]


@pytest.fixture(scope="module")
def batched() -> BatchedEngine:
    # One thread: on a shared 2-core host two spinning llama.cpp threads crawl.
    config = dataclasses.replace(parse_model(MODEL), n_ctx=1024, batch=8, threads=1)
    engine = BatchedEngine(config)
    yield engine
    engine.close()


def _target(schema: dict = LIKERT_SCHEMA) -> tuple[str, str, Sampling]:
    prompt = to_prompt(
        [{"role": "system", "content": LONG_SYSTEM}, {"role": "user", "content": PROBE}]
    )
    return prompt.text, prompt.preamble, Sampling(24, 0.9, 11, schema, 3)


def _others(rng: random.Random, n: int) -> list[tuple[str, str, Sampling]]:
    out = []
    for i in range(n):
        user = rng.choice(OTHER_USERS)
        system = rng.choice([SYSTEM, LONG_SYSTEM[:400], "You are Bob, a farmer from Kenya."])
        prompt = to_prompt(
            [{"role": "system", "content": system}, {"role": "user", "content": user}]
        )
        schema = rng.choice([None, LIKERT_SCHEMA, CHOICE_SCHEMA, REASON_SCHEMA])
        top = rng.choice([None, 2]) if schema is not None else None
        sampling = Sampling(rng.randint(4, 16), 0.8, rng.randint(0, 99) + i, schema, top)
        out.append((prompt.text, prompt.preamble, sampling))
    return out


def _bytes(gen: Generation) -> bytes:
    """The answer's bytes (without the count of reused prompt tokens, which depends on
    what ran before)."""
    answer = dataclasses.asdict(gen)
    del answer["cached_tokens"]
    return json.dumps(answer, sort_keys=True).encode()


@pytest.mark.slow
def test_a_calls_answer_does_not_depend_on_its_batch(batched):
    """Tokens and log-probability bytes of one call (with option scoring) are the same
    prefilled alone, next to three other calls in any arrival order, and copying its
    prefix from a twin in flight."""
    text, preamble, sampling = _target()
    alone = batched.generate(text, preamble=preamble, sampling=sampling)
    assert alone.logprobs and len(alone.logprobs[-1]["top_logprobs"]) == 5
    ref = _bytes(alone)
    calls = [*_others(random.Random(5), 3), (text, preamble, sampling)]
    for order in (calls, calls[::-1]):
        futures = [batched.submit(t, preamble=p, sampling=s) for t, p, s in order]
        assert _bytes(futures[order.index(calls[-1])].result()) == ref
        assert len({_bytes(f.result()) for f in futures}) == len(futures)
    copied = batched.stats["copied_tokens"]
    twins = [batched.submit(text, preamble=preamble, sampling=sampling) for _ in range(2)]
    assert [_bytes(f.result()) for f in twins] == [ref, ref]
    assert batched.stats["copied_tokens"] > copied
    other_seeds = [dataclasses.replace(sampling, seed=seed) for seed in range(12, 16)]
    assert {_bytes(batched.generate(text, preamble=preamble, sampling=s)) for s in other_seeds} - {
        ref
    }


@pytest.mark.slow  # about 30 s: eight calls, then each alone
def test_eight_calls_in_step_answer_as_each_does_alone():
    """Eight calls on consecutive sequences, prefilling and generating in the same steps
    (eight one-token pieces per step), answer as each does alone: llama.cpp's CPU
    products give other numbers once a ubatch holds 8 tokens or more. The answers are
    sampled token by token (an answer among other fields), then their options scored."""
    text, preamble, sampling = _target(REASON_SCHEMA)
    config = dataclasses.replace(parse_model(MODEL), n_ctx=1024, batch=8, threads=1)
    engine = BatchedEngine(config)  # fresh: the calls get sequences 0 to 7
    try:
        samplings = [dataclasses.replace(sampling, seed=seed) for seed in range(8)]
        gens = [engine.generate(text, preamble=preamble, sampling=s) for s in samplings]
        futures = [engine.submit(text, preamble=preamble, sampling=s) for s in samplings]
        together = [_bytes(f.result()) for f in futures]
    finally:
        engine.close()
    alone = [_bytes(gen) for gen in gens]
    assert len(set(alone)) > 1
    assert together == alone
    # a cold engine evaluates the whole first prompt; the others reuse its whole pieces
    assert gens[0].cached_tokens == 0
    for gen in gens[1:]:
        assert 0 < gen.cached_tokens < gen.prompt_tokens and gen.cached_tokens % SEQ_CHUNK == 0


@pytest.mark.slow
def test_a_calls_answer_does_not_depend_on_its_batch_at_all(batched):
    """The same call alone, reusing its own cached prefix, next to 1, 3 and 7 random other
    calls in shuffled arrival orders, and joining while the others decode."""
    text, preamble, sampling = _target()
    ref = _bytes(batched.generate(text, preamble=preamble, sampling=sampling))
    assert _bytes(batched.generate(text, preamble=preamble, sampling=sampling)) == ref
    rng = random.Random(3)
    for n_others in (1, 3, 7):
        calls = [*_others(rng, n_others), (text, preamble, sampling)]
        rng.shuffle(calls)
        futures = [batched.submit(t, preamble=p, sampling=s) for t, p, s in calls]
        index = calls.index((text, preamble, sampling))
        assert _bytes(futures[index].result()) == ref, f"with {n_others} others"
        for future in futures:
            future.result()
    futures = [batched.submit(t, preamble=p, sampling=s) for t, p, s in _others(rng, 5)]
    decodes = batched.stats["decodes"]
    while batched.stats["decodes"] < decodes + 3 and not futures[0].done():
        time.sleep(0.01)
    late = batched.submit(text, preamble=preamble, sampling=sampling)
    assert _bytes(late.result()) == ref
    for future in futures:
        future.result()


@pytest.mark.slow
def test_prefix_reuse_does_not_change_answers(batched):
    """Prompts sharing a prefix that ends inside a piece, in any order, with reuse on,
    answer as an engine without prefix reuse does."""
    prompts = [f"Q: Name a colour, {name}.\nA: I think the best colour is" for name in "ABC"]
    prompts += [SYSTEM * 2 + f"\nQ: Name a colour, {name}.\nA:" for name in "ABC"]
    samplings = [Sampling(6, 0.9, seed) for seed in range(len(prompts))]
    cold = BatchedEngine(dataclasses.replace(batched.config, prefix_reuse=False, batch=2))
    try:
        ref = [
            cold.generate(p, preamble="", sampling=s)
            for p, s in zip(prompts, samplings, strict=True)
        ]
    finally:
        cold.close()
    pairs = list(zip(prompts, samplings, strict=True))
    assert [batched.generate(p, preamble="", sampling=s) for p, s in pairs] == ref
    futures = [batched.submit(p, preamble="", sampling=s) for p, s in reversed(pairs)]
    assert [f.result() for f in reversed(futures)] == ref


@pytest.mark.slow
def test_batched_engine_drops_a_cancelled_call_at_its_next_step(batched, monkeypatch):
    """A call cancelled during its first evaluation is not evaluated again, frees its
    sequence, and the engine's next call answers as an engine without reuse does."""
    real, evaluated, submitted, gate = batched._evaluate, [], [], threading.Event()

    def counted(pending: dict) -> dict:
        gate.wait()
        if pending:
            evaluated.append(sorted(pending))
            submitted[0].cancel()
        return real(pending)

    monkeypatch.setattr(batched, "_evaluate", counted)
    prompt = _long_probe(30)
    submitted.append(
        batched.submit(prompt.text, preamble=prompt.preamble, sampling=_CANCELLED_SAMPLING)
    )
    gate.set()
    deadline = time.monotonic() + 300
    while (not evaluated or any(batched._busy)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert submitted[0].cancelled()
    assert len(evaluated) == 1 and not any(batched._busy)
    monkeypatch.setattr(batched, "_evaluate", real)
    text, preamble, sampling = _target()
    cold = BatchedEngine(dataclasses.replace(batched.config, prefix_reuse=False, batch=2))
    try:
        ref = cold.generate(text, preamble=preamble, sampling=sampling)
    finally:
        cold.close()
    assert batched.generate(text, preamble=preamble, sampling=sampling) == ref


def test_batched_engine_keeps_grammar_and_free_text_rules(batched):
    prompts = [
        to_prompt([{"role": "system", "content": SYSTEM}, {"role": "user", "content": u}])
        for u in (PROBE, "Say where you stand on remote work.")
    ]
    futures = [
        batched.submit(p.text, preamble=p.preamble, sampling=Sampling(40, 1.5, seed, schema))
        for seed in range(3)
        for p, schema in zip(prompts, (LIKERT_SCHEMA, None), strict=True)
    ]
    answers = [f.result() for f in futures]
    for gen in answers[0::2]:
        assert json.loads(gen.text)["answer"] in {1, 2, 3, 4, 5}
    for gen in answers[1::2]:
        assert "\n" not in gen.text.strip() and 0 < gen.completion_tokens <= 40
    assert batched.stats["pads"] > 0
    too_long = batched.submit("word " * 1100, preamble="", sampling=Sampling(8, 0.0, 1))
    with pytest.raises(ValueError, match="context window of 1024"):
        too_long.result()


def test_pieces_never_exceed_the_flash_attention_tile():
    assert SEQ_CHUNK < 64  # GGML_FA_TILE_Q: 64 queries of one sequence take the tiled path


@pytest.mark.parametrize("length", [1, 2, 3, 5, SMALL_UBATCH - 1, SMALL_UBATCH, SEQ_CHUNK])
def test_short_pieces_share_decodes_of_fewer_than_eight_tokens(length):
    seqs = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11]
    pieces = [_Eval(seq, 40, [7] * length, [True] * length) for seq in seqs]
    groups = _groups(pieces, length)
    assert [p.seq for group in groups for p in group] == seqs
    if length >= SMALL_UBATCH:
        assert groups == [pieces]
        return
    for group in groups:
        assert len(group) * length < SMALL_UBATCH
        assert [p.seq for p in group] == list(range(group[0].seq, group[0].seq + len(group)))
    if length == 1:  # the run 0..7 in two decodes of four, not seven and a padded one
        assert [len(group) for group in groups] == [4, 4, 3]


# -- end to end on the real model -------------------------------------------------------------
@pytest.mark.slow
def test_real_model_run_parses_speaks_and_reproduces(make_scenario, tmp_path):
    from simworld.runs.run import run_scenario

    likert = ["Strongly disagree", "Disagree", "Neutral", "Agree", "Strongly agree"]
    topic = {
        "id": "remote_work",
        "statement": "Companies should let employees work from home as much as they want.",
        "scale": {"type": "likert", "labels": likert},
    }
    scenario = make_scenario(
        {
            "population.size": 4,
            "network": {"generator": "complete"},
            "topics": [topic],
            "protocol.steps": 1,
        }
    )
    overrides = {
        "llm.model": MODEL,
        "llm.cache": "off",
        "llm.max_tokens": 48,
        "llm.concurrency": 4,
    }
    runs = []
    for name in ("a", "b"):
        result = run_scenario(scenario, overrides=overrides, out_dir=tmp_path / name)
        assert result.status == "completed"
        runs.append(tmp_path / name)
    opinions = pd.read_parquet(runs[0] / "opinions.parquet")
    assert len(opinions) == 4 * 2 and opinions.ok.all()
    assert opinions.value.between(1, 5).all()
    events = [json.loads(line) for line in (runs[0] / "transcript.jsonl").read_text().splitlines()]
    texts = [e["text"] for e in events if e["type"] == "message"]
    canned = {s.split("{")[0] for s in _SAYINGS}
    assert len(texts) == 4
    assert all(t.strip() and not any(t.startswith(c) for c in canned) for t in texts)
    calls = [e for e in events if e["type"] == "llm_call"]
    assert all(c["prompt_tokens"] > 0 and c["completion_tokens"] > 0 for c in calls)
    for name in ("transcript.jsonl", "opinions.parquet"):
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes(), name
