"""Token usage in request bodies: an estimate on authorize, the real usage on record."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["MAX_TOKENS", "AuthorizeUsage", "RecordUsage"]

#: Largest token count per field: the pricing policy's integer arithmetic is exact up to it (pricing.rego).
MAX_TOKENS = 1_000_000_000

_TOKENS = Field(ge=0, le=MAX_TOKENS, strict=True)
_OPTIONAL_TOKENS = Field(default=0, ge=0, le=MAX_TOKENS, strict=True)


class AuthorizeUsage(BaseModel):
    """What the request may use: priced as input_tokens of input and max_output_tokens of output."""

    model_config = ConfigDict(extra="forbid")

    input_tokens: int = _TOKENS
    max_output_tokens: int = _OPTIONAL_TOKENS

    def pricing_usage(self) -> dict[str, Any]:
        """The usage document the pricing policy reads (policies/INTERFACE.md, "Pricing")."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.max_output_tokens,
            "cached_input_tokens": 0,
            "reasoning_tokens": 0,
        }


class RecordUsage(BaseModel):
    """What the request used. Cached input tokens are part of input_tokens, reasoning tokens part of
    output_tokens (as OpenAI's prompt_tokens / completion_tokens count them)."""

    model_config = ConfigDict(extra="forbid")

    input_tokens: int = _TOKENS
    output_tokens: int = _TOKENS
    cached_input_tokens: int = _OPTIONAL_TOKENS
    reasoning_tokens: int = _OPTIONAL_TOKENS

    @model_validator(mode="after")
    def _parts_within_totals(self) -> RecordUsage:
        if self.cached_input_tokens > self.input_tokens:
            raise ValueError("cached_input_tokens is part of input_tokens, so it cannot be larger")
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError("reasoning_tokens is part of output_tokens, so it cannot be larger")
        return self

    def pricing_usage(self) -> dict[str, Any]:
        return self.model_dump()
