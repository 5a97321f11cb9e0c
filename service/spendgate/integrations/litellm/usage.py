"""Token usage for Spendgate's usage pricing (SPENDGATE_LITELLM_PRICING=spendgate), from LiteLLM's values.

At authorize: the prompt's tokens (LiteLLM's `token_counter`) and the request's `max_tokens` /
`max_completion_tokens` (0 when absent: only the prompt is estimated, as with LiteLLM pricing).
At record: what LiteLLM logged for the call in `kwargs["standard_logging_object"]` (LiteLLM
1.108.7, `StandardLoggingPayload`): `prompt_tokens`, `completion_tokens`, and inside
`metadata.usage_object` (the provider's `Usage`) `prompt_tokens_details.cached_tokens` and
`completion_tokens_details.reasoning_tokens` — parts of the two totals, as Spendgate counts them.
No litellm import here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["authorize_usage", "max_output_tokens", "recorded_usage"]

#: Spendgate's largest token count per usage field (spendgate.pricing.usage.MAX_TOKENS).
_MAX_TOKENS = 1_000_000_000


def _count(value: object) -> int | None:
    """A whole, in-range token count, or None."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TOKENS:
        return None
    return value


def max_output_tokens(data: Mapping[str, Any]) -> int:
    """The request's output bound (`max_tokens`, else `max_completion_tokens`); 0 when it has none."""
    for name in ("max_tokens", "max_completion_tokens"):
        found = _count(data.get(name))
        if found:
            return found
    return 0


def authorize_usage(*, input_tokens: int, max_tokens: int) -> dict[str, int] | None:
    """Authorize's `usage`; None when a count is out of Spendgate's range (then LiteLLM's estimate is sent)."""
    counted, bound = _count(input_tokens), _count(max_tokens)
    if counted is None or bound is None:
        return None
    return {"input_tokens": counted, "max_output_tokens": bound}


def _detail(usage_object: object, details: str, field: str) -> int:
    if not isinstance(usage_object, Mapping):
        return 0
    part = usage_object.get(details)
    return (_count(part.get(field)) or 0) if isinstance(part, Mapping) else 0


def recorded_usage(logged: object) -> dict[str, int] | None:
    """Record's `usage` from a `standard_logging_object`; None when LiteLLM logged no usable usage
    (no counts, both 0, or a cache hit: nothing was bought, LiteLLM's cost of 0 is right)."""
    if not isinstance(logged, Mapping) or logged.get("cache_hit"):
        return None
    prompt, completion = _count(logged.get("prompt_tokens")), _count(logged.get("completion_tokens"))
    if prompt is None or completion is None or prompt + completion == 0:
        return None
    metadata = logged.get("metadata")
    usage_object = metadata.get("usage_object") if isinstance(metadata, Mapping) else None
    return {
        "input_tokens": prompt,
        "output_tokens": completion,
        # A provider may report parts larger than their totals; Spendgate refuses that, so clamp.
        "cached_input_tokens": min(_detail(usage_object, "prompt_tokens_details", "cached_tokens"), prompt),
        "reasoning_tokens": min(_detail(usage_object, "completion_tokens_details", "reasoning_tokens"), completion),
    }
