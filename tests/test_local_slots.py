"""Decode slots of the serial engine (simworld.llm.providers.local_slots), on the packaged
model: sampled calls that generate together answer as each does alone."""

from __future__ import annotations

import dataclasses
import struct
import threading

import numpy as np
import pytest

from simworld.llm.providers.local import LocalModelError, check_model, parse_model, to_prompt
from simworld.llm.providers.local_engine import LlamaEngine, Sampling
from simworld.llm.providers.local_slots import (
    DECODE_SLOTS,
    MAX_SLOTS,
    DecodeSlots,
    StateLayoutError,
    as_stream,
)

MODEL = "local/gemma3-270m"
SYSTEM = "You are Ana Lima, a 34-year-old nurse from Brazil. Stay in character."
REASON_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer", "enum": [1, 2, 3]}, "why": {"type": "string"}},
    "required": ["answer", "why"],
    "additionalProperties": False,
}


def _calls() -> list[tuple[str, str, Sampling]]:
    """Five sampled calls: free text and JSON, two personas, different lengths."""
    calls = []
    for i, (name, user) in enumerate(
        [
            ("Ana Lima", "What do you think about remote work?"),
            ("Bo Chen", "Tell the people you know where you stand on nuclear power."),
            ("Ana Lima", "Say why you agree or not, in one line."),
            ("Cy Okafor", "What did you hear this week?"),
            ("Bo Chen", "Pick 1, 2 or 3 and say why."),
        ]
    ):
        system = SYSTEM.replace("Ana Lima", name)
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        prompt = to_prompt(messages)
        schema = REASON_SCHEMA if i == 4 else None
        calls.append((prompt.text, prompt.preamble, Sampling(30, 0.8, 7 + i, schema)))
    return calls


@pytest.fixture(scope="module")
def slotted() -> LlamaEngine:
    return LlamaEngine(dataclasses.replace(parse_model(MODEL), batch=1, engines=1, slots=4))


def test_calls_generating_together_answer_as_each_alone(slotted):
    """Five calls sent at once (four slots: they join and leave as others end, the last
    busy slot moving into a freed one) answer as each does alone, on one thread or two, and
    as an engine without slots does (one token per decode in its own context)."""
    calls = _calls()
    futures = [slotted.submit(t, preamble=p, sampling=s) for t, p, s in calls]
    together = [future.result(timeout=300) for future in futures]
    alone = [slotted.generate(t, preamble=p, sampling=s) for t, p, s in calls]
    one_thread = LlamaEngine(dataclasses.replace(slotted.config, threads=1, prefix_reuse=False))
    single = [one_thread.generate(t, preamble=p, sampling=s) for t, p, s in calls]
    no_slots = LlamaEngine(dataclasses.replace(slotted.config, slots=1))
    in_turn = [no_slots.generate(t, preamble=p, sampling=s) for t, p, s in calls]
    assert together == alone == single == in_turn
    assert all(g.completion_tokens > 1 for g in together)  # they did generate in slots
    assert len({g.text for g in together}) == len(calls)


def test_a_call_after_calls_left_their_slots_answers_as_before():
    """Calls that end in one step (the last busy slot's sequence moving into a freed slot)
    leave nothing behind for the next call in a slot (a stream copy left pending by
    ``llama_memory_seq_cp`` overwrote it at the next decode)."""
    engine = LlamaEngine(dataclasses.replace(parse_model(MODEL), batch=1, engines=1, slots=4))
    prompts = [f"Q: Name a colour, {name}.\nA:" for name in ("Ana", "Bob", "Cy")]
    samplings = [Sampling(8, 0.9, seed) for seed in (1, 2, 3)]
    calls = list(zip(prompts, samplings, strict=True))
    futures = [engine.submit(p, preamble="", sampling=s) for p, s in calls]
    together = [future.result(timeout=300) for future in futures]
    after = [engine.generate(p, preamble="", sampling=s) for p, s in calls]
    assert after == together


def test_slots_hold_calls_together(slotted, monkeypatch):
    """The calls really share decodes: some step holds more than one slot."""
    sizes: list[int] = []
    real = DecodeSlots.step

    def counted(self, threads):
        sizes.append(len(self.calls))
        real(self, threads)

    monkeypatch.setattr(DecodeSlots, "step", counted)
    calls = _calls()
    futures = [slotted.submit(t, preamble=p, sampling=s) for t, p, s in calls]
    for future in futures:
        future.result(timeout=300)
    assert max(sizes) > 1 and max(sizes) <= DECODE_SLOTS


def test_a_cancelled_call_leaves_its_slot_and_the_others_go_on(slotted):
    calls = _calls()
    gate = threading.Event()
    stopped: list[bool] = []

    def stop() -> bool:
        stopped.append(True)
        return gate.is_set()

    text, preamble, sampling = calls[0]
    expected = [slotted.generate(t, preamble=p, sampling=s) for t, p, s in calls[1:3]]
    futures = [slotted.submit(t, preamble=p, sampling=s) for t, p, s in calls[1:3]]
    gate.set()  # cancelled at its first step in a slot
    from simworld.llm.providers.local_engine import CallCancelledError

    with pytest.raises(CallCancelledError):
        slotted.generate(text, preamble=preamble, sampling=sampling, stop=stop)
    assert [f.result(timeout=300) for f in futures] == expected
    assert stopped


def test_a_moved_prompt_state_is_what_prefilling_it_in_the_slot_gives(slotted):
    """The state rewritten by as_stream gives bit-identical logits to the prompt prefilled
    in the slot itself."""
    import llama_cpp

    text, _, _ = _calls()[0]
    tokens = slotted.tokenize(text, bos=True)
    with slotted._prefill_turn():
        slotted._prefill(tokens, 0, lambda: False)
        state = slotted._seq_state()
        ends = list(slotted._canonical_ends)
    slots = DecodeSlots(slotted._llm._model, 1024, 2, 1)
    mem = llama_cpp.llama_get_memory(slots._ctx)
    n_vocab = slotted._n_vocab

    def next_logits(seq: int) -> np.ndarray:
        batch = llama_cpp.llama_batch_init(2, 0, 1)
        for j in range(2):  # the token after the prompt, twice (as a lone slot's pad)
            batch.token[j], batch.pos[j], batch.n_seq_id[j] = tokens[-1], len(tokens) + j, 1
            batch.seq_id[j][0], batch.logits[j] = seq, True
        batch.n_tokens = 2
        assert llama_cpp.llama_decode(slots._ctx, batch) == 0
        llama_cpp.llama_batch_free(batch)
        ptr = llama_cpp.llama_get_logits_ith(slots._ctx, 0)
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).copy()

    data = as_stream(state, 1, 2)
    buf = bytearray(data)
    arr = (llama_cpp.ctypes.c_uint8 * len(buf)).from_buffer(buf)
    assert llama_cpp.llama_state_seq_set_data(slots._ctx, arr, len(buf), 1) == len(buf)
    moved = next_logits(1)
    llama_cpp.llama_memory_seq_rm(mem, 1, -1, -1)
    batch = llama_cpp.llama_batch_init(64, 0, 1)
    start = 0
    for end in ends:  # the engine's pieces: the numbers depend on where a prompt is cut
        for j, token in enumerate(tokens[start:end]):
            batch.token[j], batch.pos[j], batch.n_seq_id[j] = token, start + j, 1
            batch.seq_id[j][0], batch.logits[j] = 1, False
        batch.n_tokens = end - start
        assert llama_cpp.llama_decode(slots._ctx, batch) == 0
        start = end
    llama_cpp.llama_batch_free(batch)
    assert np.array_equal(moved, next_logits(1))


def test_a_state_not_laid_out_as_expected_is_refused():
    header = struct.pack("<II", 0, 0)
    cell = struct.pack("<I", 1) + struct.pack("<iII", 0, 1, 0)  # one cell: position 0, seq 0
    one_cell = header + struct.pack("<I", 1) + cell
    with pytest.raises(StateLayoutError, match="inside a field"):
        as_stream(one_cell, 0, 2)  # the cell's data is missing
    with pytest.raises(StateLayoutError, match="transposed"):
        as_stream(one_cell + struct.pack("<II", 1, 1), 0, 2)
    rows = struct.pack("<II", 0, 1) + 2 * (struct.pack("<iQ", 1, 2) + b"kv")  # K and V
    body = cell + rows
    with pytest.raises(StateLayoutError, match="two streams"):
        as_stream(header + struct.pack("<I", 2) + body + body, 0, 2)
    # one stream of three holding the cells: they move to the stream asked for
    empty = struct.pack("<I", 0)
    moved = as_stream(header + struct.pack("<I", 3) + empty + body + empty, 0, 2)
    assert moved == header + struct.pack("<I", 2) + body + empty


def test_slots_option_is_checked():
    assert parse_model(MODEL).slots == DECODE_SLOTS
    assert parse_model(MODEL + "?slots=1").slots == 1
    assert parse_model(MODEL + "?batch=8").slots == 1
    for bad in ("0", str(MAX_SLOTS + 1), "two"):
        with pytest.raises(LocalModelError, match="slots"):
            check_model(f"{MODEL}?slots={bad}")
    with pytest.raises(LocalModelError, match="slots above 1 needs batch=1"):
        check_model(f"{MODEL}?slots=2&batch=4")


@pytest.mark.slow  # about 30 s: a 1,200-token prompt on four engines
@pytest.mark.parametrize("slots", [1, 4])
def test_a_long_prompts_answer_does_not_depend_on_the_thread_count(slots):
    """Over 512 cached tokens, flash attention sums a lone query's cache in one chunk per
    thread: single tokens are decoded with a pad token after them (serial path and slots)."""
    heard = "\n".join(f"- Speaker {i}: remote work gave me {i} evenings." for i in range(60))
    user = f"What you have heard:\n{heard}\nSay where you stand on remote work."
    prompt = to_prompt([{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}])
    answers = []
    for threads in (1, 2):
        config = dataclasses.replace(
            parse_model(MODEL), engines=1, slots=slots, threads=threads, prefix_reuse=False
        )
        engine = LlamaEngine(config)
        assert len(engine.tokenize(prompt.text, bos=True)) > 1024
        sampling = [Sampling(24, 0.8, seed) for seed in range(2)]
        answers.append([engine.generate(prompt.text, preamble="", sampling=s) for s in sampling])
    assert answers[0] == answers[1]


def test_a_call_whose_sampling_fails_gets_its_error_and_the_others_go_on(slotted, monkeypatch):
    """A sampler that raises in a slot step fails its own call, whichever call's thread ran
    the step; the calls sharing its decodes answer as they do alone."""
    from simworld.llm.providers.local_sampler import TokenSampler

    calls = _calls()[:3]
    expected = [slotted.generate(t, preamble=p, sampling=s) for t, p, s in calls[1:]]
    real = TokenSampler.pick_logits
    broken: list[TokenSampler] = []

    def pick_logits(self, logits):
        if broken and self is broken[0]:
            raise ValueError("sampler broke")
        return real(self, logits)

    real_start = LlamaEngine._start_in_slot

    def start(self, s, budget, n_prompt, stop):
        started = real_start(self, s, budget, n_prompt, stop)
        if s.seed == calls[0][2].seed and not isinstance(started, tuple):
            broken.append(started.sampler)
        return started

    monkeypatch.setattr(TokenSampler, "pick_logits", pick_logits)
    monkeypatch.setattr(LlamaEngine, "_start_in_slot", start)
    futures = [slotted.submit(t, preamble=p, sampling=s) for t, p, s in calls]
    with pytest.raises(ValueError, match="sampler broke"):
        futures[0].result(timeout=300)
    assert [f.result(timeout=300) for f in futures[1:]] == expected
    assert broken
