"""Drop-in integrations of Spendgate into existing LLM gateways (each an optional extra).

- `spendgate.integrations.litellm` — LiteLLM proxy callback and key auth (`spendgate[litellm]`,
  docs/litellm.md).
"""
