"""The LiteLLM proxy side: the callback for `litellm_settings.callbacks` and the `custom_auth` function.

    litellm_settings:
      callbacks: ["spendgate.integrations.litellm.proxy.callback"]
    general_settings:
      custom_auth: spendgate.integrations.litellm.proxy.custom_auth   # Spendgate keys mode only

This module imports litellm (it subclasses `CustomLogger`); the rest of the package does not.
Settings are read from the environment on the first request (settings.py), so importing this
module never fails on a missing variable; a missing one refuses calls with 503 and logs which.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

import litellm
from fastapi import HTTPException, Request
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import UserAPIKeyAuth
from pydantic import ValidationError

from .calls import TICKET_KEY, Identity, Ticket, attribution_of, ticket_of
from .gate import Gate, unavailable_exception
from .keys import SPENDGATE_KEY_PREFIX, KeyStore
from .money import usd
from .settings import LiteLLMSettings
from .usage import authorize_usage, max_output_tokens, recorded_usage

__all__ = ["Spendgate_PROXY_Callback", "callback", "custom_auth", "estimate_cost", "estimate_usage", "KEYS"]

log = logging.getLogger("spendgate.integrations.litellm")

#: Secrets of the Spendgate keys `custom_auth` accepted, for the pre-call hook (keys.py says why).
KEYS = KeyStore()


def _deployment_models(model: str) -> list[str]:
    """The provider models behind a LiteLLM model name (its router deployments), for pricing an alias."""
    try:
        from litellm.proxy.proxy_server import llm_router
    except ImportError:  # pragma: no cover — only outside the proxy
        return []
    if llm_router is None:
        return []
    names = []
    for deployment in llm_router.get_model_list(model_name=model) or []:
        params = deployment.get("litellm_params") or {}
        if isinstance(params.get("model"), str):
            names.append(params["model"])
    return names


def estimate_cost(data: Mapping[str, Any]) -> Decimal | None:
    """What the call will cost at most, by LiteLLM's own price table: the prompt's tokens
    (`litellm.token_counter`) plus `max_tokens` output tokens (`litellm.cost_per_token`). With no
    `max_tokens` the output is unbounded and only the prompt is counted; with no price for the
    model (or no `messages`), None — Spendgate then admits while the budget is not yet spent."""
    model, messages = data.get("model"), data.get("messages")
    if not isinstance(model, str) or not isinstance(messages, list):
        return None
    max_tokens = max_output_tokens(data)
    found = _priced(model, messages, max_tokens)
    if found is None:  # a model name LiteLLM has no price for: try the provider models behind it
        found = next((cost for name in _deployment_models(model)
                      if (cost := _priced(name, messages, max_tokens)) is not None), None)
    return found


def estimate_usage(data: Mapping[str, Any]) -> dict[str, int] | None:
    """Authorize's `usage` for Spendgate's pricing: the prompt's tokens by LiteLLM's counter and the
    request's output bound; None without a model and `messages` (then LiteLLM's estimate is sent)."""
    model, messages = data.get("model"), data.get("messages")
    if not isinstance(model, str) or not isinstance(messages, list):
        return None
    try:
        prompt_tokens = litellm.token_counter(model=model, messages=messages)
    except Exception:  # noqa: BLE001 — a message shape the counter cannot read
        return None
    return authorize_usage(input_tokens=prompt_tokens, max_tokens=max_output_tokens(data))


def _priced(model: str, messages: list[Any], max_tokens: int) -> Decimal | None:
    try:
        prompt_tokens = litellm.token_counter(model=model, messages=messages)
        prompt, completion = litellm.cost_per_token(model=model, prompt_tokens=prompt_tokens,
                                                    completion_tokens=max_tokens)
    except Exception:  # noqa: BLE001 — litellm raises plain Exception for a model it has no price for
        return None
    return usd(prompt + completion)


class Spendgate_PROXY_Callback(CustomLogger):  # noqa: N801
    """Authorizes each call in the pre-call hook and records it in the success/failure event.

    The `_PROXY_` in the class name is what LiteLLM checks to keep running a callback for requests
    that ask for `"no-log": true` (litellm_logging.should_run_callback): a caller must not be
    able to switch off its own billing. The pre-call hook is defined on this class itself, as
    LiteLLM only calls hooks a registered class overrides.
    """

    def __init__(self) -> None:
        super().__init__()
        self._gate: Gate | None = None

    def gate(self) -> Gate:
        if self._gate is None:
            try:
                settings = LiteLLMSettings()  # type: ignore[call-arg]  # from the environment
            except ValidationError as exc:
                missing = ", ".join(f"SPENDGATE_{str(e['loc'][0]).upper()}" for e in exc.errors())
                log.error("Spendgate integration not configured: set %s in the LiteLLM proxy's environment", missing)
                raise unavailable_exception("the LiteLLM proxy's Spendgate settings are incomplete") from None
            self._gate = Gate(settings)
        return self._gate

    async def async_pre_call_hook(
        self, user_api_key_dict: UserAPIKeyAuth, cache: Any, data: dict[str, Any], call_type: Any,
    ) -> dict[str, Any]:
        gate = self.gate()
        if gate.settings.litellm_keys == "spendgate":
            secret = KEYS.secret(user_api_key_dict.token)
            if secret is None:
                raise HTTPException(status_code=401, detail={"error": {
                    "code": "invalid_key", "message": "Use a Spendgate key (sk-sg-…) as this proxy's API key.",
                }})
            identity, key_hash = Identity(api_key=secret), user_api_key_dict.token
        else:
            identity, key_hash = Identity(principal=principal_of(user_api_key_dict)), None
        usage = estimate_usage(data) if gate.settings.litellm_pricing == "spendgate" else None
        ticket = await gate.admit(
            identity=identity, attribution=attribution_of(data, end_user_id=user_api_key_dict.end_user_id),
            estimate=estimate_cost(data), call_id=data.get("litellm_call_id"), key_hash=key_hash, usage=usage,
        )
        metadata = data.get("metadata")
        if not isinstance(metadata, dict):
            metadata = data["metadata"] = {}
        metadata[TICKET_KEY] = ticket.to_metadata()
        return data

    async def async_log_success_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        await self._settle(kwargs, "success")

    async def async_log_failure_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        await self._settle(kwargs, "failure")

    async def _settle(self, kwargs: Mapping[str, Any], outcome: Literal["success", "failure"]) -> None:
        """One record for a call the hook admitted. A call it refused (a denial, 503) carries no
        ticket: LiteLLM still fires a failure event for it, and that event records nothing."""
        ticket = ticket_of(kwargs.get("litellm_params"))
        if ticket is None or self._gate is None:
            return
        logged = kwargs.get("standard_logging_object") or {}
        cost = usd(logged.get("response_cost") if isinstance(logged, Mapping) else None)
        usage = recorded_usage(logged) if outcome == "success" else None  # a failure: LiteLLM's cost (0)
        await self._gate.settle(ticket, cost=cost, outcome=outcome, identity=_identity_again(ticket), usage=usage)


def _identity_again(ticket: Ticket) -> Identity | None:
    if ticket.authorized:
        return None
    if ticket.principal is not None:
        return Identity(principal=ticket.principal)
    secret = KEYS.secret(ticket.key_hash)
    return Identity(api_key=secret) if secret is not None else None


def principal_of(auth: UserAPIKeyAuth) -> dict[str, str | None]:
    """The identity LiteLLM resolved from its own virtual key, as Spendgate's `principal`."""
    return {"key": auth.key_alias or auth.token, "user": auth.user_id, "team": auth.team_id, "org": auth.org_id}


async def custom_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    """`general_settings.custom_auth` for Spendgate keys: accept a key shaped like Spendgate's and
    keep its secret for the pre-call hook, whose authorize is where Spendgate checks it (an
    unknown, expired or blocked key is refused there: 401/403). LiteLLM needs no database."""
    if not api_key.startswith(SPENDGATE_KEY_PREFIX):
        raise HTTPException(status_code=401, detail=f"Use a Spendgate key ({SPENDGATE_KEY_PREFIX}…) as the API key.")
    KEYS.remember(api_key)
    return UserAPIKeyAuth(api_key=api_key)


#: The instance to list in `litellm_settings.callbacks`.
callback = Spendgate_PROXY_Callback()
