"""Spendgate as LiteLLM's budget authority: a proxy callback plus, optionally, key auth (docs/litellm.md).

Install with `pip install 'spendgate[litellm]'` next to the LiteLLM proxy, then in its config:

    litellm_settings:
      callbacks: ["spendgate.integrations.litellm.proxy.callback"]
    general_settings:
      custom_auth: spendgate.integrations.litellm.proxy.custom_auth   # when callers use Spendgate keys

Only `proxy` imports litellm; the modules re-exported here do not, so this package imports
(and is type-checked) without litellm installed.
"""

from .calls import Attribution, Identity, Ticket, new_request_id
from .gate import Gate, denial_exception
from .keys import KeyStore
from .money import usd
from .settings import VARIABLES, LiteLLMSettings

__all__ = [
    "LiteLLMSettings",
    "VARIABLES",
    "Gate",
    "denial_exception",
    "Identity",
    "Attribution",
    "Ticket",
    "new_request_id",
    "KeyStore",
    "usd",
]
