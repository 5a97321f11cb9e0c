"""Spendgate: budget admission and spend attribution for LLM API traffic, with rules in Rego."""

__all__ = ["__version__"]

__version__ = "0.1.0"
