# METADATA
# title: Spend attribution
# description: >-
#   Which ledgers a request charges. The service reserves the estimated cost on exactly
#   these ledgers at authorize, checks admission against exactly these, and charges the
#   real cost to exactly these at record: one rule, so the checked set and the charged
#   set cannot drift apart. To change who pays (e.g. "team keys also charge the user"),
#   change this package and its tests; the service follows.
package spendgate.attribution

# METADATA
# title: Kind of API key
# description: >-
#   "team" when the key has a team_id (with or without a user), "personal" when it has
#   only a user_id, "service" when it has neither (a missing field counts as null);
#   undefined when the request carries no live key (input.key null).
key_kind := "team" if input.key.team_id != null

else := "personal" if input.key.user_id != null

else := "service" if is_object(input.key)

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
#
# The bodies read input.key directly (a null or absent key has no fields, so every body
# that reads one is undefined for it): each reference to a rule costs the embedded engine
# more than a field of the input, and these bodies run on every decision. Every field a head
# reads is also tested in its body: regorus's compiled engine adds an undefined head value
# to the set instead of skipping it (policies/INTERFACE.md).
entities contains {"type": "key", "id": input.key.id} if input.key.id

entities contains {"type": "user", "id": input.key.user_id} if {
	_charges_user
	input.key.user_id != null
}

entities contains {"type": "org", "id": input.user.org_id} if {
	_charges_user
	input.user.org_id != null
}

entities contains {"type": "team", "id": input.key.team_id} if input.key.team_id != null

entities contains {"type": "team_member", "id": input.team_member.id} if {
	input.key.team_id != null
	input.team_member.id
}

entities contains {"type": "org", "id": input.team.org_id} if {
	input.key.team_id != null
	input.team.org_id != null
}

entities contains {"type": "end_user", "id": input.request.end_user} if {
	input.key.id
	input.request.end_user != null
}

entities contains {"type": "tag", "id": tag} if {
	input.key.id
	is_array(input.request.tags)
	some tag in input.request.tags
}

entities contains {"type": "key_model", "id": concat("/", [input.key.id, input.request.model])} if {
	input.key.id
	input.request.model != null
}

_charges_user if key_kind == "personal"

_charges_user if {
	data.spendgate.config.team_keys_charge_user == true # the knob; absent means false
	key_kind == "team"
}

# METADATA
# title: Charged ledgers
# description: >-
#   The candidate ledgers (input.ledgers entries, in input order) whose entity is charged:
#   every budget window of every charged entity. Ledgers of other candidates, such as a
#   team-key user's personal ledgers under the shipped configuration, are not charged.
#   Admission checks and alerts on exactly these.
charged_ledgers := [ledger |
	charged := entities # bound once: a rule referenced inside the loop is looked up per ledger
	is_array(input.ledgers)
	some ledger in input.ledgers
	ledger.entity in charged # INTERFACE.md: a ledger's entity is exactly {"type", "id"}
]

# METADATA
# title: Charged ledger ids
# description: The set of the ids of charged_ledgers.
charges := {ledger.id | some ledger in charged_ledgers}
