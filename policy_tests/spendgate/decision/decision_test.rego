# METADATA
# title: Tests of spendgate.decision
# description: >-
#   The result document: its shape, sorted arrays, and charges reported on a denial.
package spendgate.decision_test

import data.spendgate.decision
import data.spendgate.fixtures

_team := fixtures.team_key_input

_result(doc) := found if {
	found := decision.result with input as doc
}

# A ledger past its soft budget, with no hard limit.
_soft(type, id) := object.union(fixtures.ledger(type, id, null, 9000000000), {"soft_budget": 8000000000})

test_result_allows_with_sorted_charges_when_team_key_within_budgets if {
	_result(_team) == {
		"allow": true,
		"charges": [
			"end_user:cust-9", "key:k1", "key_model:k1/gpt-4o", "org:o1",
			"tag:beta", "tag:search", "team:t1", "team_member:t1/u1",
		],
		"reasons": [],
		"alerts": [],
	} with data.spendgate.config.team_keys_charge_user as false
}

test_result_denies_with_charges_when_budget_exceeded if {
	result := _result(fixtures.at_limit(_team, "team:t1")) with data.spendgate.config.team_keys_charge_user as false
	result.allow == false
	count(result.charges) == 8
	[reason.ledger | some reason in result.reasons] == ["team:t1"]
}

test_result_denies_without_charges_when_key_null if {
	_result(object.union(_team, {"key": null})) == {
		"allow": false,
		"charges": [],
		"reasons": [{
			"code": "invalid_key",
			"entity": {"type": "key", "id": null},
			"message": "the API key matches no live key",
		}],
		"alerts": [],
	}
}

test_result_sorts_reasons_by_code_then_entity_when_several if {
	blocked := fixtures.with_part(fixtures.with_part(_team, "key", {"blocked": true}), "end_user", {"blocked": true})
	doc := fixtures.at_limit(fixtures.at_limit(fixtures.at_limit(blocked, "team:t1"), "tag:search"), "key:k1")
	expired := fixtures.with_part(doc, "key", {"expires_at": "2026-11-01T00:00:00Z", "expires_at_ns": 1})
	order := [[reason.code, reason.entity.type, reason.entity.id] | some reason in _result(expired).reasons]
	order == [
		["budget_exceeded", "key", "k1"],
		["budget_exceeded", "tag", "search"],
		["budget_exceeded", "team", "t1"],
		["key_blocked", "end_user", "cust-9"],
		["key_blocked", "key", "k1"],
		["key_expired", "key", "k1"],
	]
}

test_result_sorts_alerts_by_entity_when_several if {
	doc := fixtures.with_ledger(fixtures.with_ledger(_team, _soft("team", "t1")), _soft("end_user", "cust-9"))
	result := _result(doc)
	result.allow == true
	[alert.ledger | some alert in result.alerts] == ["end_user:cust-9", "team:t1"]
}

test_result_has_only_arrays_when_denied if {
	result := _result(fixtures.at_limit(_team, "team:t1"))
	is_array(result.charges)
	is_array(result.reasons)
	is_array(result.alerts)
	object.keys(result) == {"allow", "charges", "reasons", "alerts"}
}

test_result_charges_user_when_team_keys_charge_user if {
	result := decision.result with input as _team with data.spendgate.config.team_keys_charge_user as true
	"user:u1" in result.charges
	"org:o2" in result.charges
}
