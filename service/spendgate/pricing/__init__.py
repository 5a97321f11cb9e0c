"""Usage pricing: the price table in policy data, and turning a request's usage into a cost (Rego decides)."""
