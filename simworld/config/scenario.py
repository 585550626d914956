"""Scenario files: the pydantic schema of an experiment and its safe loading from YAML."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from simworld.config.baseline import BaselineConfig
from simworld.config.interventions import (
    Broadcast,
    CustomIntervention,
    Intervention,
    Removal,
    Rewiring,
)
from simworld.config.memory import MemoryConfig
from simworld.config.persona import SLUG, PopulationDistributions, is_one_line, load_library
from simworld.config.servers import (
    Deployment,
    Route,
    RoutingConfig,
    check_api_base,
    check_env_name,
    check_params,
    make_route,
)
from simworld.config.trackers import TrackersConfig
from simworld.errors import ConfigError, config_error_from_validation
from simworld.support.redact import Redactor, find_credential
from simworld.support.yamlio import read_yaml_mapping, strict_mismatch

DEFAULT_MODEL = "local/gemma3-270m"
DEFAULT_TEMPERATURE = 0.7
DEFAULT_MAX_TOKENS = 160
DEFAULT_CONCURRENCY = 16

OpinionValue = int | str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_answer_texts(texts: list[str], field: str) -> None:
    """Answers are shown to agents as a list and told apart by their text: each must be one
    line and not blank, and no two may differ only in letter case or spacing."""
    for text in texts:
        if not is_one_line(text):
            raise ValueError(f"{field}: {text!r} is blank or not one line of text")
    if len({" ".join(t.split()).casefold() for t in texts}) != len(texts):
        raise ValueError(f"{field}: must be distinct (ignoring letter case and spacing)")


class LikertScale(_Strict):
    """An ordinal scale with values ``1..K``, one label per value."""

    type: Literal["likert"]
    labels: list[str] = Field(min_length=2, max_length=11)

    @model_validator(mode="after")
    def _distinct(self) -> LikertScale:
        _check_answer_texts(self.labels, "labels")
        return self

    @property
    def values(self) -> list[OpinionValue]:
        """The allowed answers."""
        return list(range(1, len(self.labels) + 1))

    def label(self, value: OpinionValue) -> str:
        """Label of an answer."""
        return self.labels[int(value) - 1]


class ChoiceScale(_Strict):
    """A categorical scale: options keyed by single capital letters."""

    type: Literal["choice"]
    options: dict[Annotated[str, Field(pattern=r"^[A-Z]$")], str] = Field(min_length=2)

    @model_validator(mode="after")
    def _distinct(self) -> ChoiceScale:
        _check_answer_texts(list(self.options.values()), "options")
        return self

    @property
    def values(self) -> list[OpinionValue]:
        """The allowed answers."""
        return list(self.options)

    def label(self, value: OpinionValue) -> str:
        """Label of an answer."""
        return self.options[str(value)]


Scale = Annotated[LikertScale | ChoiceScale, Field(discriminator="type")]


class Topic(_Strict):
    """A question the agents hold opinions on, with its answer scale."""

    id: str = Field(pattern=SLUG)
    statement: str = Field(min_length=3)
    scale: Scale
    truth: OpinionValue | None = None
    """The correct answer, when the question has one (Asch trials, ground-truth analyses)."""

    @field_validator("statement")
    @classmethod
    def _not_blank(cls, statement: str) -> str:
        if not statement.strip():
            raise ValueError("a statement must not be blank")
        return statement

    @model_validator(mode="after")
    def _truth_on_scale(self) -> Topic:
        if self.truth is not None and not self.allows(self.truth):
            raise ValueError(f"truth: {self.truth!r} is not one of {self.scale.values}")
        return self

    def allows(self, value: OpinionValue) -> bool:
        """Whether ``value`` is an answer on this topic's scale."""
        return str(value) in {str(v) for v in self.scale.values}

    @property
    def ordinal(self) -> bool:
        """Whether answers are ordered numbers (Likert) rather than categories."""
        return isinstance(self.scale, LikertScale)


class PopulationConfig(_Strict):
    """Where the personas come from: a library file or attribute distributions."""

    size: int = Field(ge=1, le=100_000)
    library: str | None = None
    replace: bool = False
    distributions: PopulationDistributions | None = None
    agent_class: str | None = Field(default=None, pattern=r"^.+:[A-Za-z_]\w*$")
    """The agents' class: ``path.py:Class`` (relative to the scenario file) or
    ``package.module:Class``, a subclass of :class:`simworld.engine.agent.PersonaAgent`."""

    @model_serializer(mode="wrap")
    def _omit_default_agent_class(self, handler: SerializerFunctionWrapHandler) -> Any:
        """Leave ``agent_class`` out while unset, so manifests of runs without one keep
        the bytes they had before the field existed."""
        data = handler(self)
        if self.agent_class is None and isinstance(data, dict):
            data.pop("agent_class", None)
        return data

    @model_validator(mode="after")
    def _one_source(self) -> PopulationConfig:
        if (self.library is None) == (self.distributions is None):
            raise ValueError("give exactly one of 'library' or 'distributions'")
        return self


class CompleteNetwork(_Strict):
    """Everyone is connected to everyone."""

    generator: Literal["complete"]


class ErdosRenyiNetwork(_Strict):
    """Each pair is connected with probability ``p``."""

    generator: Literal["erdos_renyi"]
    p: float = Field(ge=0.0, le=1.0)


class WattsStrogatzNetwork(_Strict):
    """Small world: ring of ``k`` nearest neighbours, each edge rewired with probability ``p``."""

    generator: Literal["watts_strogatz"]
    k: int = Field(ge=2, multiple_of=2)
    """Each node joins its ``k / 2`` nearest neighbours on either side (an odd ``k`` would
    silently act as ``k - 1``)."""
    p: float = Field(ge=0.0, le=1.0)


class BarabasiAlbertNetwork(_Strict):
    """Preferential attachment: each new node attaches ``m`` edges."""

    generator: Literal["barabasi_albert"]
    m: int = Field(ge=1)


class StochasticBlockNetwork(_Strict):
    """Homophily: blocks by a persona attribute (or explicit sizes), dense inside, sparse across."""

    generator: Literal["stochastic_block"]
    p_in: float = Field(ge=0.0, le=1.0)
    p_out: float = Field(ge=0.0, le=1.0)
    group_by: Literal["nationality", "gender", "occupation", "education", "culture"] | None = None
    sizes: list[Annotated[int, Field(ge=1)]] | None = None

    @model_validator(mode="after")
    def _one_grouping(self) -> StochasticBlockNetwork:
        if (self.group_by is None) == (self.sizes is None):
            raise ValueError("give exactly one of 'group_by' or 'sizes'")
        return self


class EdgeListNetwork(_Strict):
    """Edges read from a file: one ``a b`` pair of persona ids or 0-based indices per line.

    Persona ids are allowed only where the population's ids do not depend on the seed
    (synthetic personas, or the whole library drawn without replacement); a sample of a
    library is named by index, so the file is valid for every seed or for none.
    """

    generator: Literal["edge_list"]
    path: str


NetworkConfig = Annotated[
    CompleteNetwork
    | ErdosRenyiNetwork
    | WattsStrogatzNetwork
    | BarabasiAlbertNetwork
    | StochasticBlockNetwork
    | EdgeListNetwork,
    Field(discriminator="generator"),
]


class AschConfig(_Strict):
    """Asch-style trials (Zhu et al. 2024): ``p`` scripted peers all give answer c first.

    Attributes:
        peers: ``p`` per step: step t uses ``peers[(t - 1) % len(peers)]`` (0: no peers, the
            control condition).
        peer_answers: The peers' answer c per topic id; for a topic not listed, c is drawn
            (seeded, once per run) among the answers other than the topic's ``truth``.
    """

    peers: list[Annotated[int, Field(ge=0, le=50)]] = Field(min_length=1)
    peer_answers: dict[str, OpinionValue] = Field(default_factory=dict)

    def peers_at(self, step: int) -> int:
        """``p`` at interaction step ``step`` (1-based)."""
        return self.peers[(step - 1) % len(self.peers)]


class ProtocolConfig(_Strict):
    """How agents interact and when they are probed.

    Step 0 is the initial state; interaction steps are ``1..steps``. A probe at step t
    is taken after step t's interaction (at step 0, before any).

    Modes: ``broadcast`` (every agent posts to its neighbours), ``pairs`` (a random matching
    along edges talks), ``group`` (groups of ``group_size`` talk for ``rounds``; composed at
    random, or balanced by onboarding diversity with ``grouping: balanced``) and ``asch``
    (every agent answers every topic after ``p`` scripted peers, see :class:`AschConfig`).
    A user's own protocol is named ``path.py:Class`` (relative to the scenario file) or
    ``package.module:Class``, or by the name it was registered under from Python
    (:mod:`simworld.engine.protocols`).
    """

    steps: int = Field(ge=1, le=100_000)
    mode: str = "broadcast"
    group_size: int = Field(default=5, ge=2)
    grouping: Literal["random", "balanced"] = "random"
    """``balanced``: groups are composed so that the onboarding diversity S of the step's
    topic (the latest private answers before the step) covers its levels evenly; see
    :func:`simworld.engine.grouping.balanced_groups`."""
    asch: AschConfig | None = None
    rounds: int = Field(default=3, ge=1)
    probe_every: int = Field(default=1, ge=1)
    probe_at: list[Annotated[int, Field(ge=0)]] | None = Field(default=None, min_length=1)
    memory_window: int = Field(default=8, ge=0)
    instruction: str = ""
    counterbalance: bool = True
    """Show each private probe's options in an order drawn per agent and step from the
    call's identity: Likert scales in their own or the reversed direction, choice options
    in a random permutation (:mod:`simworld.engine.counterbalance`). The answer is mapped back
    and the shown order recorded. ``false`` reproduces a fixed-order protocol (and is what
    runs recorded before this option had)."""
    probe_batch: bool = False
    """Ask all the topics of one agent's probe in one structured call (``{"q1": …, "q2": …}``)
    instead of one call per topic (:mod:`simworld.engine.probe_batch`). Each topic keeps its
    own counterbalanced order; the answers are seen together (a topic's answer can prime the
    next), and no option probabilities are asked for."""
    probe_topics: Literal["all", "discussed"] = "all"
    """``all``: every probe asks about every topic. ``discussed``: the probe at step s asks
    only about the topic of step s (just discussed: the R answer) and of step s+1 (about to
    be discussed: the O answer; not after the last step); at step 0 only the first topic."""

    @field_validator("mode")
    @classmethod
    def _mode_name(cls, value: str) -> str:
        name = value.rpartition(":")[2] if ":" in value else value
        if not re.fullmatch(r"[A-Za-z_][\w-]*", name) or value.startswith(":"):
            raise ValueError(
                f"mode: {value!r} is neither a protocol name nor path.py:Class / module:Class"
            )
        return value

    def probe_steps(self) -> list[int]:
        """The steps at which every agent is probed."""
        if self.probe_at is not None:
            return sorted({s for s in self.probe_at if s <= self.steps})
        return list(range(0, self.steps + 1, self.probe_every))

    def probe_topic_indices(self, step: int, n_topics: int) -> list[int]:
        """Indices (in scenario order) of the topics probed at ``step`` (see ``probe_topics``).

        Step t discusses topic ``(t - 1) % n_topics``.
        """
        if self.probe_topics == "all":
            return list(range(n_topics))
        wanted: set[int] = set()
        if step >= 1:
            wanted.add((step - 1) % n_topics)
        if step < self.steps:
            wanted.add(step % n_topics)
        return sorted(wanted)


class PriceConfig(_Strict):
    """Price per million tokens, overriding litellm's cost map."""

    input_per_million: float = Field(ge=0.0)
    output_per_million: float = Field(ge=0.0)


FIELDS_ONLY = "fields_only"
"""Validation context key: check every field, but not the checks across them."""
EXECUTION_ONLY_LLM_FIELDS = ("concurrency", "cache", "timeout_s", "backoff_base_s", "backoff_max_s")
"""``llm`` settings of how calls are sent that do not change what a run writes (the same
scenario and seed give the same outputs whatever they are): runs that differ only in them
are one condition in a comparison."""


class LLMConfig(_Strict):
    """Model, endpoint and gateway settings (endpoints: :mod:`simworld.config.servers`)."""

    model: str = Field(default=DEFAULT_MODEL, min_length=3)
    temperature: float = Field(default=DEFAULT_TEMPERATURE, ge=0.0, le=2.0)
    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=1, le=32_768)
    concurrency: int = Field(default=DEFAULT_CONCURRENCY, ge=1, le=4096)
    cache: Literal["off", "record", "replay"] = "record"
    timeout_s: float = Field(default=60.0, gt=0.0)
    max_retries: int = Field(default=4, ge=0, le=20)
    max_invalid_retries: int = Field(default=2, ge=0, le=20)
    backoff_base_s: float = Field(default=0.5, ge=0.0)
    backoff_max_s: float = Field(default=20.0, ge=0.0)
    budget_usd: float | None = Field(default=None, gt=0.0)
    max_failure_rate: float = Field(default=0.5, ge=0.0, le=1.0)
    """The run stops (``failed``) when more than this share of its model calls so far has
    failed, checked after every step (1.0: never)."""
    probe_logprobs: bool = True
    price: PriceConfig | None = None
    api_base: str | None = Field(default=None, min_length=1)
    api_key_env: str | None = None
    params: dict[str, JsonValue] = Field(default_factory=dict)
    deployments: list[Deployment] = Field(default_factory=list)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        return check_env_name(value)

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        return check_params(value)

    @field_validator("api_base")
    @classmethod
    def _api_base(cls, value: str | None) -> str | None:
        return check_api_base(value)

    @model_validator(mode="after")
    def _one_endpoint(self) -> LLMConfig:
        if self.api_base is not None and self.deployments:
            raise ValueError("api_base: give llm.api_base or llm.deployments, not both")
        if self.deployments and all(d.fallback for d in self.deployments):
            raise ValueError("deployments: at least one must not be a fallback")
        return self

    def route(self) -> Route | None:
        """Where calls go (``None``: the provider's default endpoint and key)."""
        if self.api_base is None and self.api_key_env is None and not self.deployments:
            return None  # every call asks: the common case without hashing the settings
        return make_route(self.api_base, self.api_key_env, tuple(self.deployments), self.routing)


class Scenario(_Strict):
    """One experiment: who, on which network, about what, how, and with which model."""

    name: str = Field(pattern=SLUG)
    description: str = ""
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    population: PopulationConfig
    network: NetworkConfig
    topics: list[Topic] = Field(min_length=1)
    protocol: ProtocolConfig
    llm: LLMConfig = Field(default_factory=LLMConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    trackers: TrackersConfig = Field(default_factory=TrackersConfig)
    baseline: BaselineConfig | None = None
    interventions: list[Intervention] = Field(default_factory=list)
    prompts: dict[str, str] = Field(default_factory=dict)
    """Prompt templates to use instead of the packaged ones (``prompts.yaml``), by name;
    checked against the packaged templates when the model is built
    (:func:`simworld.prompts.render.check_overrides`)."""

    @model_serializer(mode="wrap")
    def _omit_empty_prompts(self, handler: SerializerFunctionWrapHandler) -> Any:
        """Leave ``prompts`` out while empty, so manifests of runs without overrides keep
        the bytes they had before the field existed."""
        data = handler(self)
        if not self.prompts and isinstance(data, dict):
            data.pop("prompts", None)
        return data

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Scenario:
        if info.context and info.context.get(FIELDS_ONLY):
            return self
        ids = [t.id for t in self.topics]
        for i, t in enumerate(ids):
            if t in ids[:i]:
                raise ValueError(f"topics[{i}].id: duplicate topic id {t!r}")
        self._check_protocol()
        self._check_interventions()
        choice = [t.id for t in self.topics if not t.ordinal]
        if self.baseline is not None and choice:
            raise ValueError(
                f"baseline.model: {self.baseline.model} needs Likert topics; "
                f"{choice[0]!r} is a choice topic"
            )
        if self.baseline is not None and self.protocol.mode == "asch":
            raise ValueError(
                "baseline: baseline agents do not answer Asch trials (protocol.mode: asch); "
                "drop the baseline section or choose another mode"
            )
        bfi = self.trackers.bfi
        scheduled = {
            "protocol.probe_at": self.protocol.probe_at or [],
            "trackers.bfi.steps": [] if bfi is None else bfi.steps,
        }
        for field, steps in scheduled.items():
            late = [s for s in steps if s > self.protocol.steps]
            if late:
                raise ValueError(f"{field}: step {late[0]} is after the last step")
        n, net = self.population.size, self.network
        if isinstance(net, WattsStrogatzNetwork) and net.k >= n:
            raise ValueError(f"network.k: k={net.k} must be smaller than population.size {n}")
        if isinstance(net, BarabasiAlbertNetwork) and net.m >= n:
            raise ValueError(f"network.m: m={net.m} must be smaller than population.size {n}")
        if isinstance(net, StochasticBlockNetwork) and net.sizes and sum(net.sizes) != n:
            raise ValueError(
                f"network.sizes: block sizes sum to {sum(net.sizes)}, not population.size {n}"
            )
        return self

    def _check_protocol(self) -> None:
        protocol, probes = self.protocol, set(self.protocol.probe_steps())
        if protocol.grouping == "balanced":
            if protocol.mode != "group":
                raise ValueError("protocol.grouping: 'balanced' needs mode: group")
            unprobed = [s for s in range(protocol.steps) if s not in probes]
            if unprobed:
                raise ValueError(
                    f"protocol.grouping: 'balanced' needs a probe before every step "
                    f"(none at step {unprobed[0]})"
                )
        if (protocol.mode == "asch") != (protocol.asch is not None):
            raise ValueError("protocol.asch: give it exactly when mode is 'asch'")
        if protocol.asch is not None:
            if 0 not in probes:
                raise ValueError("protocol.probe_at: asch trials need a probe at step 0")
            for topic_id, value in protocol.asch.peer_answers.items():
                topic = next((t for t in self.topics if t.id == topic_id), None)
                if topic is None:
                    raise ValueError(f"protocol.asch.peer_answers: no topic {topic_id!r}")
                if not topic.allows(value):
                    raise ValueError(
                        f"protocol.asch.peer_answers.{topic_id}: {value!r} is not on its scale"
                    )
            unset = [
                t.id
                for t in self.topics
                if t.id not in protocol.asch.peer_answers and t.truth is None
            ]
            if unset:
                raise ValueError(
                    f"topics: {unset[0]!r} needs a truth (or protocol.asch.peer_answers) "
                    "for asch trials"
                )
        belief = self.trackers.belief
        if belief is not None:
            topic = next((t for t in self.topics if t.id == belief.topic), None)
            if topic is None or not topic.ordinal:
                raise ValueError(f"trackers.belief.topic: {belief.topic!r} is not a Likert topic")
            if not topic.allows(belief.believe_at):
                raise ValueError(
                    f"trackers.belief.believe_at: {belief.believe_at} is off the scale"
                )

    def _check_interventions(self) -> None:
        for i, item in enumerate(self.interventions):
            where = f"interventions[{i}]"
            if item.step > self.protocol.steps:
                raise ValueError(f"{where}.step: step {item.step} is after the last step")
            if isinstance(item, Broadcast) and item.topic not in {t.id for t in self.topics}:
                raise ValueError(f"{where}.topic: no topic {item.topic!r}")
            if isinstance(item, Removal | Rewiring) and self.baseline is not None:
                raise ValueError(
                    f"{where}.kind: '{item.kind}' changes the graph, which baseline agents "
                    "do not follow yet; drop the baseline section or this intervention"
                )
            if (
                isinstance(item, Removal)
                and item.select is not None
                and item.select.among == "believing"
                and self.trackers.belief is None
            ):
                raise ValueError(f"{where}.select.among: 'believing' needs trackers.belief")

    def topic(self, topic_id: str) -> Topic:
        """The topic with this id."""
        return next(t for t in self.topics if t.id == topic_id)

    def provider_models(self) -> list[str]:
        """The model strings a run sends requests for: ``llm.model``, and the embedding
        model when memories are embedded through litellm."""
        embedding = self.memory.embedding
        if self.memory.store != "window" and embedding.provider == "litellm":
            return [self.llm.model, embedding.model]
        return [self.llm.model]


def set_dotted(
    data: dict[str, Any], key: str, value: Any, *, source: str | Path = "<scenario>"
) -> None:
    """Set ``data[a][b][c] = value`` for the dotted key ``a.b.c``, creating mappings; a
    number indexes a list (``topics.0.statement``).

    Raises:
        ConfigError: A part meets a list and is not one of its indices (named with
            ``source``).
    """
    parts = key.split(".")
    node: Any = data
    for depth, part in enumerate(parts):
        if isinstance(node, list):
            if not (part.isdecimal() and int(part) < len(node)):
                where, n = ".".join(parts[:depth]), len(node)
                msg = f"{where} is a list of {n}: name an item by its index, 0 to {n - 1}"
                raise ConfigError(source, key, msg)
            slot: Any = int(part)
        else:
            slot = part
        if depth == len(parts) - 1:
            node[slot] = value
            return
        nxt = node[slot] if isinstance(node, list) else node.get(slot)
        if not isinstance(nxt, dict | list):
            nxt = {}
            node[slot] = nxt
        node = nxt


def with_overrides(
    scenario: Scenario, overrides: dict[str, Any] | None, *, source: str | Path = "<scenario>"
) -> Scenario:
    """A copy of ``scenario`` with dotted keys set, validated again (itself when none are given).

    Raises:
        ConfigError: A key is unknown or a value invalid (named with ``source``).
    """
    if not overrides:
        return scenario
    data = scenario.model_dump(mode="json")
    for key, value in overrides.items():
        set_dotted(data, key, value, source=source)
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_validation(source, exc, data=data) from exc


def resolve_scenario(
    scenario: Scenario | str | Path, overrides: dict[str, Any] | None = None
) -> tuple[Scenario, str | Path]:
    """A scenario given as an object or a file, with overrides; and the source named in errors.

    Raises:
        ConfigError: The file is missing or a field is malformed.
    """
    if isinstance(scenario, Scenario):
        return with_overrides(scenario, overrides), "<scenario>"
    return load_scenario(scenario, overrides), Path(scenario).resolve()


def _resolve_path(base: Path, value: str) -> str:
    p = Path(value)
    return str(p if p.is_absolute() else (base / p).resolve())


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> Scenario:
    """Read, override and validate a scenario file; relative paths resolve from its folder.

    Args:
        path: The scenario YAML file.
        overrides: Dotted keys to set before validation (``{"llm.model": "fake/x"}``).

    Returns:
        The validated scenario, with file paths made absolute.

    Raises:
        ConfigError: The file is missing or a field is malformed.
    """
    path = Path(path)
    data = copy.deepcopy(read_yaml_mapping(path))
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value, source=path)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        _refuse_converted(path, data)  # a cross-field check may have met a converted value
        raise config_error_from_validation(path, exc, data=data) from exc
    _refuse_converted(path, data, scenario)
    base = path.resolve().parent
    if scenario.population.library is not None:
        scenario.population.library = _resolve_path(base, scenario.population.library)
        if not Path(scenario.population.library).is_file():
            msg = f"file not found: {scenario.population.library}"
            raise ConfigError(path, "population.library", msg)
    if scenario.population.agent_class is not None:
        agent_file, _, agent_cls = scenario.population.agent_class.rpartition(":")
        if agent_file.endswith(".py"):
            agent_file = _resolve_path(base, agent_file)
            if not Path(agent_file).is_file():
                msg = f"file not found: {agent_file}"
                raise ConfigError(path, "population.agent_class", msg)
            scenario.population.agent_class = f"{agent_file}:{agent_cls}"
    for i, item in enumerate(scenario.interventions):
        if isinstance(item, CustomIntervention):
            file, _, cls = item.type.rpartition(":")
            if file.endswith(".py"):
                file = _resolve_path(base, file)
                if not Path(file).is_file():
                    raise ConfigError(path, f"interventions[{i}].type", f"file not found: {file}")
                item.type = f"{file}:{cls}"
    mode_file, sep, mode_cls = scenario.protocol.mode.rpartition(":")
    if sep and mode_file.endswith(".py"):
        mode_file = _resolve_path(base, mode_file)
        if not Path(mode_file).is_file():
            raise ConfigError(path, "protocol.mode", f"file not found: {mode_file}")
        scenario.protocol.mode = f"{mode_file}:{mode_cls}"
    for i, spec in enumerate(scenario.trackers.extra):
        file, sep, cls = spec.rpartition(":")
        if sep and file.endswith(".py"):
            file = _resolve_path(base, file)
            if not Path(file).is_file():
                raise ConfigError(path, f"trackers.extra[{i}]", f"file not found: {file}")
            scenario.trackers.extra[i] = f"{file}:{cls}"
    if isinstance(scenario.network, EdgeListNetwork):
        scenario.network.path = _resolve_path(base, scenario.network.path)
        if not Path(scenario.network.path).is_file():
            raise ConfigError(path, "network.path", f"file not found: {scenario.network.path}")
    return scenario


def _refuse_converted(path: Path, data: Any, scenario: Scenario | None = None) -> None:
    """Refuse a value validation took from another kind (:func:`strict_mismatch`), named
    before any error it caused in a check across fields (``size: true`` read as 1 is not
    "``network.k`` must be smaller than ``population.size`` 1").

    Args:
        path: The scenario file, named in errors.
        data: The input.
        scenario: The validated scenario; ``None``: validate the fields alone.

    Raises:
        ConfigError: Naming the field and what it held.
    """
    if scenario is None:
        try:
            scenario = Scenario.model_validate(data, context={FIELDS_ONLY: True})
        except ValidationError:
            return  # a field is wrong in itself: its own error says so
    mismatch = strict_mismatch(data, scenario.model_dump())
    if mismatch is not None:
        raise ConfigError(path, *mismatch)


def recorded_scenario(
    data: Any, where: str | Path = "<manifest>", field: str = "scenario"
) -> Scenario:
    """A scenario as a run's manifest recorded it (resolved, every default written out).

    A run recorded before ``protocol.counterbalance`` existed showed its probes in a fixed
    order, so a protocol without the key means ``counterbalance: false`` (not today's
    default); resuming, replaying or analysing it then asks and reads the same questions.

    Args:
        data: The recorded scenario (``None`` when the manifest lacks it).
        where: The manifest it was read from, for errors.
        field: The manifest's field that holds it, for errors.

    Raises:
        ConfigError: ``data`` is missing or not a valid scenario.
    """
    if data is None:
        raise ConfigError(where, field, "missing")
    protocol = data.get("protocol") if isinstance(data, dict) else None
    if isinstance(protocol, dict) and "counterbalance" not in protocol:
        data = {**data, "protocol": {**protocol, "counterbalance": False}}
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_validation(where, exc, field) from exc


def check_no_credentials(scenario: Scenario, source: str | Path, redactor: Redactor) -> None:
    """Refuse a scenario, or the persona library it draws from, that holds a credential
    (see :mod:`simworld.support.redact`).

    Outputs never hold credentials, and masking never changes scenario content: a scenario
    with a key in it could be neither recorded as it is nor replayed from a masked copy; a
    library's personas are written into ``agents.parquet`` and every prompt.

    Args:
        scenario: The validated scenario.
        source: The scenario file, named in errors.
        redactor: The run's redactor (``simworld.llm.credentials.run_redactor``).

    Raises:
        ConfigError: A field holds the value of the provider's credential variable or a
            key-shaped token (the message names the file and field, never the value).
    """
    documents: list[tuple[str | Path, Any]] = [(source, scenario.model_dump(mode="json"))]
    if scenario.population.library is not None:
        library = scenario.population.library
        documents.append((library, load_library(library).model_dump(mode="json")))
    for where, data in documents:
        hit = find_credential(data, redactor)
        if hit is not None:
            field, what = hit
            raise ConfigError(
                where,
                field,
                f"holds {what}; keep credentials in the environment, "
                "not in scenario or persona files",
            )


def scenario_json_schema() -> dict[str, Any]:
    """The JSON Schema of scenario files, for editors (every field described, see
    :mod:`simworld.config.schema_docs`)."""
    from simworld.config.schema_docs import document

    schema = document(Scenario.model_json_schema())
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "simworld scenario"
    return schema


__all__ = [
    "EXECUTION_ONLY_LLM_FIELDS",
    "ConfigError",
    "LLMConfig",
    "Scenario",
    "Topic",
    "load_scenario",
    "scenario_json_schema",
]
