"""AgentService: agent CRUD and import, over an :class:`~..storage.protocols.AgentStore`."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..core.errors import NotFound, Problem, ValidationFailed
from ..core.secrets import SECRET_IN_DOCUMENT, SecretMasker, SecretPolicy
from ..storage.protocols import AgentStore
from .models import Agent


def validate_agent(doc: dict[str, Any] | Agent) -> Agent:
    if isinstance(doc, Agent):
        return doc
    try:
        return Agent.model_validate(doc)
    except ValidationError as exc:
        problems = [
            Problem(
                loc=".".join(map(str, e["loc"])) or "agent",
                message=e["msg"],
                field=".".join(map(str, e["loc"])) or None,
            )
            for e in exc.errors()
        ]
        raise ValidationFailed(problems, what="agent") from None


def check_secrets(agent: Agent, policy: SecretPolicy) -> None:
    """An agent chooses where its key is sent (``api_base``), so only variables that hold
    secrets by name may be its key: never ``HOME`` or a database URL. And no field may hold
    a secret's value: the document is stored, shown and sent to the model as written."""
    if agent.api_key_env is not None and not policy.allows(agent.api_key_env):
        message = policy.refusal(agent.api_key_env)
        raise ValidationFailed([Problem(loc="api_key_env", message=message, field="api_key_env")], what="agent")
    if found := SecretMasker(policy).locate(agent.model_dump(mode="json")):
        problems = []
        for path, name in found:
            field = ".".join(map(str, path)) or "agent"
            problems.append(Problem(loc=field, message=SECRET_IN_DOCUMENT.format(name=name), field=field))
        raise ValidationFailed(problems, what="agent")


class AgentService:
    """Agents validated on every write (secrets' values refused, names unique), so every door stores them alike."""

    def __init__(self, store: AgentStore, secrets: SecretPolicy | None = None) -> None:
        self._store = store
        self._cache: dict[str, dict[str, Any]] = {}
        self.secrets = secrets or SecretPolicy()
        """Which names ``api_key_env`` may have; the server sets it from its configuration."""

    async def list(self) -> list[Agent]:
        return [Agent.model_validate(d.doc) for d in await self._store.list()]

    async def get(self, agent_id: str) -> Agent:
        stored = await self._store.get(agent_id)
        if stored is None:
            raise NotFound(f"agent '{agent_id}' not found", details={"id": agent_id})
        return Agent.model_validate(stored.doc)

    async def create(self, doc: dict[str, Any] | Agent) -> Agent:
        agent = validate_agent(doc)
        check_secrets(agent, self.secrets)
        await self._store.create(agent.id, agent.model_dump(mode="json"))
        self._cache.pop(agent.id, None)
        return agent

    async def replace(self, agent_id: str, doc: dict[str, Any] | Agent) -> Agent:
        data = doc.model_dump(mode="json") if isinstance(doc, Agent) else dict(doc)
        data["id"] = agent_id
        agent = validate_agent(data)
        check_secrets(agent, self.secrets)
        if await self._store.get(agent_id) is None:
            raise NotFound(f"agent '{agent_id}' not found", details={"id": agent_id})
        await self._store.replace(agent_id, agent.model_dump(mode="json"))
        self._cache.pop(agent_id, None)
        return agent

    async def upsert(self, agent: Agent) -> Agent:
        check_secrets(agent, self.secrets)
        await self._store.replace(agent.id, agent.model_dump(mode="json"))
        self._cache.pop(agent.id, None)
        return agent

    async def upsert_many(self, agents: list[Agent]) -> None:
        """Create or replace several agents at once (an import), in one transaction; every one
        must pass the ``api_key_env`` policy, or none is saved."""
        for agent in agents:
            check_secrets(agent, self.secrets)
        await self._store.replace_many({agent.id: agent.model_dump(mode="json") for agent in agents})
        for agent in agents:
            self._cache.pop(agent.id, None)

    async def delete(self, agent_id: str) -> None:
        if not await self._store.delete(agent_id):
            raise NotFound(f"agent '{agent_id}' not found", details={"id": agent_id})
        self._cache.pop(agent_id, None)

    async def resolve(self, agent_id: str) -> dict[str, Any] | None:
        """The agent document a worker needs, cached: many steps use the same agent."""
        if agent_id not in self._cache:
            stored = await self._store.get(agent_id)
            if stored is None:
                return None
            self._cache[agent_id] = stored.doc
        return self._cache[agent_id]
