# METADATA
# title: Spendgate shared helpers
# description: >-
#   Small, input-free functions shared by the attribution and admission packages:
#   defaults for missing or null values, entity labels for messages, and exact
#   formatting of nano-USD amounts. The helpers that read documents (number,
#   positive, amount_text) are safe on missing or null values, because a builtin
#   given the wrong type is an error in regorus but only "undefined" in OPA, and the
#   two engines must decide alike; usd and label expect what their titles say. Keep
#   this package functions only: regorus evaluates every rule of a package it reaches
#   through a package import (`import data.spendgate.lib`), on every decision.
package spendgate.lib

# METADATA
# title: Number or zero
# description: The number `value`, or 0 when it is null or not a number.
number(value) := value if is_number(value)

else := 0

# METADATA
# title: Positive number
# description: True when `value` is a number greater than zero (null, 0 and non-numbers are not).
positive(value) if {
	is_number(value)
	value > 0
}

# METADATA
# title: Entity label
# description: 'How messages name an entity: {"type": "team_member", "id": "t1/u1"} is "team member t1/u1".'
label(entity) := sprintf("%s %s", [replace(entity.type, "_", " "), entity.id])

# METADATA
# title: USD text of nano-USD
# description: >-
#   An integer amount of nano-USD as a decimal USD string with at least six decimals,
#   exactly as the service formats money: 150000 is "0.000150", 1000000001 is "1.000000001".
usd(nanos) := concat(".", [format_int(whole, 10), _decimals(fraction)]) if {
	fraction := nanos % 1000000000
	whole := (nanos - fraction) / 1000000000
}

# Nine digits of the fraction, trailing zeros dropped down to six digits.
_decimals(fraction) := concat("", [trimmed, substring("000000", 0, max([0, 6 - count(trimmed)]))]) if {
	digits := format_int(fraction, 10)
	trimmed := trim_right(concat("", [substring("000000000", 0, 9 - count(digits)), digits]), "0")
}

# METADATA
# title: Amount text of a ledger
# description: >-
#   The display string of a ledger's amount `field` ("spent", "reserved", "limit",
#   "soft_budget") as the service sent it, or the amount formatted with `usd` when the
#   ledger carries no display string for it.
amount_text(ledger, field) := text if {
	text := object.get(ledger, ["display", field], null)
	is_string(text)
} else := usd(number(object.get(ledger, field, 0)))
