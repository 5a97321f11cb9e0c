# METADATA
# title: Spend attribution
# description: >-
#   Which ledgers a request charges. The service reserves the estimated cost on exactly
#   these ledgers at authorize, checks admission against exactly these, and charges the
#   real cost to exactly these at record: one rule, so the checked set and the charged
#   set cannot drift apart. To change who pays (e.g. "team keys also charge the user"),
#   change this package and its tests; the service follows.
package spendgate.attribution

_key := input.key if is_object(input.key)

# METADATA
# title: Kind of API key
# description: >-
#   "team" when the key has a team_id (with or without a user), "personal" when it has
#   only a user_id, "service" when it has neither (a missing field counts as null);
#   undefined when the request carries no live key (input.key null).
key_kind := "team" if _key.team_id != null

else := "personal" if _key.user_id != null

else := "service" if _key

# METADATA
# title: Charged entities
# description: >-
#   The entities ({"type", "id"}) the request charges. Every key charges itself, the end
#   user, each tag and its key_model (key and requested model). A personal key of user U
#   also charges U and U's org. A team key of team T also charges T, the team member T/U
#   when the key names a member U, and T's org; it charges U and U's org only when the
#   knob data.spendgate.config.team_keys_charge_user is true. An org reached both ways is
#   one entity, so it is charged once. No key, no entities.
# scope: document
entities contains {"type": "key", "id": _key.id}

entities contains {"type": "user", "id": _key.user_id} if {
	_charges_user
	_key.user_id != null
}

entities contains {"type": "org", "id": input.user.org_id} if {
	_charges_user
	input.user.org_id != null
}

entities contains {"type": "team", "id": _key.team_id} if key_kind == "team"

entities contains {"type": "team_member", "id": input.team_member.id} if key_kind == "team"

entities contains {"type": "org", "id": input.team.org_id} if {
	key_kind == "team"
	input.team.org_id != null
}

entities contains {"type": "end_user", "id": input.request.end_user} if {
	_key
	input.request.end_user != null
}

entities contains {"type": "tag", "id": tag} if {
	_key
	is_array(input.request.tags)
	some tag in input.request.tags
}

entities contains {"type": "key_model", "id": concat("/", [_key.id, input.request.model])} if {
	input.request.model != null
}

_charges_user if key_kind == "personal"

_charges_user if {
	key_kind == "team"
	data.spendgate.config.team_keys_charge_user == true # the knob; absent means false
}

# METADATA
# title: Charged ledgers
# description: >-
#   The set of ids of the candidate ledgers (input.ledgers) whose entity is charged:
#   every budget window of every charged entity. Ledgers of other candidates, such as a
#   team-key user's personal ledgers under the shipped configuration, are not charged.
charges contains ledger.id if {
	charged := entities # bound once: a rule referenced inside the loop is looked up per ledger
	is_array(input.ledgers)
	some ledger in input.ledgers
	{"type": ledger.entity.type, "id": ledger.entity.id} in charged
}
