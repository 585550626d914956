"""Option distributions read from token log-probabilities, and the fake provider's logprobs."""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from simworld.llm.litellm_backend import (
    CallIdentity,
    LiteLLMModel,
    LLMRequest,
    canonical_json,
    sha256_hex,
)
from simworld.llm.logprobs import (
    answer_enum,
    expected_value,
    logprob_content,
    option_distribution,
)
from simworld.llm.providers.fake import FakeLLM

LIKERT = [1, 2, 3, 4, 5]


def tok(token: str, alts: dict[str, float] | None = None) -> dict:
    """A token entry whose alternatives are given as probabilities."""
    alts = alts or {token: 1.0}
    return {
        "token": token,
        "logprob": math.log(alts.get(token, 1.0)),
        "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in alts.items()],
    }


def test_openai_style_tokens():
    content = [
        tok('{"'),
        tok("answer"),
        tok('":'),
        tok(" "),
        tok("4", {"4": 0.5, "3": 0.2, "5": 0.1, "\n": 0.1, "four": 0.1}),
        tok("}"),
    ]
    dist = option_distribution(content, LIKERT)
    assert dist is not None and dist.position == 4
    assert dist.probs == pytest.approx({1: 0.0, 2: 0.0, 3: 0.25, 4: 0.625, 5: 0.125})
    assert dist.expected == pytest.approx(3 * 0.25 + 4 * 0.625 + 5 * 0.125)


def test_value_sharing_a_token_with_a_space():
    content = [tok('{"answer":'), tok(" 2", {" 2": 0.6, " 1": 0.2, "2": 0.1, " x": 0.1}), tok("}")]
    dist = option_distribution(content, LIKERT)
    # "2" lacks the space the chosen token starts with: another formatting, not counted.
    assert dist.probs == pytest.approx({1: 0.25, 2: 0.75, 3: 0.0, 4: 0.0, 5: 0.0})


def test_string_values_after_a_separate_quote():
    content = [tok('{"answer": "'), tok("B", {"B": 0.3, "A": 0.3, "C": 0.2, "Z": 0.2}), tok('"}')]
    dist = option_distribution(content, ["A", "B", "C", "D"])
    assert dist.probs == pytest.approx({"A": 0.375, "B": 0.375, "C": 0.25, "D": 0.0})
    assert dist.expected is None


def test_string_values_in_one_token_with_their_quote():
    content = [tok('{"answer": '), tok('"B"}', {'"B"}': 0.5, '"D"}': 0.5}), tok("\n")]
    dist = option_distribution(content, ["A", "B", "C", "D"])
    assert dist.probs == pytest.approx({"A": 0.0, "B": 0.5, "C": 0.0, "D": 0.5})


def test_whole_option_alternatives_with_terminator_tell_1_from_10():
    scale = list(range(1, 11))
    content = [tok('{"answer": '), tok("10}", {"10}": 0.6, "1}": 0.3, "2}": 0.1})]
    dist = option_distribution(content, scale)
    assert dist.probs[10] == pytest.approx(0.6)
    assert dist.probs[1] == pytest.approx(0.3)
    assert dist.probs[2] == pytest.approx(0.1)


def test_bare_digit_goes_to_the_complete_value():
    content = [tok('{"answer": '), tok("1", {"1": 0.7, "9": 0.3}), tok("0}")]
    dist = option_distribution(content, list(range(1, 11)))
    assert dist.probs[1] == pytest.approx(0.7) and dist.probs[9] == pytest.approx(0.3)


def test_prefix_of_several_values_is_split_evenly():
    values = ["Strongly agree", "Strongly disagree", "Neutral"]
    content = [tok('{"answer": "'), tok("Str", {"Str": 0.8, "Neutral": 0.2}), tok('ongly agree"}')]
    dist = option_distribution(content, values)
    assert dist.probs == pytest.approx(
        {"Strongly agree": 0.4, "Strongly disagree": 0.4, "Neutral": 0.2}
    )


def test_bare_value_without_answer_key():
    content = [tok(" "), tok("3", {"3": 0.9, "4": 0.1})]
    assert option_distribution(content, LIKERT).probs[3] == pytest.approx(0.9)


def test_entry_without_alternatives_uses_its_own_token():
    content = [{"token": '{"answer": 5}', "logprob": -0.1, "top_logprobs": []}]
    assert option_distribution(content, LIKERT).probs[5] == pytest.approx(1.0)


def test_no_answer_or_no_matching_alternative_gives_none():
    assert option_distribution([], LIKERT) is None
    assert option_distribution([tok('{"answer": ')], LIKERT) is None
    assert option_distribution([tok('{"answer": '), tok("x", {"x": 0.5, "y": 0.5})], LIKERT) is None


def test_expected_value_only_for_numbers():
    assert expected_value({1: 0.5, 3: 0.5}) == pytest.approx(2.0)
    assert expected_value({"A": 1.0}) is None
    assert expected_value({}) is None


def test_answer_enum_and_content_normalisation():
    schema = {"properties": {"answer": {"enum": [1, 2]}}}
    assert answer_enum(schema) == [1, 2]
    assert answer_enum(None) is None and answer_enum({"properties": {}}) is None
    assert logprob_content(None) is None and logprob_content({"content": []}) is None
    raw = {"content": [{"token": "a", "logprob": -1, "bytes": [97], "top_logprobs": None}]}
    assert logprob_content(raw) == [{"token": "a", "logprob": -1.0, "top_logprobs": []}]


@pytest.mark.parametrize(
    "logprobs",
    [
        "garbage",
        {"content": "garbage"},
        {"content": [{"token": "a"}]},
        {"content": [{"token": "a", "logprob": "high"}]},
        {"content": [{"token": "a", "logprob": float("nan")}]},
        {
            "content": [
                {"token": "a", "logprob": -1, "top_logprobs": [{"token": "b", "logprob": None}]}
            ]
        },
        {"content": [{"token": "a", "logprob": float("-inf")}]},
    ],
)
def test_log_probabilities_a_server_sends_malformed_are_none(logprobs):
    """They are an extra of the answer: none, not a failed call, and never a NaN that would
    reach the transcript (which must stay JSON)."""
    assert logprob_content(logprobs) is None
    zero = {"token": "a", "logprob": -1, "top_logprobs": [{"token": "b", "logprob": -math.inf}]}
    assert logprob_content({"content": [zero]}) == [  # probability 0: as good as absent
        {"token": "a", "logprob": -1.0, "top_logprobs": []}
    ]


def test_a_response_without_a_choice_is_a_transient_empty_response_error():
    """A content filter or a proxy may answer 200 with no choices: retried, then a failure."""
    from types import SimpleNamespace

    from simworld.llm.errors import error_kind, is_transient
    from simworld.llm.litellm_backend import first_choice

    for response in (
        SimpleNamespace(choices=[]),
        SimpleNamespace(choices=[SimpleNamespace(message=None)]),
        SimpleNamespace(),
    ):
        with pytest.raises(Exception, match="holds no answer") as caught:
            first_choice(response)
        assert error_kind(caught.value) == "empty_response" and is_transient(caught.value)
    choice = SimpleNamespace(message=SimpleNamespace(content="hi"))
    assert first_choice(SimpleNamespace(choices=[choice])) is choice


# -- the fake provider and the LiteLLM path ---------------------------------------------------
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer", "enum": LIKERT}},
    "required": ["answer"],
}
MESSAGES = (
    {"role": "system", "content": "You are Tester."},
    {
        "role": "user",
        "content": "Topic: Tea is good.\nOptions:\n  1 = No\n  2 = Meh\n  3 = Fine\n"
        "  4 = Yes\n  5 = Very\nReply with JSON.",
    },
)


def request(*, logprobs: bool, schema: dict | None = SCHEMA) -> LLMRequest:
    return LLMRequest(
        model="fake/default",
        messages=MESSAGES,
        identity=CallIdentity(3, "t", 0, "probe:tea"),
        temperature=0.7,
        max_tokens=50,
        schema=schema,
        schema_name="Answer" if schema else None,
        logprobs=logprobs,
    )


def complete(req: LLMRequest):
    return asyncio.run(LiteLLMModel().complete(req, attempt=0, timeout_s=10))


def test_cache_key_unchanged_without_logprobs():
    req = request(logprobs=False)
    legacy = sha256_hex(
        canonical_json(
            {
                "model": req.model,
                "messages": list(req.messages),
                "temperature": req.temperature,
                "max_tokens": req.max_tokens,
                "schema": req.schema,
                "schema_name": req.schema_name,
                "identity": {
                    "seed": 3,
                    "agent": "t",
                    "step": 0,
                    "purpose": "probe:tea",
                    "index": 0,
                },
            }
        )
    )
    assert req.cache_key() == legacy
    assert request(logprobs=True).cache_key() != legacy


def test_fake_logprobs_give_option_probs_peaked_at_the_answer():
    plain, scored = complete(request(logprobs=False)), complete(request(logprobs=True))
    assert plain.extra == {} and plain.text == scored.text
    probs = scored.extra["option_probs"]
    assert set(probs) == {"1", "2", "3", "4", "5"}
    assert sum(probs.values()) == pytest.approx(1.0)
    answer = str(json.loads(scored.text)["answer"])
    assert max(probs, key=probs.get) == answer
    assert complete(request(logprobs=True)).extra == scored.extra


def test_fake_free_text_logprobs_cover_the_text():
    done = complete(request(logprobs=True, schema=None))
    tokens = done.extra["logprobs"]
    assert "".join(t["token"] for t in tokens) == done.text
    assert all(math.log(0.5) <= t["logprob"] <= 0 for t in tokens)
    assert "option_probs" not in done.extra


def test_fake_response_has_no_logprobs_unless_asked():
    fmt = {"type": "json_schema", "json_schema": {"name": "A", "schema": SCHEMA}}
    params = {"seed": 1, "response_format": fmt}
    plain = FakeLLM()._answer("default", list(MESSAGES), params)
    assert getattr(plain.choices[0], "logprobs", None) is None
    asked = FakeLLM()._answer("default", list(MESSAGES), {**params, "logprobs": True})
    assert asked.choices[0].message.content == plain.choices[0].message.content
    assert asked.choices[0].logprobs is not None
