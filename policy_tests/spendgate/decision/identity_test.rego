# METADATA
# title: Tests of input.identity
# description: >-
#   Where the caller's identity came from (input.identity.source: "api_key" or "gateway") is a fact
#   the policy may read. The shipped policies decide alike for both; a rule can tell them apart.
package spendgate.decision_test

import data.spendgate.decision
import data.spendgate.fixtures

_identified(source) := object.union(fixtures.team_key_input, {"identity": {"source": source}})

test_result_is_the_same_when_identity_from_gateway_or_api_key if {
	by_secret := decision.result with input as _identified("api_key")
	by_gateway := decision.result with input as _identified("gateway")
	by_secret.allow == true
	by_secret == by_gateway
}

# An example of a rule a deployment could add: keys the gateway authenticates are not usable by secret.
_secret_refused contains "key_blocked" if input.identity.source != "gateway"

test_secret_refused_when_identity_from_api_key if {
	_secret_refused == {"key_blocked"} with input.identity as {"source": "api_key"}
}

test_secret_refused_is_empty_when_identity_from_gateway if {
	count(_secret_refused) == 0 with input.identity as {"source": "gateway"}
}
