"""The ``Run`` handle a ``%%clarion`` cell leaves in ``_``: the run's state, its controls, its view.

A Run follows its run's events on the background loop from the moment something needs them
(its widget, :meth:`Run.wait`); the same :class:`~.state.RunState` feeds the widget, the
``wait`` calls, the handle's ``.status``, ``.outputs`` and ``.steps`` (no request while the
follower holds the run) and the static renderings. Reconnecting is the client's job (the
client resumes a dropped stream from the last ``seq`` it delivered, so nothing is missed or
counted twice); when it gives up, the widget says the run's stream was lost.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any

from ..core.errors import ClarionError
from ..core.protocol import RunStatus
from ..storage.records import Event
from ..workflow.models import StepRun, Workflow, WorkflowRun
from ..workflow.rerun import model_overrides
from .comparison import Comparison
from .state import RunState
from .widgets import TICK_S, UPDATE_INTERVAL_S, AgentWidget, RunWidget, Throttle

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger(__name__)


class Run:
    """A handle on one run: ``.status``, ``.outputs``, ``.steps``, ``.wait()``, ``await
    .wait_async()``, ``.cancel()``, ``.approve(step)``, ``.reject(step, comment=)``,
    ``.events()``, ``.to_dataframe()``; displayed, it is its live widget."""

    def __init__(self, session: Session, run_id: str, *, workflow: Workflow | None = None, agent: bool = False) -> None:
        self.session = session
        self.run_id = run_id
        where = str(session.where or "")
        self.state = (
            RunState.for_workflow(run_id, workflow, where) if workflow is not None else RunState(run_id, where=where)
        )
        self._agent = agent
        self._widget: RunWidget | None = None
        self._follower: asyncio.Future[None] | None = None
        self._changed: asyncio.Event | None = None
        self._throttle: Throttle | None = None
        self._last_doc: WorkflowRun | None = None
        self._ended = False
        """The follower stopped: the run ended, or its events could not be read any more."""

    # -- the run document -------------------------------------------------------------

    @property
    def workflow_id(self) -> str:
        return self.state.workflow_id or self.document().workflow_id

    def document(self) -> WorkflowRun:
        """The run document: the one the events built while the follower holds the run (or
        once it ended), else fetched."""
        followed = self._follower is not None and not self._ended
        held = self.state.document() if followed or self.state.status.terminal else None
        if held is not None:
            return held
        if self._last_doc is None or not self._last_doc.status.terminal:
            self._last_doc = self.session.loop.run(self.session.clarion().get_run(self.run_id))
            self.state.load(self._last_doc)
        return self._last_doc

    @property
    def status(self) -> RunStatus:
        return self.document().status

    @property
    def outputs(self) -> dict[str, Any] | None:
        return self.document().outputs

    @property
    def error(self) -> dict[str, Any] | None:
        return self.document().error

    @property
    def steps(self) -> list[StepRun]:
        return self.document().steps

    def events(self) -> list[dict[str, Any]]:
        return [event.as_dict() for event in self.session.loop.run(self.session.clarion().events(self.run_id))]

    def to_dataframe(self) -> Any:
        """The steps as a pandas DataFrame (one row per step execution)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_dataframe() needs pandas: pip install pandas") from None
        return pd.DataFrame([step.model_dump(mode="json") for step in self.steps])

    # -- controls --------------------------------------------------------------------

    def cancel(self) -> None:
        self.session.loop.run(self.session.clarion().cancel(self.run_id))

    def approve(self, step: str, comment: str | None = None) -> None:
        self.session.loop.run(self.session.clarion().approve(self.run_id, step, comment=comment))

    def reject(self, step: str, comment: str | None = None) -> None:
        self.session.loop.run(self.session.clarion().reject(self.run_id, step, comment=comment))

    def wait(self, timeout: float | None = None, *, until: str = "end") -> Run:
        """Block until the run ends, or with ``until="decision"`` until it ends or waits for a
        person's decision (the kernel's interrupt stops waiting, not the run)."""
        if until not in ("end", "decision"):
            raise ValueError(f"until must be 'end' or 'decision', not {until!r}")
        self.session.loop.run(self._settled(stop_on_waiting=until == "decision"), timeout)
        return self

    async def wait_async(self) -> Run:
        """``await run.wait_async()`` from a cell: waits on the kernel's loop without blocking it."""
        await asyncio.wrap_future(self.session.loop.submit(self._settled(stop_on_waiting=False)))
        return self

    # -- following -------------------------------------------------------------------

    @property
    def widget(self) -> RunWidget:
        if self._widget is None:
            self._widget = (AgentWidget if self._agent else RunWidget)(self.state, self)
            self._follow()
        return self._widget

    def _follow(self) -> None:
        if self._follower is None:
            self._follower = self.session.loop.submit(self._run_follower())

    async def _settled(self, stop_on_waiting: bool, announce_waiting: bool = False) -> None:
        """Until the run ended (or, with ``stop_on_waiting``, waits for a person); with
        ``announce_waiting``, says once per decision asked for where to take it."""
        self._follow()
        announced: set[str] = set()
        while True:
            if (
                self._ended
                or self.state.status.terminal
                or (stop_on_waiting and self.state.status == RunStatus.waiting)
            ):
                if self._throttle is not None:
                    self._throttle.now()  # the widget shows the state the wait returns on
                return
            if self.state.status == RunStatus.waiting:
                keys = [row.key for row in self.state.waiting if row.key not in announced]
                if announce_waiting and keys:
                    announced.update(keys)
                    print(f"Run {self.run_id} waits for your decision on {', '.join(keys)}: use the buttons, "
                          "the sidebar or `clarion approve`; this cell goes on once it is taken "
                          "(interrupt it to cancel the run).", file=sys.stderr)  # fmt: skip
            changed = self._change_event()
            await changed.wait()
            changed.clear()

    def _change_event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    async def _run_follower(self) -> None:
        loop = asyncio.get_running_loop()
        self._throttle = Throttle(loop, self._flush, UPDATE_INTERVAL_S)
        clarion = self.session.clarion()
        changed = self._change_event()
        try:
            if self.state.last_seq == 0 and not self.state.workflow_name:
                self.state.load(await clarion.get_run(self.run_id))
            if not self.state.status.terminal:
                async for event in clarion.subscribe(self.run_id, self.state.last_seq):
                    self._apply(event)
                    changed.set()
        except ClarionError as exc:  # the client gave up reconnecting
            self.state.where = f"{self.state.where} (stream lost: {exc.message})"
        except Exception as exc:  # a task on the background loop: nothing else would see it, and the cell would wait on
            log.exception("following run %s failed", self.run_id)
            self.state.where = f"{self.state.where} (stream lost: {exc})"
        self._ended = True
        changed.set()
        self._throttle.now()

    def _apply(self, event: Event) -> None:
        if self.state.apply(event) and self._widget is not None and self._throttle is not None:
            if event.terminal:
                self._throttle.now()
            else:
                self._throttle.poke()

    def refresh(self) -> None:
        """Bring the widget up to the state now, without waiting for the next coalesced update."""
        self.session.loop.run(self._refresh_now())

    async def _refresh_now(self) -> None:
        if self._throttle is not None:
            self._throttle.now()

    def _flush(self) -> None:
        if self._widget is None:
            return
        self._widget.refresh()
        if not self._ended and not self.state.status.terminal and self._throttle is not None:
            self._throttle.poke(TICK_S)  # times tick while the run is live, and stop when it ends

    # -- display ---------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return self.widget._repr_mimebundle_(**kwargs)

    def _repr_html_(self) -> str:
        return self.state.to_html()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.state.to_text())

    def __repr__(self) -> str:
        return f"<Run {self.run_id} {self.state.status.value}>"

    # -- iterating -------------------------------------------------------------------

    def rerun(
        self,
        from_step: str | None = None,
        inputs: dict[str, Any] | None = None,
        model: str | None = None,
        agent: str | None = None,
        overrides: dict[str, Any] | None = None,
        budget: dict[str, Any] | None = None,
        cache: bool | None = None,
    ) -> Run:
        """Run this (finished) run again with changes; the steps no change reaches are copied.
        ``model`` gives ``agent`` (every agent of the workflow, when None) another model;
        ``budget`` (``{usd, tokens, unpriced}``) replaces fields of the parent's budget;
        ``cache`` answers the new run's LLM calls from the LLM cache (or, False, never)."""
        if model is not None:
            by_model = model_overrides(self.document().workflow or {}, model, agent)["agents"]
            overrides = {**(overrides or {}), "agents": {**(overrides or {}).get("agents", {}), **by_model}}
        clarion = self.session.clarion()
        run = self.session.loop.run(
            clarion.rerun(
                self.run_id, from_step=from_step, inputs=inputs, overrides=overrides, budget=budget, cache=cache
            )
        )
        return Run(self.session, run.run_id)

    def compare(self, *others: Run | str) -> Comparison:
        """This run beside ``others`` (Runs or run ids), step by step; displayed, a widget."""
        ids = [self.run_id, *(o.run_id if isinstance(o, Run) else o for o in others)]
        return Comparison(self.session.loop.run(self.session.clarion().compare_runs(ids)))
