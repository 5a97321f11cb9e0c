"""The LiteLLM integration's settings: read from the LiteLLM proxy's environment, in this one place.

    SPENDGATE_URL             where Spendgate answers, e.g. http://spendgate:8080 (required)
    SPENDGATE_GATEWAY_TOKEN   the service's gateway token (required)
    SPENDGATE_FAIL_OPEN       true: when Spendgate cannot be reached, let calls through (and record
                              them afterwards if it is back); default false: refuse them with 503
    SPENDGATE_LITELLM_KEYS    "spendgate" (default): callers use Spendgate keys, checked by
                              Spendgate; "litellm": LiteLLM authenticates its own keys and the
                              callback sends the identity it resolved as a `principal`
    SPENDGATE_LITELLM_PRICING "spendgate" (default): send token usage, priced by Spendgate's price
                              table and adjustments (LiteLLM's cost for a model the table lacks);
                              "litellm": send LiteLLM's own cost (`cost_per_token`, `response_cost`)
    SPENDGATE_TIMEOUT         seconds per attempt at Spendgate (default 2.0)
    SPENDGATE_RETRIES         retries after the first attempt (default 2)
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["LiteLLMSettings", "VARIABLES"]


class LiteLLMSettings(BaseSettings):
    """The integration's configuration. Only the variables listed in the module docstring are read."""

    model_config = SettingsConfigDict(env_prefix="SPENDGATE_", extra="ignore", frozen=True)

    url: str = Field(min_length=1)
    gateway_token: SecretStr
    fail_open: bool = False
    litellm_keys: Literal["spendgate", "litellm"] = "spendgate"
    litellm_pricing: Literal["spendgate", "litellm"] = "spendgate"
    timeout: float = Field(default=2.0, gt=0)
    retries: int = Field(default=2, ge=0, le=10)


#: The environment variables this integration reads (docs/litellm.md lists each).
VARIABLES = tuple(f"SPENDGATE_{name.upper()}" for name in LiteLLMSettings.model_fields)
