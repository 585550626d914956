"""The mesa model: persona agents on a social graph, stepped with concurrent LLM calls."""

from __future__ import annotations

import asyncio
import inspect
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self, TypeVar

import mesa
import networkx as nx

from simworld.config.interventions import Removal
from simworld.config.scenario import EdgeListNetwork, Scenario, Topic, resolve_scenario
from simworld.engine.agent import PersonaAgent, agent_class_from
from simworld.engine.annotate import annotation_jobs, stance_event
from simworld.engine.asch import draw_peer_answers
from simworld.engine.bfi import bfi_jobs
from simworld.engine.counterbalance import ShownOrder
from simworld.engine.inline import message_text
from simworld.engine.interventions import UserIntervention, apply_intervention, due, load_custom
from simworld.engine.policy import BaselinePolicy, Statement
from simworld.engine.probe_batch import batch_request, item_field
from simworld.engine.protocols import Protocol, Turn, protocol_name, resolve_protocol
from simworld.engine.record import Job, StepRecord
from simworld.errors import ConfigError, PluginError
from simworld.llm.cache import ResponseCache
from simworld.llm.gateway import CallOutcome, Gateway
from simworld.llm.litellm_backend import LiteLLMModel, in_place_executor
from simworld.llm.logprobs import expected_value
from simworld.llm.providers.registry import check_scenario_embedding, check_scenario_model
from simworld.llm.types import LanguageModel
from simworld.memory.system import MemorySystem
from simworld.prompts import render as prompts
from simworld.society.network import build_graph, isolation_warning
from simworld.society.population import build_population, seed_drawn_ids
from simworld.support.events import Event, EventType, event_problem
from simworld.support.hashing import canonical_json
from simworld.support.plugins import plugin_fault
from simworld.support.process import STOP_HANDLERS, stop_for
from simworld.support.recipients import Recipients
from simworld.support.redact import Redactor
from simworld.support.rundir import RunStatus
from simworld.trackers.tracker_set import TrackerSet

BRANCH_FIXED_FIELDS = ("name", "seed", "population", "network", "baseline")

_T = TypeVar("_T")


async def _settled() -> None:
    """Two turns of the event loop: a signal it has read but not yet acted on is handled."""
    for _ in range(2):
        await asyncio.sleep(0)


class SocialSimulation(mesa.Model):
    """LLM-backed persona agents talking over a networkx graph.

    Within a step, every conversation runs concurrently (its turns in order) and outcomes
    are applied in plan order, so results depend neither on which call returns first nor
    on the concurrency level. Messages travel only along graph edges; probes are private.

    Args:
        scenario: The validated scenario.
        gateway: The LLM gateway.
        source: The scenario file, named in errors.
        on_step: Called with each finished :class:`StepRecord` (the run writer).
        memory_dir: Where a ``chroma`` memory store keeps its files (``<run_dir>/memory``;
            created on first write); ``None`` keeps memories in memory only.
        agent_class: The agents' class, a :class:`PersonaAgent` subclass (default: the one
            ``population.agent_class`` names, else :class:`PersonaAgent`).
    """

    steps: int  # Mesa's step counter (Mesa ships no type hints)

    def __init__(
        self,
        scenario: Scenario,
        *,
        gateway: Gateway,
        source: str | Path = "<scenario>",
        on_step: Callable[[StepRecord], None] | None = None,
        memory_dir: str | Path | None = None,
        agent_class: type[PersonaAgent] | None = None,
    ) -> None:
        super().__init__(rng=scenario.seed)
        self.scenario = scenario
        self.gateway = gateway
        # before anything is built: the LLM worker processes a large run needs start meanwhile
        calls_per_step = planned_calls_per_step(scenario)
        gateway.plan(calls_per_step)
        gateway.progress.forecast(calls_per_step)  # the bar's run estimate from the start
        self._prepared = False
        self.on_step = on_step
        personas = build_population(scenario, self.rng, source=source)
        self.graph: nx.Graph = build_graph(
            scenario.network,
            personas,
            self.rng,
            source=source,
            seed_drawn_ids=seed_drawn_ids(scenario)
            if scenario.network.generator == "edge_list"
            else None,
        )
        self.warnings: list[str] = _graph_warnings(scenario, self.graph, source)
        self.memory_system = MemorySystem(scenario.memory, seed=scenario.seed, directory=memory_dir)
        plugins = resolve_plugins(scenario, source, agent_class)
        with prompts.overridden(scenario.prompts):
            try:
                self._by_node = [
                    plugins.agent_class(self, p, node) for node, p in enumerate(personas)
                ]
            except Exception as exc:
                fault = plugin_fault(exc)
                if fault is None:
                    raise
                raise ConfigError(source, "population.agent_class", fault) from exc
        self.policy: BaselinePolicy | None = None
        if scenario.baseline is not None:
            self.policy = BaselinePolicy(
                scenario.baseline, scenario.topics, self.graph, personas, self.rng
            )
            for agent in self._by_node:
                agent.baseline = self.policy.is_baseline(agent)
        self.protocol: Protocol = plugins.protocol
        """The interaction protocol ``protocol.mode`` names (:mod:`simworld.engine.protocols`)."""
        self.probe_steps = set(scenario.protocol.probe_steps())
        self.opinions: list[dict[str, Any]] = []
        self._answers: dict[str, dict[int, dict[str, str | None]]] = {}
        self.peer_answers = draw_peer_answers(scenario)
        _check_removals(scenario, {p.id for p in personas}, source)
        self._custom = plugins.interventions
        self._announced = 0
        """Stance and judge calls :meth:`discuss` announced in the current step."""
        self.stopped_reason: RunStatus | None = None
        self._loop = asyncio.new_event_loop()
        # litellm sets each call up in the loop's default executor: in place, not in a thread
        self._loop.set_default_executor(in_place_executor())
        self._started = False
        self.recipients = Recipients()
        """The network as the transcript records it: who a message's ``to`` names."""
        self._followed: tuple[StepRecord | None, int] = (None, 0)
        start = self.start_event()
        self.recipients.observe(start)
        self.trackers = plugins.trackers
        self.trackers.observe(start)
        self.datacollector = self.trackers.datacollector()
        self._owned_cache: ResponseCache | None = None

    @classmethod
    def from_scenario(
        cls,
        scenario: Scenario | str | Path,
        overrides: dict[str, Any] | None = None,
        *,
        cache_path: str | Path | None = None,
        memory_dir: str | Path | None = None,
        on_step: Callable[[StepRecord], None] | None = None,
        agent_class: type[PersonaAgent] | None = None,
        backend: LanguageModel | None = None,
    ) -> Self:
        """Build the model and its gateway from a scenario object or file.

        Use it as a context manager (``with SocialSimulation.from_scenario(s) as model:``),
        or call :meth:`close`. To record a run directory use
        :func:`~simworld.runs.run.run_scenario` instead.

        Args:
            scenario: A :class:`Scenario` or a scenario YAML file.
            overrides: Dotted scenario keys to set (``{"llm.model": "fake/default"}``).
            cache_path: A record/replay cache (SQLite file) used as ``llm.cache`` says;
                without one no call is cached (``llm.cache`` is taken as ``off``).
            memory_dir: Where a ``chroma`` memory store keeps its files.
            on_step: Called with each finished :class:`StepRecord`.
            agent_class: The agents' class (default: ``population.agent_class``, else
                :class:`PersonaAgent`).
            backend: What answers the gateway's calls (default: litellm, the
                :class:`~simworld.llm.litellm_backend.LiteLLMModel` of ``llm.price``); a test
                double or an instrumented backend goes here.

        Raises:
            SimworldError: Bad scenario (a :class:`ConfigError`) or, without ``backend``, a
                model string no provider can run (a backend of one's own takes any).
        """
        resolved, source = resolve_scenario(scenario, overrides)
        if backend is None:
            check_scenario_model(resolved.llm.model, source)
        check_scenario_embedding(resolved.memory, source)
        if cache_path is None:
            llm = resolved.llm.model_copy(update={"cache": "off"})
            resolved = resolved.model_copy(update={"llm": llm})
        cache: ResponseCache | None = None
        if cache_path is not None and resolved.llm.cache != "off":
            cache = ResponseCache(cache_path)
        gateway = Gateway(
            LiteLLMModel(price=resolved.llm.price) if backend is None else backend,
            config=resolved.llm,
            cache=cache,
            redactor=Redactor(),
        )
        try:
            model = cls(
                resolved,
                gateway=gateway,
                source=source,
                on_step=on_step,
                memory_dir=memory_dir,
                agent_class=agent_class,
            )
        except BaseException:
            if cache is not None:
                cache.close()
            raise
        model._owned_cache = cache
        return model

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- structure ---------------------------------------------------------------------------
    def agent_at(self, node: int) -> PersonaAgent:
        """The agent on graph node ``node``."""
        return self._by_node[node]

    @property
    def population(self) -> list[PersonaAgent]:
        """Agents in node order."""
        return list(self._by_node)

    def active_agents(self) -> list[PersonaAgent]:
        """Agents not removed by an intervention, in node order."""
        return [a for a in self._by_node if a.active]

    def latest_answers(self, topic_id: str, *, before: int) -> dict[str, str | None]:
        """Agent → private answer on ``topic_id`` at the latest probe of it before ``before``.

        Empty when the topic was not probed before that step; agents not probed then are
        absent, and a failed probe gives None.
        """
        by_step = self._answers.get(topic_id, {})
        earlier = [s for s in by_step if s < before]
        return dict(by_step[max(earlier)]) if earlier else {}

    def listeners(self, message: Event) -> list[str]:
        """The ids of the agents a ``message`` event of this run reached (its ``to``, in
        either form: :mod:`simworld.support.recipients`)."""
        return self.recipients.of(message)

    def start_event(self) -> Event:
        """The run's opening transcript event: agents and edges."""
        baseline = self.scenario.baseline
        return {
            "type": EventType.RUN_START.value,
            "scenario": self.scenario.name,
            "seed": self.scenario.seed,
            "agents": [
                {
                    "agent": a.key,
                    "name": a.name,
                    "node": a.node,
                    "nationality": a.persona.nationality,
                    "opinions": dict(a.persona.opinions),
                    "big_five": a.persona.big_five.model_dump(),
                    **({"policy": baseline.model} if a.baseline and baseline is not None else {}),
                }
                for a in self._by_node
            ],
            "edges": sorted([min(u, v), max(u, v)] for u, v in self.graph.edges()),
        }

    def rebase(self, scenario: Scenario) -> None:
        """Continue under another scenario from the next step on (a counterfactual branch).

        Raises:
            ValueError: The new scenario changes who is simulated (seed, population, network).
        """
        for name in BRANCH_FIXED_FIELDS:
            if getattr(scenario, name) != getattr(self.scenario, name):
                raise ValueError(f"{name} cannot change in a branch")
        self.memory_system.reconfigure(scenario.memory)
        self.scenario = scenario
        self.gateway.reconfigure(scenario.llm)
        self.protocol = resolve_protocol(scenario.protocol.mode, source="<branch>")
        self._custom = load_custom(scenario.interventions, source="<branch>")
        self.probe_steps = set(scenario.protocol.probe_steps())
        self.peer_answers = draw_peer_answers(scenario)
        prompts.check_overrides(scenario.prompts, source="<branch>")
        with prompts.overridden(scenario.prompts):
            for agent in self._by_node:
                agent.refresh_system_prompt()

    def topic_for(self, step: int) -> Topic:
        """The topic discussed at ``step`` (topics take turns)."""
        topics = self.scenario.topics
        return topics[(step - 1) % len(topics)]

    def probe_topics(self, step: int) -> list[Topic]:
        """The topics probed at ``step``, in scenario order (``protocol.probe_topics``).

        ``all``: every topic. ``discussed``: the topic of step ``step`` (just discussed) and
        of step ``step + 1`` (about to be discussed, only before the last step); at step 0
        only the first topic.
        """
        topics = self.scenario.topics
        return [topics[i] for i in self.scenario.protocol.probe_topic_indices(step, len(topics))]

    # -- running -----------------------------------------------------------------------------
    def gather(
        self, aws: Iterable[Awaitable[Any]], *, return_exceptions: bool = False
    ) -> list[Any]:
        """Run awaitables concurrently on the model's event loop; results in input order.

        Stopped (Ctrl-C, SIGTERM) before the loop has started them, the coroutines among
        ``aws`` are closed, so none is reported as "never awaited" after the stop's one line.
        """
        pending = list(aws)
        started = False

        async def gather() -> list[Any]:
            nonlocal started
            started = True
            return list(await asyncio.gather(*pending, return_exceptions=return_exceptions))

        try:
            return self._run(gather())
        finally:
            if not started:
                for aw in pending:
                    if inspect.iscoroutine(aw):
                        aw.close()

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the model's event loop, with Ctrl-C (and the ``simworld``
        command's SIGTERM) raised by the loop itself.

        Python raises ``KeyboardInterrupt`` wherever the main thread happens to be, and
        litellm's call path catches ``BaseException`` around what it awaits (and makes it a
        failed call, which is retried): a Ctrl-C landing there would be lost. So while the
        loop runs, SIGINT goes to the loop (:meth:`asyncio.loop.add_signal_handler`), which
        raises ``KeyboardInterrupt`` from a callback of its own, outside any call; so do
        SIGTERM and SIGHUP, as :class:`~simworld.support.process.Terminated`, when the
        process handles them with :func:`~simworld.support.process.raise_terminated` (the
        command does). Only in the main thread, and only for a signal whose handler is that
        one (Python's default for SIGINT): a program that installed its own keeps it. A
        signal the loop has read but not yet acted on when the work ends raises before this
        returns; a callback still queued once it has returned (a second signal right behind
        the first) does nothing.
        """
        loop = self._loop
        routed = []
        if threading.current_thread() is threading.main_thread():
            routed = [sig for sig, h in STOP_HANDLERS.items() if signal.getsignal(sig) is h]
        live = True

        def on_signal(sig: signal.Signals) -> None:
            if live:  # a callback still queued after this call ends does nothing
                raise stop_for(sig)

        try:
            for sig in routed:
                loop.add_signal_handler(sig, on_signal, sig)
            result = loop.run_until_complete(coro)
            if routed:  # a signal the loop took as the work ended raises now, not later
                loop.run_until_complete(_settled())
            return result
        finally:
            live = False
            if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED and not any(
                task.get_coro() is coro for task in asyncio.all_tasks(loop)
            ):  # stopped before the loop took it (a task of it :meth:`close` cancels)
                coro.close()
            for sig in routed:
                loop.remove_signal_handler(sig)
                # asyncio leaves SIG_DFL (SIGINT: Python's default)
                signal.signal(sig, STOP_HANDLERS[sig])

    def prepare(self) -> None:
        """Wait until the way of running model calls chosen from the run's plan can take
        them (the LLM worker processes of a large run, :meth:`Gateway.plan`), so the first
        step runs as fast as the others; idempotent, and done by :meth:`start`."""
        if not self._prepared:
            self._prepared = True
            self._run(self.gateway.ready())

    def start(self) -> None:
        """Probe the initial state (step 0) when configured; idempotent."""
        if self._started:
            return
        self.prepare()
        self._started = True
        with prompts.overridden(self.scenario.prompts):
            self._start()

    def _start(self) -> None:
        record = StepRecord(0)
        self.gateway.progress.begin_step(0)
        bfi = self._bfi_calls(0)
        self.gateway.progress.expect(self._probe_calls(0) + bfi)
        if 0 in self.probe_steps:
            self._probe(record)
        self._run_jobs(record, bfi_jobs(self, 0), announced=bfi)
        if record.events:
            self._finish(record)

    def step(self) -> None:
        """One step: the interventions due (:mod:`simworld.engine.interventions`), the
        interaction (the protocol's: conversations, or Asch trials in ``asch`` mode), stances
        and memory upkeep, then the probe if this step is a probe step.

        The scenario's ``prompts`` overrides are in effect throughout.

        Raises:
            RuntimeError: The model is closed, or its run is over (``running`` is false:
                ``protocol.steps`` steps are done, or the budget ran out).
        """
        if self._loop.is_closed():
            raise RuntimeError("the model is closed: build a new one to run again")
        if not self.running:
            why = f"stopped: {self.stopped_reason}" if self.stopped_reason else "its steps are done"
            raise RuntimeError(f"the run is over ({why}; model.running is False)")
        with prompts.overridden(self.scenario.prompts):
            self._step()

    def _step(self) -> None:
        self.start()
        step = self.steps
        record = StepRecord(step)
        self.gateway.progress.begin_step(step)
        for index, item in due(self.scenario.interventions, step):
            event = apply_intervention(self, item, index=index, custom=self._custom.get(index))
            record.events.append(event)
        bfi = self._bfi_calls(step)
        self.gateway.progress.expect(self._probe_calls(step) + bfi)
        topic = self.topic_for(step)
        self._announced = 0
        before = len(record.events)
        self.protocol.run(self, record, step, topic)
        if type(self.protocol).run is not Protocol.run:  # its own events, not discuss()'s
            self._check_events(record.events[before:])
        annotations, self._announced = self._announced, 0
        if self.policy is not None and self.scenario.trackers.stance:
            record.events.extend(self.policy.stance_events(record.events, step))
        self._run_jobs(record, annotation_jobs(self, record.events, step), announced=annotations)
        self._memory_phase(record, step)
        if self.policy is not None:
            self.policy.update(topic)
        if step in self.probe_steps:
            self._probe(record)
        self._run_jobs(record, bfi_jobs(self, step), announced=bfi)
        self._finish(record)
        if self.gateway.budget_exhausted:
            self.stopped_reason = RunStatus.BUDGET_EXHAUSTED
            self.running = False
        elif step >= self.scenario.protocol.steps:
            self.running = False

    def discuss(
        self, record: StepRecord, topic: Topic, step: int, conversations: list[list[Turn]]
    ) -> None:
        """Run conversations concurrently (each one's turns in order) and apply them in plan
        order: their ``conversation`` and ``message`` events go to ``record``.

        The speakers' behaviour hooks shape the plan first (:meth:`PersonaAgent.speaks`,
        :meth:`PersonaAgent.addressees`); a conversation left without turns is dropped. The
        progress bar is told of the speech calls and of the stance and judge calls to come
        (one per tracker per model-written message, as if every speech call succeeds).
        """
        self._check_plan(conversations)
        shaped = [self._shape(conv, topic, step) for conv in conversations]
        conversations = [conv for conv in shaped if conv]
        speeches = sum(not self._scripted(t.speaker) for conv in conversations for t in conv)
        trackers = self.scenario.trackers
        # an inline stance is reported in the speech call itself (simworld.engine.inline)
        annotations = speeches * (int(trackers.stance is True) + int(trackers.judge))
        self.gateway.progress.expect(speeches + annotations)
        self._announced += annotations
        results = self.gather(self._converse(conv, topic, step) for conv in conversations)
        for index, (conv, (outcomes, texts)) in enumerate(zip(conversations, results, strict=True)):
            self._log_conversation(record, conv, topic, step, index)
            self._apply(record, conv, outcomes, texts, topic, step)

    def _check_events(self, events: list[Any]) -> None:
        """Refuse events a protocol's own ``run()`` added that the transcript cannot hold
        (:func:`~simworld.support.events.event_problem`).

        Raises:
            PluginError: Naming the protocol and the first event that is not as expected.
        """
        for event in events:
            problem = event_problem(event)
            if problem is not None:
                name = protocol_name(self.protocol)
                raise PluginError(f"protocol {name!r}: its run() added {problem}")

    def _check_plan(self, conversations: object) -> None:
        """Refuse a plan that is not a list of conversations, each a list of :class:`Turn`.

        Raises:
            PluginError: Naming the protocol and the first thing that is not as expected.
        """
        wrong = None
        if not isinstance(conversations, list | tuple):
            wrong = f"a {type(conversations).__name__}"
        else:
            for conv in conversations:
                if not isinstance(conv, list | tuple):
                    wrong = f"a conversation that is a {type(conv).__name__}"
                    break
                turn = next((t for t in conv if not isinstance(t, Turn)), None)
                if turn is not None:
                    wrong = f"a turn that is a {type(turn).__name__}"
                    break
        if wrong is not None:
            raise PluginError(
                f"protocol {protocol_name(self.protocol)!r}: its plan gave {wrong}; expected a "
                "list of conversations, each a list of Turn"
            )

    def _shape(self, turns: list[Turn], topic: Topic, step: int) -> list[Turn]:
        """The turns whose speaker speaks, each to the listeners its speaker addresses.

        Raises:
            PluginError: The protocol gave a turn a prompt template that does not exist or a
                listener that is not the speaker's neighbour, or an agent's ``addressees``
                returned something other than a list, or someone who would not have heard
                the turn.
        """
        shaped = []
        for turn in turns:
            speaker = turn.speaker
            if turn.template not in prompts.templates():
                raise PluginError(
                    f"protocol {protocol_name(self.protocol)!r}: a turn of agent {speaker.key} "
                    f"uses prompt template {turn.template!r}, which prompts.yaml does not have"
                )
            far = [a.key for a in turn.listeners if not self.graph.has_edge(speaker.node, a.node)]
            if far:
                raise PluginError(
                    f"protocol {protocol_name(self.protocol)!r}: agent {speaker.key} speaks to "
                    f"{far[0]}, who is not its neighbour (messages travel only along edges)"
                )
            if speaker.baseline:
                shaped.append(turn)
                continue
            if not speaker.speaks(topic, step):
                continue
            chosen = speaker.addressees(list(turn.listeners), topic, step)
            if not isinstance(chosen, list | tuple):
                raise PluginError(
                    f"{type(speaker).__qualname__}.addressees returned "
                    f"{type(chosen).__name__}, not a list of the listeners it addresses"
                )
            strangers = [a for a in chosen if a not in turn.listeners]
            if strangers:
                who = getattr(strangers[0], "key", None) or repr(strangers[0])
                raise PluginError(
                    f"{type(speaker).__qualname__}.addressees: agent {speaker.key} addressed "
                    f"{who}, who is not a listener"
                )
            shaped.append(replace(turn, listeners=list(chosen)))
        return shaped

    def close(self) -> None:
        """Close the memories, cancel leftover tasks (litellm's logging worker), close the loop
        (and the cache :meth:`from_scenario` opened); idempotent."""
        try:
            self.memory_system.close()
        finally:  # the rest is released even when the memories could not be stored
            if self._owned_cache is not None:
                self._owned_cache.close()
                self._owned_cache = None
            if not self._loop.is_closed():
                pending = asyncio.all_tasks(self._loop)
                for task in pending:
                    task.cancel()
                if pending:
                    self.gather(pending, return_exceptions=True)
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
                self._loop.close()

    def _finish(self, record: StepRecord) -> None:
        self.gateway.check_failures()
        self._follow(record)
        record.events.append(
            {
                "type": EventType.STEP_END.value,
                "step": record.step,
                "calls": len(record.calls),
                "failures": sum(not c.ok for c in record.calls),
            }
        )
        self.trackers.observe_all(record.events)
        if self.policy is not None:
            self.policy.observe(record.events)
        self._collect(record.step)
        if self.on_step is not None:
            self.on_step(record)

    def _collect(self, step: int) -> None:
        """Let the data collector record under the probe's step: the baseline (step 0) keeps
        its own rows even when it runs inside the first :meth:`step` (where Mesa has already
        counted ``steps`` up to 1)."""
        counted, self.steps = self.steps, step
        try:
            self.datacollector.collect(self)
        finally:
            self.steps = counted

    def _run_jobs(self, record: StepRecord, jobs: list[Job], *, announced: int = 0) -> None:
        """Run tracker calls (stances, judges, BFI) concurrently; log them in job order.

        ``announced``: how many of them the progress bar was told of already (a forecast,
        corrected here).
        """
        self.gateway.progress.expect(len(jobs) - announced)
        if not jobs:
            return
        outcomes = self.gather(self.gateway.call(j.request, j.schema) for j in jobs)
        for job, outcome in zip(jobs, outcomes, strict=True):
            record.call(outcome)
            record.events.append(job.event(outcome))

    # -- conversations -----------------------------------------------------------------------
    async def _converse(
        self, turns: list[Turn], topic: Topic, step: int
    ) -> tuple[list[CallOutcome | Statement], list[str | None]]:
        """Run one conversation's turns in order; each speaker sees what reached it so far.

        A baseline agent's turn is its stated position, with no model call. Returns the
        outcomes and the messages' texts (after :meth:`PersonaAgent.postprocess`; None when
        the call failed or gave no text).
        """
        outcomes: list[CallOutcome | Statement] = []
        texts: list[str | None] = []
        for index, turn in enumerate(turns):
            if self._scripted(turn.speaker):
                statement = self.policy.statement(turn.speaker, topic)  # type: ignore[union-attr]
                outcomes.append(statement)
                texts.append(statement.text)
                continue
            heard = [
                (t.speaker.name, text or "")
                for t, o, text in zip(turns, outcomes, texts, strict=False)
                if o.ok and (turn.speaker in t.listeners or t.speaker is turn.speaker)
            ]
            request = turn.speaker.speech_request(
                turn.template, topic, step=step, index=index, heard=heard, **turn.fields
            )
            schema = turn.speaker.speech_schema(topic)
            outcome = await self.gateway.call(request, schema)
            outcomes.append(outcome)
            raw = _said(outcome) if outcome.ok else None
            texts.append(None if raw is None else self._postprocess(turn.speaker, raw, topic, step))
        return outcomes, texts

    @staticmethod
    def _postprocess(speaker: PersonaAgent, raw: str, topic: Topic, step: int) -> str:
        """The message ``speaker`` says (:meth:`PersonaAgent.postprocess` of the model's text).

        Raises:
            PluginError: ``postprocess`` returned something other than text.
        """
        text = speaker.postprocess(raw, topic, step)
        if not isinstance(text, str):
            raise PluginError(
                f"{type(speaker).__qualname__}.postprocess returned {type(text).__name__}, "
                "not the message text (str)"
            )
        return text

    def _log_conversation(
        self, record: StepRecord, turns: list[Turn], topic: Topic, step: int, index: int
    ) -> None:
        """Log who takes part in a pair or group conversation (discussion blocks, §1)."""
        if not self.protocol.logs_conversations:
            return
        members = list(dict.fromkeys(t.speaker.key for t in turns))
        record.events.append(
            {
                "type": EventType.CONVERSATION.value,
                "step": step,
                "index": index,
                "topic": topic.id,
                "mode": protocol_name(self.protocol),
                "members": members,
            }
        )

    def _apply(
        self,
        record: StepRecord,
        turns: list[Turn],
        outcomes: list[CallOutcome | Statement],
        texts: list[str | None],
        topic: Topic,
        step: int,
    ) -> None:
        for index, (turn, outcome, text) in enumerate(zip(turns, outcomes, texts, strict=True)):
            if isinstance(outcome, CallOutcome):
                record.call(outcome)
            if not outcome.ok or text is None:
                continue
            speaker = turn.speaker
            self._follow(record)
            message: Event = {
                "type": EventType.MESSAGE.value,
                "step": step,
                "agent": speaker.key,
                "to": self.recipients.compact(speaker.key, [a.key for a in turn.listeners]),
                "topic": topic.id,
                "mode": protocol_name(self.protocol),
                "turn": index,
                "text": text,
            }
            record.events.append(message)
            if isinstance(outcome, CallOutcome) and speaker.speech_schema(topic) is not None:
                record.events.append(stance_event(message, topic, outcome))
            heard = [(listener, "observation") for listener in turn.listeners]
            for agent, kind in [(speaker, "own_message"), *heard]:
                agent.remember(
                    step=step, kind=kind, speaker=speaker.name, topic=topic.id, text=text
                )

    def _follow(self, record: StepRecord) -> None:
        """Let :attr:`recipients` see the events ``record`` gained since it last looked (the
        interventions' edge changes), so a message's compact ``to`` means what a reader of
        the transcript will take it to mean."""
        last, seen = self._followed
        if last is not record:
            seen = 0
        for event in record.events[seen:]:
            self.recipients.observe(event)
        self._followed = (record, len(record.events))

    # -- memory ------------------------------------------------------------------------------
    def _memory_phase(self, record: StepRecord, step: int) -> None:
        """Let every agent tend its memory (rate, forget, reflect) concurrently; apply in order."""
        results = self.gather(agent.memory_step(step) for agent in self.active_agents())
        for calls, events in results:
            for outcome in calls:
                record.call(outcome)
            record.events.extend(events)

    def _scripted(self, agent: PersonaAgent) -> bool:
        """Whether ``agent`` speaks by the baseline rule (no model call)."""
        return self.policy is not None and agent.baseline

    # -- probes ------------------------------------------------------------------------------
    def _probe_calls(self, step: int) -> int:
        """How many model calls the probe at ``step`` makes (announced for the progress bar
        when the step starts)."""
        if step not in self.probe_steps:
            return 0
        agents = sum(not agent.baseline for agent in self.active_agents())
        topics = len(self.probe_topics(step))
        if self.scenario.protocol.probe_batch:  # one call per agent (simworld.engine.probe_batch)
            topics = min(topics, 1)
        return agents * topics

    def _bfi_calls(self, step: int) -> int:
        """How many BFI administrations are due at ``step`` (see :func:`bfi_jobs`)."""
        config = self.scenario.trackers.bfi
        return len(self.active_agents()) if config is not None and step in config.steps else 0

    def _probe(self, record: StepRecord) -> None:
        """Ask every agent privately about the probed topics; nothing enters memory.

        A counterbalanced probe's answer (and option probabilities) are mapped back from
        the code shown to the topic's own value; its row also records the order shown,
        the code answered and its position (:mod:`simworld.engine.counterbalance`). With
        ``protocol.probe_batch`` an agent asked about several topics answers them in one
        call (:mod:`simworld.engine.probe_batch`).
        """
        topics = self.probe_topics(record.step)
        batch = self.scenario.protocol.probe_batch and len(topics) > 1
        # (agent, [(topic, order, field)], request, schema): one call per topic, or per agent
        jobs: list[tuple[PersonaAgent, list[tuple[Topic, ShownOrder, str | None]], Any, Any]] = []
        for agent in self.active_agents():
            if batch and not agent.baseline:
                request, schema, orders = batch_request(agent, topics, step=record.step)
                items: list[tuple[Topic, ShownOrder, str | None]] = [
                    (t, o, item_field(i))
                    for i, (t, o) in enumerate(zip(topics, orders, strict=True))
                ]
                jobs.append((agent, items, request, schema))
                continue
            for topic in topics:
                request, schema, order = agent.probe_request(topic, step=record.step)
                jobs.append((agent, [(topic, order, None)], request, schema))
        # sent in the order of probe_order (what repeats in an agent's consecutive prompts),
        # recorded in plan order
        rank = self.probe_order(record.step)
        first: dict[int, int] = {}  # an agent's jobs are consecutive: the index of its first
        for i, job in enumerate(jobs):
            first.setdefault(id(job[0]), i)
        sent = sorted(
            (i for i, job in enumerate(jobs) if not job[0].baseline),
            key=lambda i: (first[id(jobs[i][0])], rank[jobs[i][1][0][0].id]),
        )
        outcomes = self.gather(self.gateway.call(*jobs[i][2:]) for i in sent)
        answers = dict(zip(sent, outcomes, strict=True))
        for i, (agent, items, _, _) in enumerate(jobs):
            if self.policy is not None and agent.baseline:
                for topic, _, _ in items:
                    row = self.policy.probe_row(agent, topic, record.step)
                    self._keep(row)
                    record.events.append({"type": EventType.PROBE.value, **row})
                continue
            outcome = answers[i]
            record.call(outcome)
            for topic, order, field_name in items:
                row = self._probe_row(record.step, agent, topic, order, outcome, field_name)
                self._keep(row)
                record.events.append({"type": EventType.PROBE.value, **row})

    def probe_order(self, step: int) -> dict[str, int]:
        """The order an agent's probe calls of ``step`` are sent in, as a rank per topic id.

        The topic just discussed comes first (its prompt repeats most of the agent's post of
        this step), the topic to be discussed next last (the agent's next post repeats most
        of its prompt), the others between them in scenario order. Answers do not depend on
        the order (each is a function of its own request); a provider's prefix cache does.
        """
        ranks = {t.id: 1 for t in self.scenario.topics}
        ranks[self.topic_for(step + 1).id] = 2
        if step >= 1:
            ranks[self.topic_for(step).id] = 0
        return ranks

    def _probe_row(
        self,
        step: int,
        agent: PersonaAgent,
        topic: Topic,
        order: ShownOrder,
        outcome: CallOutcome,
        field_name: str | None,
    ) -> dict[str, Any]:
        """One probe row: the answer of ``field_name`` (a batched probe) or ``answer``."""
        key = field_name or "answer"
        code = outcome.parsed[key] if outcome.ok and outcome.parsed else None
        answer = None if code is None else order.original(code)
        probs = outcome.extra.get("option_probs") if outcome.ok and field_name is None else None
        if probs is not None:
            probs = order.original_probs(probs)
        row = {
            "step": step,
            "agent": agent.key,
            "topic": topic.id,
            "value": float(answer) if answer is not None and topic.ordinal else None,
            "answer": answer,
            "raw": outcome.text,
            "ok": outcome.ok,
            "call": outcome.key,
            "probs": None if probs is None else canonical_json(probs),
            "expected": (
                expected_value({int(k): p for k, p in probs.items()})
                if probs and topic.ordinal
                else None
            ),
        }
        if self.scenario.protocol.counterbalance:
            row |= {
                "order": order.text,
                "shown_answer": None if code is None else str(code),
                "position": None if code is None else order.position(code),
            }
        return row

    def _keep(self, row: dict[str, Any]) -> None:
        """Keep a probe row for ``opinions.parquet`` and :meth:`latest_answers`."""
        self.opinions.append(row)
        answers = self._answers.setdefault(row["topic"], {}).setdefault(row["step"], {})
        answers[row["agent"]] = row["answer"]


@dataclass(frozen=True)
class Plugins:
    """What a scenario's plug-in fields resolve to (:func:`resolve_plugins`)."""

    agent_class: type[PersonaAgent]
    protocol: Protocol
    interventions: dict[int, UserIntervention]
    """The custom interventions, by index in ``interventions``."""
    trackers: TrackerSet


def resolve_plugins(
    scenario: Scenario, source: str | Path, agent_class: type[PersonaAgent] | None = None
) -> Plugins:
    """Resolve every plug-in and name a scenario gives: the agent class, prompt overrides,
    ``protocol.mode``, custom interventions and extra trackers. Building a model does this;
    a sweep does it for each run before any starts.

    Args:
        scenario: The scenario.
        source: Where it came from, for errors.
        agent_class: The agents' class, instead of ``population.agent_class``'s.

    Raises:
        ConfigError: One of them cannot be used, naming ``source`` and its field.
    """
    if agent_class is None:
        spec = scenario.population.agent_class
        agent_class = PersonaAgent if spec is None else agent_class_from(spec, source=source)
    prompts.check_overrides(scenario.prompts, source=source)
    return Plugins(
        agent_class=agent_class,
        protocol=resolve_protocol(scenario.protocol.mode, source=source),
        interventions=load_custom(scenario.interventions, source=source),
        trackers=TrackerSet(scenario, source=source),
    )


def planned_calls_per_step(scenario: Scenario) -> int:
    """Model calls of the busiest step of a run of ``scenario``, from the scenario alone (an
    upper estimate: every agent model-driven, every speech call answered; BFI and memory
    upkeep calls left out)."""
    n, proto, trackers = scenario.population.size, scenario.protocol, scenario.trackers
    topics = len(scenario.topics)
    turns = {"broadcast": n, "pairs": 2 * (n // 2), "group": proto.rounds * n}
    if proto.mode == "asch":  # a structured answer per agent and topic, no messages
        speech = n * topics
        annotations = 0
    else:
        speech = turns.get(proto.mode, n)  # a user protocol: taken as one turn each
        annotations = speech * (int(trackers.stance is True) + int(trackers.judge))
    probed = [len(proto.probe_topic_indices(s, topics)) for s in proto.probe_steps()]
    per_agent = max(probed, default=0)
    if proto.probe_batch:
        per_agent = min(per_agent, 1)
    return speech + annotations + n * per_agent


def _said(outcome: CallOutcome | Statement) -> str | None:
    """The text a turn said: a baseline statement's, or a speech call's (its ``message``
    with ``trackers.stance: inline``)."""
    return message_text(outcome) if isinstance(outcome, CallOutcome) else outcome.text


def _graph_warnings(scenario: Scenario, graph: nx.Graph, source: str | Path) -> list[str]:
    """Warnings about the graph (isolated agents); an edge list that connects no one is
    refused where messages travel only along edges.

    Raises:
        ConfigError: An edge list without a single edge in ``broadcast`` or ``pairs`` mode.
    """
    network = scenario.network
    if (
        isinstance(network, EdgeListNetwork)
        and graph.number_of_edges() == 0
        and scenario.protocol.mode in ("broadcast", "pairs")
        and graph.number_of_nodes() > 1
    ):
        raise ConfigError(
            source,
            "network.path",
            f"the edge list connects no two agents; in {scenario.protocol.mode} mode "
            "messages travel only along edges",
        )
    warning = isolation_warning(graph, network)
    return [] if warning is None else [warning]


def _check_removals(scenario: Scenario, ids: set[str], source: str | Path) -> None:
    """Every agent a removal names is in the population (one clear error otherwise)."""
    for i, item in enumerate(scenario.interventions):
        if isinstance(item, Removal) and item.agents is not None:
            unknown = [a for a in item.agents if a not in ids]
            if unknown:
                raise ConfigError(
                    source,
                    f"interventions[{i}].agents",
                    f"no agent {unknown[0]!r} in the population",
                )
