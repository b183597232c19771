"""What one chat completion may cost at most, before it is made: the quote a run's budget reserves.

A call's worst case is its prompt (counted with litellm's ``token_counter`` for the model)
plus the most it may answer: the call's own ``max_tokens`` (or ``max_completion_tokens``),
else the model's output limit from litellm's model map. That is priced with litellm's cost
map (``cost_per_token``). Either half may be unknown: a model missing from the map has no
price and, without ``max_tokens``, no output limit; the budget decides what that means.

These functions take the litellm module as an argument: they run where litellm is imported
(the provider's child process), never in the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens")
"""The litellm parameters that cap a reply's tokens, the first one given wins."""


@dataclass(slots=True)
class Quote:
    """A call's worst case: ``output_tokens`` None when nothing bounds the reply, the prices
    None when litellm has no price for the model."""

    model: str
    prompt_tokens: int
    output_tokens: int | None
    cost_usd: float | None
    """The worst case's price (prompt plus every output token allowed); None when unknown."""
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None

    def price(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """What a call with this usage costs at this quote's prices (None: unpriced)."""
        if self.input_cost_per_token is None or self.output_cost_per_token is None:
            return None
        return prompt_tokens * self.input_cost_per_token + completion_tokens * self.output_cost_per_token


def quote(litellm: ModuleType, model: str, messages: list[dict[str, Any]], parameters: dict[str, Any]) -> Quote:
    """The worst case of one call of ``model`` with these messages and litellm parameters."""
    prompt = int(litellm.token_counter(model=model, messages=messages))
    info = _model_info(litellm, model)
    output = next((int(parameters[name]) for name in OUTPUT_LIMITS if parameters.get(name)), None)
    if output is None and info.get("max_output_tokens"):
        output = int(info["max_output_tokens"])
    unit_in, unit_out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    cost = None
    if output is not None:
        try:
            cost = float(sum(litellm.cost_per_token(model=model, prompt_tokens=prompt, completion_tokens=output)))
        except Exception:  # litellm raises for every model missing from its price map
            cost = None
    priced = cost is not None and unit_in is not None and unit_out is not None
    return Quote(
        model=model,
        prompt_tokens=prompt,
        output_tokens=output,
        cost_usd=cost,
        input_cost_per_token=float(unit_in) if priced else None,
        output_cost_per_token=float(unit_out) if priced else None,
    )


def _model_info(litellm: ModuleType, model: str) -> dict[str, Any]:
    try:
        return dict(litellm.get_model_info(model))
    except Exception:  # not in the map: no limit and no price known
        return {}
