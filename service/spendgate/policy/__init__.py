"""The policy engine port, its adapters (embedded Rego, OPA REST) and the policy tooling."""

from .engine import DECISION_QUERY, PolicyDecision, PolicyEngine
from .loader import PolicySet, load_policy_set

__all__ = ["DECISION_QUERY", "PolicyDecision", "PolicyEngine", "PolicySet", "load_policy_set"]
