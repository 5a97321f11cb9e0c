# METADATA
# title: Tests of spendgate.pricing
# description: >-
#   The price of usage to the nano-USD (rounding up, at the boundaries, on the largest counts),
#   table lookup, adjustments and every unpriced answer. Prices and adjustments are pinned, so
#   the tests hold whatever the shipped price table says.
package spendgate.pricing_test

import data.spendgate.pricing

# $2.50 / $1.25 cached / $10 per 1M tokens, and a model with every line priced.
_prices := {
	"gpt-x": {"input": 2500000000, "cached_input": 1250000000, "output": 10000000000},
	"think": {"input": 1000000, "output": 2000000, "cached_input": 500000, "reasoning": 3000000},
	"tiny": {"input": 1, "output": 333333},
	"dearest": {"input": 1000000000000, "output": 1000000000000},
}

_usage(model, usage) := {"request": {"model": model, "usage": usage}, "charged": []}

_charged(model, usage, charged) := {"request": {"model": model, "usage": usage}, "charged": charged}

_result(doc) := _adjusted(doc, {})

_adjusted(doc, adjustments) := r if {
	r := pricing.result with input as doc
		with data.spendgate.pricing.prices as _prices
		with data.spendgate.pricing.adjustments as adjustments
}

test_result_prices_each_line_when_usage_has_cached_input if {
	# 1034 input at 2.5, 200 cached at 1.25, 567 output at 10 (USD per 1M): 2585000 + 250000 + 5670000 nano-USD.
	_result(_usage("gpt-x", {"input_tokens": 1234, "cached_input_tokens": 200, "output_tokens": 567})) == {
		"priced": true,
		"model": "gpt-x",
		"cost": 8505000,
		"list_cost": 8505000,
		"adjustment": null,
	}
}

test_result_prices_reasoning_and_cached_lines_when_the_model_has_them if {
	# Prices of 1, 0.5, 2 and 3 nano-USD per token: 90 input, 10 cached, 60 output, 40 reasoning tokens.
	r := _result(_usage("think", {
		"input_tokens": 100,
		"cached_input_tokens": 10,
		"output_tokens": 100,
		"reasoning_tokens": 40,
	}))
	r.cost == 335 # 90 + 5 + 120 + 120
}

test_result_uses_input_and_output_prices_when_row_lacks_cached_and_reasoning if {
	r := _result(_usage("gpt-x", {"input_tokens": 0, "output_tokens": 1000000, "reasoning_tokens": 1000000}))
	r.cost == 10000000000
	r2 := _result(_usage("tiny", {"input_tokens": 3000000, "cached_input_tokens": 3000000}))
	r2.cost == 3
}

test_result_rounds_up_to_the_nano_usd_when_price_has_a_fraction if {
	_result(_usage("tiny", {"input_tokens": 1})).cost == 1
	_result(_usage("tiny", {"input_tokens": 1000000})).cost == 1
	_result(_usage("tiny", {"input_tokens": 1000001})).cost == 2
	_result(_usage("tiny", {"output_tokens": 3})).cost == 1 # 999999 femto-USD
	_result(_usage("tiny", {"output_tokens": 4})).cost == 2 # 1333332 femto-USD
	_result(_usage("tiny", {"input_tokens": 0, "output_tokens": 0})).cost == 0
}

test_result_is_exact_when_counts_and_prices_are_the_largest_allowed if {
	r := _result(_usage("dearest", {"input_tokens": 1000000000, "output_tokens": 1000000000}))
	r.cost == 2000000000000000
	r2 := _result(_usage("dearest", {"input_tokens": 999999999, "output_tokens": 999999}))
	r2.cost == 1000999998000000
	r3 := _result(_usage("gpt-x", {
		"input_tokens": 987654321,
		"cached_input_tokens": 123456789,
		"output_tokens": 999999999,
	}))
	r3.cost == 12314814806250 # 864197532 * 2500 + 123456789 * 1250 + 999999999 * 10000 nano-USD per token
}

test_result_uses_the_name_after_the_provider_when_model_is_prefixed if {
	r := _result(_usage("openai/gpt-x", {"input_tokens": 1000000}))
	r.model == "gpt-x"
	r.cost == 2500000000
}

test_result_is_unknown_price_when_model_not_in_table if {
	r := _result(_usage("mystery", {"input_tokens": 1}))
	r.priced == false
	r.code == "unknown_price"
	r.model == "mystery"
	contains(r.message, "policies/spendgate/pricing/data.json")
}

test_result_is_unknown_price_when_request_names_no_model if {
	r := _result(_usage(null, {"input_tokens": 1}))
	r.code == "unknown_price"
	r.model == null
}

test_result_is_unknown_price_when_there_is_no_table if {
	r := pricing.result with input as _usage("gpt-x", {"input_tokens": 1}) with data.spendgate.pricing.prices as null
	r.code == "unknown_price"
}

test_result_is_invalid_usage_when_counts_are_out_of_range if {
	_result(_usage("gpt-x", {"input_tokens": 1000000001})).code == "invalid_usage"
	_result(_usage("gpt-x", {"input_tokens": -1})).code == "invalid_usage"
	_result(_usage("gpt-x", {"input_tokens": 1.5})).code == "invalid_usage"
	_result(_usage("gpt-x", {"input_tokens": "7"})).code == "invalid_usage"
	_result(_usage("gpt-x", {"input_tokens": 1, "cached_input_tokens": 2})).code == "invalid_usage"
	_result(_usage("gpt-x", {"output_tokens": 1, "reasoning_tokens": 2})).code == "invalid_usage"
	_result({"request": {"model": "gpt-x"}}).code == "invalid_usage"
}

test_result_is_invalid_price_when_the_table_row_is_wrong if {
	rows := [
		{"input": 1},
		{"input": 1, "output": 1000000000001},
		{"input": 1, "output": 1.5},
		{"input": 1, "output": 1, "cached_input": -1},
		{"input": "1", "output": 1},
	]
	every row in rows {
		r := pricing.result with input as _usage("m", {"input_tokens": 1})
			with data.spendgate.pricing.prices as {"m": row}
		r.code == "invalid_price"
	}
}

test_result_applies_a_team_discount_when_the_request_charges_the_team if {
	doc := _charged("gpt-x", {"input_tokens": 1234, "cached_input_tokens": 200, "output_tokens": 567}, [
		{"type": "key", "id": "k1"},
		{"type": "team", "id": "t1"},
	])
	r := _adjusted(doc, {"team": {"t1": -1000}})
	r.list_cost == 8505000
	r.cost == 7654500
	r.adjustment == {"entity": {"type": "team", "id": "t1"}, "basis_points": -1000}
}

test_result_ignores_adjustments_when_the_request_does_not_charge_the_entity if {
	doc := _charged("gpt-x", {"input_tokens": 1000}, [{"type": "team", "id": "t2"}])
	r := _adjusted(doc, {"team": {"t1": -1000}, "end_user": {"t2": 500}})
	r.cost == 2500000
	r.adjustment == null
}

test_result_applies_the_most_specific_adjustment_when_several_match if {
	doc := _charged("gpt-x", {"input_tokens": 1000}, [
		{"type": "org", "id": "o1"},
		{"type": "team", "id": "t1"},
		{"type": "end_user", "id": "cust-9"},
	])
	r := _adjusted(doc, {"org": {"o1": -5000}, "team": {"t1": -1000}, "end_user": {"cust-9": 2000}})
	r.cost == 3000000
	r.adjustment.entity == {"type": "end_user", "id": "cust-9"}
}

test_result_rounds_the_adjusted_cost_up_when_it_has_a_fraction if {
	doc := _charged("tiny", {"output_tokens": 9}, [{"type": "key", "id": "k1"}]) # 2999997 femto: 3 nano-USD
	_adjusted(doc, {"key": {"k1": 3333}}).cost == 4 # 3 * 1.3333 = 3.9999
	_adjusted(doc, {"key": {"k1": -1}}).cost == 3 # 3 * 0.9999 = 2.9997
	_adjusted(doc, {"key": {"k1": -10000}}).cost == 0
	_adjusted(doc, {"key": {"k1": 10000}}).cost == 6
}

test_result_is_exact_when_the_largest_cost_is_marked_up if {
	doc := _charged("dearest", {"input_tokens": 1000000000, "output_tokens": 999999999}, [{"type": "org", "id": "o"}])
	r := _adjusted(doc, {"org": {"o": 9999}})
	r.list_cost == 1999999999000000
	r.cost == 3999799998000100 # 1999999999000000 * 1.9999
}

test_result_is_invalid_adjustment_when_basis_points_are_out_of_range if {
	doc := _charged("gpt-x", {"input_tokens": 1}, [{"type": "team", "id": "t1"}])
	_adjusted(doc, {"team": {"t1": 10001}}).code == "invalid_adjustment"
	_adjusted(doc, {"team": {"t1": -10001}}).code == "invalid_adjustment"
	_adjusted(doc, {"team": {"t1": 0.5}}).code == "invalid_adjustment"
	_adjusted(doc, {"team": {"t1": "10"}}).code == "invalid_adjustment"
}

test_result_adjusts_by_attribution_entities_when_input_is_the_decision_input if {
	doc := {
		"request": {"model": "gpt-x", "usage": {"input_tokens": 1000}, "end_user": null, "tags": []},
		"key": {"id": "k1", "user_id": null, "team_id": "t1"},
		"team": {"id": "t1", "org_id": "o1"},
	}
	r := _adjusted(doc, {"org": {"o1": -2000}})
	r.cost == 2000000
	r.adjustment.entity == {"type": "org", "id": "o1"}
}

test_cost_is_exact_sum_rounded_up_once_when_lines_have_fractions if {
	# Three lines of 0.4 nano-USD: 1.2 rounds up once to 2, where rounding each line would give 3.
	pricing.cost({"a": 1, "b": 1, "c": 1}, {"a": 400000, "b": 400000, "c": 400000}) == 2
	pricing.cost({"a": 2000000}, {"a": 1500000}) == 3000000
}
