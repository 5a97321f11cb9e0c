# METADATA
# title: Tests of spendgate.admission
# description: >-
#   Every reason code refused and admitted, every entity type's budget at its limit,
#   both estimate rules, the zero_estimate_always_admitted knob, and alerts.
package spendgate.admission_test

import data.spendgate.admission
import data.spendgate.fixtures

_team := fixtures.team_key_input

_personal := fixtures.personal_key_input

_reasons(doc) := found if {
	found := admission.reasons with input as doc
}

_codes(doc) := {reason.code | some reason in _reasons(doc)}

_refused_on(doc, ledger_id) if {
	some reason in _reasons(doc)
	reason.code == "budget_exceeded"
	reason.ledger == ledger_id
}

_estimating(doc, estimate) := fixtures.with_part(doc, "request", {"estimated_cost": estimate})

# A $10 limit on ledger_id with the given spent and reserved, and the given estimate.
_budget(doc, ledger_id, spent, reserved, estimate) := _estimating(fixtures.with_ledger(doc, object.union(
	fixtures.ledger(_entity_of(ledger_id).type, _entity_of(ledger_id).id, 10000000000, spent),
	{"reserved": reserved},
)), estimate)

_entity_of(ledger_id) := {"type": parts[0], "id": parts[1]} if parts := split(ledger_id, ":")

# --- nothing to refuse

test_reasons_empty_when_team_key_within_budgets if {
	count(_reasons(_team)) == 0
}

test_reasons_empty_when_personal_key_within_budgets if {
	count(_reasons(_personal)) == 0
}

test_reasons_empty_when_service_key_within_budgets if {
	count(_reasons(fixtures.service_key_input)) == 0
}

test_reasons_empty_when_every_charged_ledger_just_below_limit if {
	every doc in [_team, _personal, fixtures.service_key_input] {
		every ledger in doc.ledgers {
			count(_reasons(fixtures.below_limit(doc, ledger.id))) == 0
		}
	}
}

# --- invalid_key

test_reasons_invalid_key_when_key_null if {
	_reasons(object.union(_team, {"key": null})) == {{
		"code": "invalid_key",
		"entity": {"type": "key", "id": null},
		"message": "the API key matches no live key",
	}}
}

test_reasons_invalid_key_when_key_missing if {
	_codes(object.remove(_team, {"key"})) == {"invalid_key"}
}

test_reasons_only_invalid_key_when_key_null_and_end_user_blocked if {
	doc := fixtures.with_part(object.union(_team, {"key": null}), "end_user", {"blocked": true})
	_codes(doc) == {"invalid_key"}
}

# --- key_blocked

test_reasons_key_blocked_when_key_user_team_member_or_end_user_blocked if {
	every field, id in {"key": "k1", "user": "u1", "team": "t1", "team_member": "t1/u1", "end_user": "cust-9"} {
		some reason in _reasons(fixtures.with_part(_team, field, {"blocked": true}))
		reason.code == "key_blocked"
		reason.entity == {"type": field, "id": id}
	}
}

test_reasons_key_blocked_names_entity_when_team_member_blocked if {
	some reason in _reasons(fixtures.with_part(_team, "team_member", {"blocked": true}))
	reason.message == "team member t1/u1 is blocked"
}

test_reasons_key_blocked_when_team_org_blocked if {
	doc := fixtures.with_part(_team, "orgs", {"o1": {"blocked": true}})
	{"code": "key_blocked", "entity": {"type": "org", "id": "o1"}, "message": "org o1 is blocked"} in _reasons(doc)
}

test_reasons_key_blocked_when_personal_user_org_blocked if {
	doc := fixtures.with_part(_personal, "orgs", {"o2": {"blocked": true}})
	_codes(doc) == {"key_blocked"}
}

test_reasons_empty_when_uncharged_user_org_blocked if {
	# A team key does not charge its user's own org, so that org's block does not apply.
	doc := fixtures.with_part(_team, "orgs", {"o2": {"blocked": true}})
	count(_reasons(doc)) == 0 with data.spendgate.config.team_keys_charge_user as false
}

test_reasons_key_blocked_when_user_org_blocked_and_team_keys_charge_user if {
	doc := fixtures.with_part(_team, "orgs", {"o2": {"blocked": true}})
	found := admission.reasons with input as doc with data.spendgate.config.team_keys_charge_user as true
	{"code": "key_blocked", "entity": {"type": "org", "id": "o2"}, "message": "org o2 is blocked"} in found
}

test_reasons_key_blocked_when_tag_blocked if {
	doc := object.union(_team, {"tags": [
		{"id": "search", "blocked": false, "known": true},
		{"id": "beta", "blocked": true, "known": true},
	]})
	{"code": "key_blocked", "entity": {"type": "tag", "id": "beta"}, "message": "tag beta is blocked"} in _reasons(doc)
}

test_reasons_empty_when_optional_documents_missing if {
	doc := object.remove(fixtures.service_key_input, {"user", "team", "team_member", "end_user", "tags", "orgs"})
	count(_reasons(doc)) == 0
}

test_reasons_empty_when_optional_documents_null if {
	doc := object.union(_team, {"end_user": null, "tags": null, "orgs": null})
	count(_reasons(doc)) == 0
}

# --- key_expired

test_reasons_key_expired_when_now_reaches_expiry if {
	doc := fixtures.with_part(_team, "key", {"expires_at": "2026-11-23T03:00:00Z", "expires_at_ns": fixtures.now_ns})
	_reasons(doc) == {{
		"code": "key_expired",
		"entity": {"type": "key", "id": "k1"},
		"message": "key k1 expired at 2026-11-23T03:00:00Z",
	}}
}

test_reasons_empty_when_expiry_one_nanosecond_ahead if {
	doc := fixtures.with_part(_team, "key", {"expires_at": "2026-11-23T03:00:00Z", "expires_at_ns": fixtures.now_ns + 1})
	count(_reasons(doc)) == 0
}

test_reasons_key_expired_names_nanoseconds_when_expiry_text_missing if {
	doc := fixtures.with_part(_team, "key", {"expires_at_ns": 1796083200000000000})
	later := fixtures.with_part(doc, "request", {"now_ns": 1796083200000000001})
	some reason in _reasons(later)
	reason.message == "key k1 expired at 1796083200000000000 ns since the epoch"
}

test_reasons_empty_when_key_never_expires if {
	doc := fixtures.with_part(_team, "key", {"expires_at": null, "expires_at_ns": null})
	count(_reasons(doc)) == 0
}

# --- model_not_allowed

test_reasons_model_not_allowed_when_model_not_in_key_models if {
	doc := fixtures.with_part(_team, "key", {"models": ["o1", "gpt-4o-mini"]})
	_reasons(doc) == {{
		"code": "model_not_allowed",
		"entity": {"type": "key", "id": "k1"},
		"message": "key k1 may not use model gpt-4o; it allows gpt-4o-mini, o1",
	}}
}

test_reasons_model_not_allowed_when_model_null_and_key_has_models if {
	doc := fixtures.with_part(fixtures.with_part(_team, "key", {"models": ["gpt-4o-mini"]}), "request", {"model": null})
	some reason in _reasons(doc)
	reason.code == "model_not_allowed"
	reason.message == "key k1 may only be used with a named model (gpt-4o-mini); the request names none"
}

test_reasons_empty_when_model_in_key_models if {
	count(_reasons(fixtures.with_part(_team, "key", {"models": ["gpt-4o-mini", "gpt-4o"]}))) == 0
}

test_reasons_empty_when_key_models_empty_or_null if {
	count(_reasons(fixtures.with_part(_team, "key", {"models": []}))) == 0
	count(_reasons(fixtures.with_part(_team, "key", {"models": null}))) == 0
}

# --- budget_exceeded: every entity type refuses at its limit

test_reasons_budget_exceeded_when_key_at_limit if {
	_refused_on(fixtures.at_limit(_team, "key:k1"), "key:k1")
}

test_reasons_budget_exceeded_when_team_at_limit if {
	_refused_on(fixtures.at_limit(_team, "team:t1"), "team:t1")
}

test_reasons_budget_exceeded_when_team_member_at_limit if {
	_refused_on(fixtures.at_limit(_team, "team_member:t1/u1"), "team_member:t1/u1")
}

test_reasons_budget_exceeded_when_team_org_at_limit if {
	_refused_on(fixtures.at_limit(_team, "org:o1"), "org:o1")
}

test_reasons_budget_exceeded_when_user_at_limit if {
	_refused_on(fixtures.at_limit(_personal, "user:u1"), "user:u1")
}

test_reasons_budget_exceeded_when_user_org_at_limit if {
	_refused_on(fixtures.at_limit(_personal, "org:o2"), "org:o2")
}

test_reasons_budget_exceeded_when_end_user_at_limit if {
	_refused_on(fixtures.at_limit(_team, "end_user:cust-9"), "end_user:cust-9")
}

test_reasons_budget_exceeded_when_tag_at_limit if {
	_refused_on(fixtures.at_limit(_team, "tag:beta"), "tag:beta")
}

test_reasons_budget_exceeded_when_key_model_at_limit if {
	_refused_on(fixtures.at_limit(_team, "key_model:k1/gpt-4o"), "key_model:k1/gpt-4o")
}

test_reasons_budget_exceeded_when_service_key_at_limit if {
	_refused_on(fixtures.at_limit(fixtures.service_key_input, "key:k3"), "key:k3")
}

test_reasons_budget_exceeded_when_every_charged_ledger_at_limit if {
	every doc in [_team, _personal, fixtures.service_key_input] {
		charged := data.spendgate.attribution.charges with input as doc
		count(charged) > 0
		every ledger_id in charged {
			_refused_on(fixtures.at_limit(doc, ledger_id), ledger_id)
		}
	}
}

test_reasons_budget_exceeded_when_one_window_of_several_at_limit if {
	monthly := object.union(fixtures.ledger("team", "t1", 10000000000, 10000000000), {"id": "team:t1:1mo"})
	doc := fixtures.with_ledger(_team, monthly)
	_refused_on(doc, "team:t1:1mo")
	not _refused_on(doc, "team:t1")
}

# --- budget_exceeded: only charged ledgers count

test_reasons_empty_when_team_key_user_personal_budget_exhausted if {
	count(_reasons(fixtures.at_limit(_team, "user:u1"))) == 0 with data.spendgate.config.team_keys_charge_user as false
}

test_reasons_empty_when_team_key_user_org_budget_exhausted if {
	count(_reasons(fixtures.at_limit(_team, "org:o2"))) == 0 with data.spendgate.config.team_keys_charge_user as false
}

test_reasons_budget_exceeded_when_user_exhausted_and_team_keys_charge_user if {
	found := admission.reasons with input as fixtures.at_limit(_team, "user:u1")
		with data.spendgate.config.team_keys_charge_user as true
	some reason in found
	reason.ledger == "user:u1"
}

test_reasons_empty_when_ledger_has_no_limit if {
	doc := fixtures.with_ledger(_team, object.union(fixtures.open_ledger("team", "t1"), {"spent": 999000000000}))
	count(_reasons(doc)) == 0
}

test_reasons_budget_exceeded_when_limit_zero if {
	_refused_on(fixtures.with_ledger(_team, fixtures.ledger("team", "t1", 0, 0)), "team:t1")
}

# --- budget_exceeded: with an estimate, spent + reserved + estimate > limit

test_reasons_empty_when_estimate_fills_budget_exactly if {
	count(_reasons(_budget(_team, "team:t1", 9970000000, 10000000, 20000000))) == 0
}

test_reasons_budget_exceeded_when_estimate_overshoots_by_one_nano if {
	_refused_on(_budget(_team, "team:t1", 9970000000, 10000000, 20000001), "team:t1")
}

test_reasons_budget_exceeded_when_reserved_leaves_no_room_for_estimate if {
	_refused_on(_budget(_team, "team:t1", 9000000000, 990000000, 20000000), "team:t1")
}

test_reasons_budget_exceeded_when_estimate_positive_and_spend_at_limit if {
	_refused_on(_budget(_team, "team:t1", 10000000000, 0, 1), "team:t1")
}

# --- budget_exceeded: without an estimate (null or 0), spent + reserved >= limit

test_reasons_budget_exceeded_when_no_estimate_and_spent_plus_reserved_at_limit if {
	_refused_on(_budget(_team, "team:t1", 9000000000, 1000000000, null), "team:t1")
}

test_reasons_empty_when_no_estimate_and_one_nano_left if {
	count(_reasons(_budget(_team, "team:t1", 9000000000, 999999999, null))) == 0
}

test_reasons_budget_exceeded_when_estimate_zero_and_at_limit if {
	_refused_on(_budget(_team, "team:t1", 10000000000, 0, 0), "team:t1") with data.spendgate.config.zero_estimate_always_admitted as false
}

test_reasons_empty_when_estimate_zero_and_one_nano_left if {
	count(_reasons(_budget(_team, "team:t1", 9999999999, 0, 0))) == 0
}

test_reasons_budget_exceeded_when_estimate_missing_and_at_limit if {
	doc := fixtures.with_part(fixtures.at_limit(_team, "team:t1"), "request", {})
	missing := object.union(doc, {"request": object.remove(doc.request, {"estimated_cost"})})
	_refused_on(missing, "team:t1")
}

# --- the zero_estimate_always_admitted knob

test_reasons_empty_when_estimate_zero_and_zero_estimate_always_admitted if {
	doc := _budget(_team, "team:t1", 12000000000, 0, 0)
	found := admission.reasons with input as doc
		with data.spendgate.config.zero_estimate_always_admitted as true
	count(found) == 0
}

test_reasons_budget_exceeded_when_estimate_null_and_zero_estimate_always_admitted if {
	doc := _budget(_team, "team:t1", 10000000000, 0, null)
	found := admission.reasons with input as doc
		with data.spendgate.config.zero_estimate_always_admitted as true
	{reason.code | some reason in found} == {"budget_exceeded"}
}

test_reasons_budget_exceeded_when_estimate_positive_and_zero_estimate_always_admitted if {
	doc := _budget(_team, "team:t1", 10000000000, 0, 1)
	found := admission.reasons with input as doc
		with data.spendgate.config.zero_estimate_always_admitted as true
	{reason.code | some reason in found} == {"budget_exceeded"}
}

test_reasons_key_blocked_when_estimate_zero_and_zero_estimate_always_admitted if {
	doc := fixtures.with_part(_budget(_team, "team:t1", 10000000000, 0, 0), "key", {"blocked": true})
	found := admission.reasons with input as doc
		with data.spendgate.config.zero_estimate_always_admitted as true
	{reason.code | some reason in found} == {"key_blocked"}
}

test_reasons_budget_exceeded_when_estimate_zero_and_config_missing if {
	found := admission.reasons with input as _budget(_team, "team:t1", 10000000000, 0, 0)
		with data.spendgate.config as {}
	{reason.code | some reason in found} == {"budget_exceeded"}
}

# --- budget_exceeded: what the reason says

test_reasons_budget_exceeded_message_names_spend_limit_and_reset_when_display_given if {
	ledger := object.union(fixtures.ledger("team", "t1", 10000000000, 10000000000), {"display": {
		"spent": "10.000000", "reserved": "0.000000", "limit": "10.000000", "soft_budget": null,
	}})
	_reasons(fixtures.with_ledger(_team, ledger)) == {{
		"code": "budget_exceeded",
		"entity": {"type": "team", "id": "t1"},
		"ledger": "team:t1",
		"message": "team t1 has spent $10.000000 of its $10.000000 1d budget; it resets at 2026-11-24T00:00:00Z",
		"spent": "10.000000",
		"limit": "10.000000",
		"resets_at": "2026-11-24T00:00:00Z",
	}}
}

test_reasons_budget_exceeded_message_says_never_resets_when_no_window if {
	ledger := object.union(fixtures.ledger("team", "t1", 10000000000, 10000000000), {"window": null, "resets_at": null})
	some reason in _reasons(fixtures.with_ledger(_team, ledger))
	reason.message == "team t1 has spent $10.000000 of its $10.000000 budget, which never resets"
	reason.resets_at == null
}

test_reasons_budget_exceeded_message_names_reserved_and_estimate_when_both_present if {
	some reason in _reasons(_budget(_team, "team:t1", 9990000000, 5000000, 20000000))
	reason.message == concat("", [
		"team t1 has spent $9.990000 (plus $0.005000 reserved) of its $10.000000 1d budget, ",
		"so this request's estimated $0.020000 would exceed it; it resets at 2026-11-24T00:00:00Z",
	])
	reason.spent == "9.990000"
	reason.limit == "10.000000"
}

test_reasons_budget_exceeded_message_names_estimate_when_budget_never_resets if {
	doc := _budget(_team, "team:t1", 9990000000, 0, 20000000)
	never := fixtures.with_ledger(doc, object.union(fixtures.ledger("team", "t1", 10000000000, 9990000000), {
		"window": null, "resets_at": null,
	}))
	some reason in _reasons(never)
	reason.message == concat("", [
		"team t1 has spent $9.990000 of its $10.000000 budget, which never resets, ",
		"so this request's estimated $0.020000 would exceed it",
	])
}

# --- alerts

test_alerts_soft_budget_crossed_when_spent_reaches_soft_budget if {
	ledger := object.union(fixtures.ledger("key", "k1", 10000000000, 8000000000), {"soft_budget": 8000000000})
	found := admission.alerts with input as fixtures.with_ledger(_team, ledger)
	found == {{
		"code": "soft_budget_crossed",
		"entity": {"type": "key", "id": "k1"},
		"ledger": "key:k1",
		"spent": "8.000000",
		"soft_budget": "8.000000",
	}}
}

test_alerts_empty_when_spent_below_soft_budget if {
	ledger := object.union(fixtures.ledger("key", "k1", 10000000000, 7999999999), {"soft_budget": 8000000000})
	found := admission.alerts with input as fixtures.with_ledger(_team, ledger)
	count(found) == 0
}

test_alerts_empty_when_soft_budget_crossed_on_uncharged_ledger if {
	ledger := object.union(fixtures.ledger("user", "u1", null, 9000000000), {"soft_budget": 8000000000})
	found := admission.alerts with input as fixtures.with_ledger(_team, ledger) with data.spendgate.config.team_keys_charge_user as false
	count(found) == 0
}

test_alerts_empty_when_no_soft_budget if {
	found := admission.alerts with input as fixtures.at_limit(_team, "key:k1")
	count(found) == 0
}

test_reasons_empty_when_only_soft_budget_crossed if {
	ledger := object.union(fixtures.ledger("key", "k1", 10000000000, 9000000000), {"soft_budget": 8000000000})
	count(_reasons(fixtures.with_ledger(_team, ledger))) == 0
}
