# METADATA
# title: Admission
# description: >-
#   Whether a request may proceed: the reasons to refuse it (none means admit) and the
#   alerts it raises. Budgets are checked on exactly the ledgers attribution charges.
#   Money is integer nano-USD; messages use the ledgers' display strings.
package spendgate.admission

# Rules are imported one by one, not as `import data.spendgate.attribution`: regorus evaluates
# every rule of a package referenced through a package import, which made each decision slower.
import data.spendgate.attribution.charged_ledgers
import data.spendgate.attribution.entities
import data.spendgate.lib

default _estimate := null

_estimate := input.request.estimated_cost

# A positive estimate must fit under the limit; without one (null or 0) the ledger must not be full.
_has_estimate if {
	is_number(input.request.estimated_cost) # not _estimate: a default rule costs the embedded engine more
	input.request.estimated_cost > 0
}

# The knob from policies/data.json; absent (or anything but true) means false.
_zero_estimate_admitted if {
	data.spendgate.config.zero_estimate_always_admitted == true
	_estimate == 0
}

# METADATA
# title: Reasons to refuse
# description: >-
#   A set of {"code", "entity", "message"} objects, budget reasons also with "ledger",
#   "spent", "limit" and "resets_at". Codes: invalid_key (no live key), key_blocked (the
#   key, its user, team, team member, a charged org, the end user or a tag is blocked;
#   entity is the blocked one), key_expired, model_not_allowed, budget_exceeded (one per
#   charged ledger at or over its limit). Empty: the request is admitted.
# scope: document
reasons contains {
	"code": "invalid_key",
	"entity": {"type": "key", "id": null},
	"message": "the API key matches no live key",
} if {
	# object.get: with input.key absent, OPA leaves `not is_object(input.key)` undefined (regorus: true)
	not is_object(object.get(input, "key", null))
}

# The key and the entities it belongs to or the request names: their input fields are named
# after their entity types.
reasons contains _blocked_reason(field, input[field].id) if {
	input.key.id
	some field in ["key", "user", "team", "team_member", "end_user"]
	input[field].blocked == true
}

# Only the orgs the request charges (input.orgs may hold the user's org that a team key does not charge).
reasons contains _blocked_reason("org", id) if {
	is_object(input.orgs)
	some id, org in input.orgs
	org.blocked == true
	{"type": "org", "id": id} in entities
}

reasons contains _blocked_reason("tag", tag.id) if {
	input.key.id
	is_array(input.tags)
	some tag in input.tags
	tag.blocked == true
}

reasons contains {
	"code": "key_expired",
	"entity": {"type": "key", "id": input.key.id},
	"message": sprintf("key %s expired at %s", [input.key.id, _expiry_text(input.key)]),
} if {
	is_number(input.key.expires_at_ns)
	is_number(input.request.now_ns)
	input.request.now_ns >= input.key.expires_at_ns
}

reasons contains {
	"code": "model_not_allowed",
	"entity": {"type": "key", "id": input.key.id},
	"message": _model_message(input.key.id, input.request.model, input.key.models),
} if {
	is_array(input.key.models)
	count(input.key.models) > 0
	not input.request.model in input.key.models
}

reasons contains _budget_reason(ledger) if {
	_has_estimate
	estimate := input.request.estimated_cost
	some ledger in charged_ledgers
	ledger.limit != null
	ledger.spent + ledger.reserved + estimate > ledger.limit
}

reasons contains _budget_reason(ledger) if {
	not _has_estimate
	not _zero_estimate_admitted
	some ledger in charged_ledgers
	ledger.limit != null
	ledger.spent + ledger.reserved >= ledger.limit
}

_blocked_reason(type, id) := {
	"code": "key_blocked",
	"entity": {"type": type, "id": id},
	"message": sprintf("%s is blocked", [lib.label({"type": type, "id": id})]),
}

_expiry_text(key) := key.expires_at if is_string(key.expires_at)

else := sprintf("%d ns since the epoch", [key.expires_at_ns])

_model_message(key_id, model, models) := sprintf("key %s may not use model %s; it allows %s", [
	key_id,
	model,
	_model_list(models),
]) if {
	is_string(model)
} else := sprintf("key %s may only be used with a named model (%s); the request names none", [
	key_id,
	_model_list(models),
])

_model_list(models) := concat(", ", sort([model | some model in models; is_string(model)]))

# "team t1 has spent $10.000000 of its $10.000000 1d budget; it resets at 2026-11-24T00:00:00Z"
_budget_reason(ledger) := {
	"code": "budget_exceeded",
	"entity": entity,
	"ledger": ledger.id,
	"message": sprintf("%s has spent $%s%s of its $%s %s%s", [
		lib.label(entity),
		spent,
		_reserved_note(ledger),
		limit,
		_budget_name(ledger),
		_reset_note(ledger, _estimate_note),
	]),
	"spent": spent,
	"limit": limit,
	"resets_at": object.get(ledger, "resets_at", null),
} if {
	entity := {"type": ledger.entity.type, "id": ledger.entity.id}
	spent := lib.amount_text(ledger, "spent")
	limit := lib.amount_text(ledger, "limit")
}

_reserved_note(ledger) := sprintf(" (plus $%s reserved)", [lib.amount_text(ledger, "reserved")]) if {
	lib.positive(ledger.reserved)
} else := ""

_budget_name(ledger) := sprintf("%s budget", [ledger.window]) if is_string(ledger.window)

else := "budget"

_estimate_note := sprintf(", so this request's estimated $%s would exceed it", [lib.usd(_estimate)]) if _has_estimate

else := ""

_reset_note(ledger, estimate_note) := sprintf("%s; it resets at %s", [estimate_note, ledger.resets_at]) if {
	is_string(ledger.resets_at)
} else := sprintf(", which never resets%s", [estimate_note])

# METADATA
# title: Alerts
# description: >-
#   A set of {"code": "soft_budget_crossed", "entity", "ledger", "spent", "soft_budget"}
#   objects, one per charged ledger whose spend has reached its soft budget. Alerts never
#   refuse a request.
alerts contains {
	"code": "soft_budget_crossed",
	"entity": {"type": ledger.entity.type, "id": ledger.entity.id},
	"ledger": ledger.id,
	"spent": lib.amount_text(ledger, "spent"),
	"soft_budget": lib.amount_text(ledger, "soft_budget"),
} if {
	some ledger in charged_ledgers
	ledger.soft_budget != null
	ledger.spent >= ledger.soft_budget
}
