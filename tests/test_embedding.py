"""The local sentence-embedding model: pooling, normalisation, determinism, semantics."""

from __future__ import annotations

import numpy as np
import pytest

from simworld.config.memory import EmbeddingConfig, MemoryConfig
from simworld.llm.embedding import (
    MINILM_DIMENSION,
    CachedEmbedder,
    LiteLLMEmbedder,
    l2_normalise,
    local_embedder,
    make_embedder,
    mean_pool,
)
from simworld.memory.base import MemoryItem
from simworld.memory.stream import MemoryStream

# (stored memory, paraphrase used as the query): written for this test, varied topics.
PAIRS = [
    (
        "The city council voted to expand the bus network next year.",
        "Next year the municipality will add more bus routes.",
    ),
    (
        "My landlord raised the rent by twenty percent this spring.",
        "The owner of my flat put the rent up by a fifth.",
    ),
    (
        "Nuclear plants produce a lot of electricity with almost no carbon emissions.",
        "Atomic power stations generate plenty of power while emitting hardly any CO2.",
    ),
    (
        "I work from home three days a week and get more done there.",
        "Remote working a few days weekly makes me more productive.",
    ),
    (
        "The hospital is short of nurses on the night shift.",
        "There are not enough nurses working nights at the clinic.",
    ),
    (
        "Our football team lost the final on penalties.",
        "We were beaten in the championship game in a penalty shootout.",
    ),
    (
        "She adopted a small grey kitten from the animal shelter.",
        "She took home a little gray cat from the rescue centre.",
    ),
    (
        "Heavy rain flooded the underground station this morning.",
        "The metro station was under water after this morning's downpour.",
    ),
    (
        "He is learning to play the violin at the age of sixty.",
        "At sixty years old he has started violin lessons.",
    ),
    (
        "The bakery on the corner sells the best croissants in town.",
        "The corner bakery makes the finest croissants around here.",
    ),
    (
        "Vaccines greatly reduced deaths from measles.",
        "Immunisation has cut measles mortality dramatically.",
    ),
    (
        "The factory will close and two hundred workers will lose their jobs.",
        "The plant is shutting down, leaving 200 employees unemployed.",
    ),
    (
        "I think the police should patrol the park more at night.",
        "In my view officers ought to watch the park more often after dark.",
    ),
    (
        "Electric cars are still too expensive for most families.",
        "Most households cannot yet afford battery-powered vehicles.",
    ),
    (
        "The river has become much cleaner since the new treatment plant opened.",
        "Water quality in the river improved after the sewage works was built.",
    ),
    (
        "My grandmother taught me how to bake bread when I was a child.",
        "As a kid I learned bread making from my grandma.",
    ),
    (
        "The school replaced its textbooks with tablets.",
        "Pupils now use tablet computers instead of printed schoolbooks.",
    ),
    (
        "Housing prices in the capital doubled over the last decade.",
        "Homes in the capital cost twice as much as ten years ago.",
    ),
    (
        "The museum is free to visit on the first Sunday of each month.",
        "Admission to the museum costs nothing on every month's first Sunday.",
    ),
    (
        "The fishing boats stayed in the harbour because of the storm.",
        "The storm kept the fishing fleet tied up in port.",
    ),
    (
        "Too much screen time harms children's sleep.",
        "Kids sleep worse when they spend hours on phones and tablets.",
    ),
    (
        "The new bridge cut the commute across the bay to ten minutes.",
        "Crossing the bay takes only ten minutes now that the bridge is open.",
    ),
    (
        "Farmers are worried that the drought will ruin the wheat harvest.",
        "The dry spell has growers fearing a failed wheat crop.",
    ),
    (
        "He quit his job at the bank to open a small restaurant.",
        "He left banking to start his own little eatery.",
    ),
    (
        "Most people in the survey trust their doctors more than politicians.",
        "Respondents said they have more faith in physicians than in lawmakers.",
    ),
    (
        "The library extended its opening hours to ten in the evening.",
        "The public library now stays open until 10 pm.",
    ),
    (
        "Solar panels on the roof halved our electricity bill.",
        "Our power costs fell by half after we put photovoltaic panels on the house.",
    ),
    (
        "The train was delayed for two hours because of a signal failure.",
        "A signalling fault held up the railway service for a couple of hours.",
    ),
    (
        "Tourists are crowding the old town and pushing out local shops.",
        "Visitors overrun the historic centre and neighbourhood stores are disappearing.",
    ),
    (
        "I planted tomatoes and basil on my balcony this summer.",
        "This summer I grew tomato plants and basil on the balcony.",
    ),
    (
        "The minimum wage should rise with inflation every year.",
        "The lowest legal pay ought to be indexed to rising prices annually.",
    ),
    (
        "The earthquake damaged several old buildings in the village.",
        "A number of historic houses in the hamlet were hit by the tremor.",
    ),
    (
        "She ran her first marathon in under four hours.",
        "She completed her debut 42-kilometre race in less than four hours.",
    ),
    (
        "The company banned meetings on Fridays to give people time to focus.",
        "The firm made Friday a meeting-free day so staff can concentrate.",
    ),
    (
        "Air pollution in the city is worst in winter.",
        "The town's air quality is at its poorest during the cold months.",
    ),
    (
        "Our neighbour's dog barks all night and keeps us awake.",
        "The dog next door howls through the night so we cannot sleep.",
    ),
    (
        "The government plans to raise the retirement age to sixty-seven.",
        "Officials intend to push the pension age up to 67.",
    ),
    (
        "Many young people move abroad because they cannot find work at home.",
        "Lots of youngsters emigrate since there are no jobs in their own country.",
    ),
    (
        "The concert was cancelled because the singer fell ill.",
        "The show was called off after the vocalist got sick.",
    ),
    (
        "Recycling rates went up after the town introduced separate bins.",
        "More waste got recycled once the town brought in sorted rubbish containers.",
    ),
]


def test_labelled_pairs_are_enough():
    assert len(PAIRS) >= 30
    assert len({m for m, _ in PAIRS}) == len(PAIRS)


def test_mean_pool_ignores_padding():
    hidden = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]]])
    mask = np.array([[1, 1, 0]])
    np.testing.assert_allclose(mean_pool(hidden, mask), [[2.0, 3.0]])


def test_l2_normalise_unit_rows_and_zero_row():
    out = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
    assert out.dtype == np.float32


def test_local_model_vectors_are_unit_and_deterministic():
    emb = local_embedder().inner
    texts = ["The cat sat on the mat.", "Markets fell sharply today."]
    a = emb.embed(texts)
    assert a.shape == (2, MINILM_DIMENSION) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    # a text's vector does not depend on what else is embedded with it
    assert np.array_equal(emb.embed([texts[0]])[0], a[0])
    assert np.array_equal(emb.embed(texts[::-1])[1], a[0])


def test_local_model_is_semantic():
    emb = make_embedder(EmbeddingConfig())
    v = emb.embed(
        [
            "The city council voted to expand the bus network next year.",
            "Next year the municipality will add more bus routes.",
            "My cat loves sleeping in the sun.",
        ]
    )
    assert v[0] @ v[1] > 0.5
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


def test_cached_embedder_computes_each_text_once():
    calls = []

    class Counting:
        name = "counting"

        def embed(self, texts):
            calls.append(list(texts))
            return np.eye(4, dtype=np.float32)[[len(t) % 4 for t in texts]]

    cached = CachedEmbedder(Counting(), size=2)
    cached.embed(["a", "bb", "a"])
    cached.embed(["bb", "ccc"])
    assert calls == [["a", "bb"], ["ccc"]]
    cached.embed(["a"])  # evicted (size 2) so computed again
    assert calls[-1] == ["a"]


def test_litellm_provider_needs_no_local_model():
    with pytest.raises(ValueError, match="local provider ships only"):
        EmbeddingConfig(provider="local", model="text-embedding-3-small")
    emb = make_embedder(EmbeddingConfig(provider="litellm", model="openai/text-embedding-3-small"))
    assert emb.name == "openai/text-embedding-3-small"  # built, never called in tests


def test_a_litellm_embedding_is_retried_then_fails_the_run_in_one_line(monkeypatch):
    """A transient error is retried; after the last attempt, or at once for an error no
    retry fixes, the embedder raises the run's failure instead of making up a vector."""
    import litellm

    from simworld.errors import ModelFailureError
    from simworld.llm import embedding

    calls: list[list[str]] = []
    waits: list[float] = []
    errors = iter(
        [litellm.APIConnectionError("down", "openai", "m")] * 2
        + [litellm.AuthenticationError("bad key sk-abc", "openai", "m")]
    )

    def fake_embedding(model: str, input: list[str]) -> object:
        calls.append(input)
        raise next(errors)

    monkeypatch.setattr(litellm, "embedding", fake_embedding)
    monkeypatch.setattr(embedding.time, "sleep", waits.append)
    embedder = LiteLLMEmbedder("openai/text-embedding-3-small", attempts=4, backoff_s=0.5)
    with pytest.raises(ModelFailureError) as info:
        embedder.embed(["a memory"])
    assert len(calls) == 3 and waits == [0.5, 1.0]  # two transient errors, then a fatal one
    message = str(info.value)
    assert message.startswith("memory.embedding.model openai/text-embedding-3-small: auth ")
    assert "\n" not in message
    errors = iter([litellm.APIConnectionError("down", "openai", "m")] * 9)
    calls.clear()
    with pytest.raises(ModelFailureError, match="connection error after 4 attempt"):
        embedder.embed(["a memory"])
    assert len(calls) == 4


def test_paraphrase_retrieves_the_stored_memory():
    """recall@3 of the stored memory for its paraphrase, among all 40 memories."""
    config = MemoryConfig(store="chroma")
    stream = MemoryStream(agent="a", owner="Ana", config=config, embedder=local_embedder(), seed=0)
    for text, _ in PAIRS:
        # same step and importance: recency and importance do not vary, relevance decides
        stream.add(MemoryItem(1, "observation", "Bo", "t", text), importance=5.0)
    hits1 = hits3 = 0
    for i, (_, paraphrase) in enumerate(PAIRS):
        found = [m.id for m in stream.retrieve(paraphrase, k=3, step=1, touch=False)]
        hits1 += found[0] == i
        hits3 += i in found
    recall3 = hits3 / len(PAIRS)
    assert recall3 >= 0.8, f"recall@3 = {recall3:.2f} (recall@1 = {hits1 / len(PAIRS):.2f})"
