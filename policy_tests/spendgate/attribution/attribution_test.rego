# METADATA
# title: Tests of spendgate.attribution
# description: >-
#   Who a team, personal or service key charges, with and without the
#   team_keys_charge_user knob.
package spendgate.attribution_test

import data.spendgate.attribution
import data.spendgate.fixtures

# --- key_kind

test_key_kind_is_team_when_key_has_team if {
	attribution.key_kind == "team" with input as fixtures.team_key_input
}

test_key_kind_is_personal_when_key_has_only_user if {
	attribution.key_kind == "personal" with input as fixtures.personal_key_input
}

test_key_kind_is_service_when_key_has_neither if {
	attribution.key_kind == "service" with input as fixtures.service_key_input
}

test_key_kind_is_service_when_owner_fields_missing if {
	doc := object.union(object.union(fixtures.service_key_input, {"key": null}), {"key": {"id": "k3"}})
	doc.key == {"id": "k3"}
	attribution.key_kind == "service" with input as doc
}

test_key_kind_is_personal_when_team_field_missing if {
	doc := object.union(object.union(fixtures.personal_key_input, {"key": null}), {"key": {"id": "k2", "user_id": "u1"}})
	attribution.key_kind == "personal" with input as doc
}

test_key_kind_undefined_when_no_key if {
	not attribution.key_kind with input as object.union(fixtures.team_key_input, {"key": null})
}

# --- charges: the shipped rule

test_charges_team_ledgers_when_team_key if {
	attribution.charges == {
		"key:k1", "team:t1", "team_member:t1/u1", "org:o1",
		"end_user:cust-9", "tag:search", "tag:beta", "key_model:k1/gpt-4o",
	} with input as fixtures.team_key_input with data.spendgate.config.team_keys_charge_user as false
}

test_charges_exclude_personal_ledgers_when_team_key if {
	charged := attribution.charges with input as fixtures.team_key_input with data.spendgate.config.team_keys_charge_user as false
	not "user:u1" in charged
	not "org:o2" in charged
}

test_charges_personal_ledgers_when_personal_key if {
	attribution.charges == {
		"key:k2", "user:u1", "org:o2",
		"end_user:cust-9", "tag:search", "tag:beta", "key_model:k2/gpt-4o",
	} with input as fixtures.personal_key_input
}

test_charges_only_key_and_request_ledgers_when_service_key if {
	attribution.charges == {
		"key:k3", "end_user:cust-9", "tag:search", "tag:beta", "key_model:k3/gpt-4o",
	} with input as fixtures.service_key_input
}

test_charges_nothing_when_key_null if {
	count(attribution.charges) == 0 with input as object.union(fixtures.team_key_input, {"key": null})
}

test_charges_nothing_when_key_missing if {
	count(attribution.charges) == 0 with input as object.remove(fixtures.personal_key_input, {"key"})
}

test_charges_no_team_member_when_team_key_has_no_member if {
	doc := object.union(fixtures.team_key_input, {"key": fixtures.key("k1", null, "t1"), "team_member": null})
	charged := attribution.charges with input as doc
	"team:t1" in charged
	not "team_member:t1/u1" in charged
}

test_charges_no_org_when_team_has_none if {
	doc := fixtures.with_part(fixtures.team_key_input, "team", {"org_id": null})
	charged := attribution.charges with input as doc
	"team:t1" in charged
	not "org:o1" in charged
}

test_charges_no_org_when_personal_user_has_none if {
	doc := fixtures.with_part(fixtures.personal_key_input, "user", {"org_id": null})
	charged := attribution.charges with input as doc
	"user:u1" in charged
	not "org:o2" in charged
}

test_charges_no_key_model_when_model_null if {
	doc := fixtures.with_part(fixtures.team_key_input, "request", {"model": null})
	charged := attribution.charges with input as doc
	not "key_model:k1/gpt-4o" in charged
}

test_charges_no_end_user_or_tags_when_request_names_none if {
	doc := fixtures.with_part(fixtures.team_key_input, "request", {"end_user": null, "tags": []})
	charged := attribution.charges with input as doc
	not "end_user:cust-9" in charged
	not "tag:search" in charged
	not "tag:beta" in charged
}

test_charges_no_tags_when_request_tags_null if {
	doc := fixtures.with_part(fixtures.team_key_input, "request", {"tags": null})
	charged := attribution.charges with input as doc
	not "tag:search" in charged
	"key:k1" in charged
}

test_charges_every_window_when_entity_has_several if {
	monthly := object.union(fixtures.open_ledger("team", "t1"), {"id": "team:t1:1mo", "window": "1mo"})
	doc := fixtures.with_ledger(fixtures.team_key_input, monthly)
	charged := attribution.charges with input as doc
	"team:t1" in charged
	"team:t1:1mo" in charged
}

test_charges_nothing_unlisted_when_ledger_belongs_to_another_key if {
	doc := fixtures.with_ledger(fixtures.team_key_input, fixtures.open_ledger("key", "k9"))
	charged := attribution.charges with input as doc
	not "key:k9" in charged
}

test_charges_nothing_when_ledgers_null if {
	count(attribution.charges) == 0 with input as object.union(fixtures.team_key_input, {"ledgers": null})
}

# --- charges: the team_keys_charge_user knob

test_charges_user_and_user_org_when_team_keys_charge_user if {
	attribution.charges == {
		"key:k1", "team:t1", "team_member:t1/u1", "org:o1", "user:u1", "org:o2",
		"end_user:cust-9", "tag:search", "tag:beta", "key_model:k1/gpt-4o",
	} with input as fixtures.team_key_input
		with data.spendgate.config.team_keys_charge_user as true
}

test_entities_one_org_when_team_keys_charge_user_and_orgs_match if {
	doc := fixtures.with_part(fixtures.team_key_input, "user", {"org_id": "o1"})
	orgs := {entity | some entity in attribution.entities; entity.type == "org"} with input as doc
		with data.spendgate.config.team_keys_charge_user as true
	orgs == {{"type": "org", "id": "o1"}}
}

test_charges_exclude_user_when_knob_false if {
	charged := attribution.charges with input as fixtures.team_key_input
		with data.spendgate.config.team_keys_charge_user as false
	not "user:u1" in charged
}

test_charges_exclude_user_when_config_missing if {
	charged := attribution.charges with input as fixtures.team_key_input
		with data.spendgate.config as {}
	not "user:u1" in charged
}

test_charges_unchanged_when_knob_set_for_personal_key if {
	attribution.charges == {
		"key:k2", "user:u1", "org:o2",
		"end_user:cust-9", "tag:search", "tag:beta", "key_model:k2/gpt-4o",
	} with input as fixtures.personal_key_input
		with data.spendgate.config.team_keys_charge_user as true
}

# --- entities

test_entities_are_type_and_id_when_team_key if {
	{"type": "team_member", "id": "t1/u1"} in attribution.entities with input as fixtures.team_key_input
}

# --- charged_ledgers: the input entries admission checks

test_charged_ledgers_are_the_input_entries_of_charges_in_input_order if {
	doc := fixtures.team_key_input
	ledgers := attribution.charged_ledgers with input as doc with data.spendgate.config.team_keys_charge_user as false
	charged := attribution.charges with input as doc with data.spendgate.config.team_keys_charge_user as false
	ledgers == [ledger | some ledger in doc.ledgers; ledger.id in charged]
	count(ledgers) == count(charged)
	some personal in doc.ledgers
	personal.id == "user:u1"
	not personal in ledgers
}

test_charged_ledgers_empty_when_ledgers_null if {
	attribution.charged_ledgers == [] with input as object.union(fixtures.team_key_input, {"ledgers": null})
}
