# METADATA
# title: Pricing
# description: >-
#   What a request's token usage costs (data.spendgate.pricing.result), from the price table in
#   data.spendgate.pricing.prices and the operator's adjustments in data.spendgate.pricing.adjustments.
#
#   Units. A price is an integer number of nano-USD per 1M tokens (= femto-USD per token): the
#   table reads like a price list ($2.50 / 1M tokens is 2500000000) and holds any per-token price
#   with up to 15 decimals exactly, which every LiteLLM price is (1.5e-07 USD/token is 150000000).
#
#   Exactness. regorus computes integers exactly only up to 2^64 and turns an inexact division into
#   a float; OPA keeps big numbers. So every intermediate value here stays below 2^53 and every
#   division is of an exact multiple: tokens (at most 1e9 per field) are split into whole millions
#   and a remainder, prices (at most 1e12, i.e. $1000 / 1M tokens) into whole nano-USD per token and
#   a femto-USD remainder; the largest product is 1e3 * 1e12 = 1e15.
#
#   Rounding. The list cost is the exact sum of tokens * price, rounded UP to the nano-USD once;
#   an adjustment (basis points, -10000 to +10000) is applied to that and rounded up again.
package spendgate.pricing

import data.spendgate.attribution.entities

_million := 1000000

_basis := 10000

#: Largest token count per usage field and largest price the arithmetic is exact for (see above).
_max_tokens := 1000000000

_max_price := 1000000000000

# Most specific first: the first of these the request is charged to that has an adjustment applies.
_precedence := ["end_user", "key", "team_member", "user", "team", "org", "tag"]

default _table := {}

_table := data.spendgate.pricing.prices if is_object(data.spendgate.pricing.prices)

default _adjustments := {}

_adjustments := data.spendgate.pricing.adjustments if is_object(data.spendgate.pricing.adjustments)

_request := input.request if is_object(input.request)

_model := _request.model if is_string(_request.model)

_usage := _request.usage if is_object(_request.usage)

# METADATA
# title: Price table entry
# description: >-
#   The table key the request's model is priced under: the model itself, or, for a
#   provider-prefixed name ("openai/gpt-4o"), the name after the first "/".
entry := _model if {
	is_object(_table[_model])
} else := suffix if {
	parts := split(_model, "/")
	count(parts) > 1
	suffix := concat("/", array.slice(parts, 1, count(parts)))
	is_object(_table[suffix])
}

# METADATA
# title: Pricing result
# description: >-
#   {"priced": true, "model", "cost", "list_cost", "adjustment"} with costs in integer nano-USD and
#   adjustment {"entity", "basis_points"} or null; or {"priced": false, "model", "code", "message"}
#   with code unknown_price (no model, or none in the table), invalid_usage, invalid_price or
#   invalid_adjustment (the policy data is wrong). See policies/INTERFACE.md.
result := _unpriced(problem[0], problem[1]) if {
	problem := _problem
} else := {
	"priced": true,
	"model": entry,
	"cost": _adjusted(list_cost, _basis_points),
	"list_cost": list_cost,
	"adjustment": _adjustment,
} if {
	list_cost := cost(_lines, _prices)
}

# [code, message] of the first reason the usage cannot be priced; undefined when it can.
_problem := ["unknown_price", "the request names no model, so its usage cannot be priced"] if {
	not _model
} else := ["unknown_price", _no_price_message] if {
	not entry
} else := ["invalid_usage", _usage_message] if {
	not _lines
} else := ["invalid_price", sprintf(_price_message, [entry])] if {
	not _prices
} else := ["invalid_adjustment", sprintf(_adjustment_message, [_matches[0]])] if {
	not _adjustment_ok
}

_no_price_message := sprintf(
	"model %s has no price in data.spendgate.pricing.prices; add it to policies/spendgate/pricing/data.json",
	[_model],
)

_usage_message := concat(" ", [
	"usage must hold whole token counts from 0 to 1000000000, with cached_input_tokens",
	"at most input_tokens and reasoning_tokens at most output_tokens",
])

_adjustment_message := "adjustment %v must be whole basis points from -10000 to 10000"

_price_message := concat(" ", [
	"the price of %s must give input and output (cached_input and reasoning optional)",
	"as whole nano-USD per 1M tokens from 0 to 1000000000000",
])

_unpriced(code, message) := {
	"priced": false,
	"model": object.get(_request, "model", null),
	"code": code,
	"message": message,
}

# -- usage --------------------------------------------------------------------------------------

# Token counts per billed line: cached input and reasoning tokens are part of the input and output counts.
_lines := {
	"input": input_tokens - cached,
	"cached_input": cached,
	"output": output_tokens - reasoning,
	"reasoning": reasoning,
} if {
	input_tokens := _tokens("input_tokens")
	cached := _tokens("cached_input_tokens")
	output_tokens := _tokens("output_tokens")
	reasoning := _tokens("reasoning_tokens")
	cached <= input_tokens
	reasoning <= output_tokens
}

_tokens(field) := n if {
	n := object.get(_usage, field, 0)
	_whole(n, _max_tokens)
}

_whole(n, most) if {
	is_number(n)
	n >= 0
	n <= most
	floor(n) == n
}

# -- prices -------------------------------------------------------------------------------------

_prices := {
	"input": input_price,
	"cached_input": _price(row, "cached_input", input_price),
	"output": output_price,
	"reasoning": _price(row, "reasoning", output_price),
} if {
	row := _table[entry]
	input_price := _price(row, "input", null)
	output_price := _price(row, "output", null)
}

# A row's price for `field`; `fallback` when the row has none (null fallback: required).
_price(row, field, fallback) := p if {
	p := object.get(row, field, fallback)
	_whole(p, _max_price)
}

# METADATA
# title: Cost of usage
# description: >-
#   The exact cost in nano-USD of `lines` (token counts) at `prices` (nano-USD per 1M tokens),
#   rounded up once: sum over lines of M*p + r*P, plus ceil(sum of r*f / 1e6), where a count is
#   M millions and r tokens and a price P nano-USD and f femto-USD per token.
cost(lines, prices) := whole + _ceil_div(femtos, _million) if {
	whole := sum([n |
		some line, tokens in lines
		r := tokens % _million
		p := prices[line]
		n := (((tokens - r) / _million) * p) + (r * ((p - (p % _million)) / _million))
	])
	femtos := sum([f |
		some line, tokens in lines
		f := (tokens % _million) * (prices[line] % _million)
	])
}

# ceil(x / d) for integers x >= 0, d > 0, dividing only exact multiples.
_ceil_div(x, d) := ((x + d) - 1 - ((x + d - 1) % d)) / d

# -- adjustments --------------------------------------------------------------------------------

# [precedence, id, basis points] for every charged entity with an adjustment, most specific first.
_matches := sort([[i, e.id, bp] |
	some e in _entities
	some i, kind in _precedence
	e.type == kind
	bp := _adjustments[kind][e.id]
])

# The entities the request is charged to: given by the service (a record after its authorize), or
# attribution's, for an input shaped like the decision's.
_entities := {{"type": e.type, "id": e.id} | some e in input.charged} if is_array(input.charged)

else := entities

_adjustment_ok if count(_matches) == 0

_adjustment_ok if {
	bp := _matches[0][2]
	is_number(bp)
	_whole(bp + _basis, 2 * _basis)
}

default _adjustment := null

_adjustment := {"entity": {"type": _precedence[m[0]], "id": m[1]}, "basis_points": m[2]} if {
	m := _matches[0]
}

default _basis_points := 0

_basis_points := _matches[0][2]

# ceil(amount * (10000 + bp) / 10000), amount split into H * 10000 + l to keep products below 2^53.
_adjusted(amount, bp) := ((high * factor) + _ceil_div(low * factor, _basis)) if {
	factor := _basis + bp
	low := amount % _basis
	high := (amount - low) / _basis
}
