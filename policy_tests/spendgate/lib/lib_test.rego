# METADATA
# title: Tests of spendgate.lib
# description: >-
#   Money formatting, entity labels and the null-safe helpers.
package spendgate.lib_test

import data.spendgate.lib

test_usd_formats_six_decimals_when_amount_is_whole_micro_usd if {
	lib.usd(0) == "0.000000"
	lib.usd(150000) == "0.000150"
	lib.usd(1250000000) == "1.250000"
	lib.usd(10000000000) == "10.000000"
}

test_usd_keeps_nano_digits_when_amount_has_them if {
	lib.usd(1) == "0.000000001"
	lib.usd(1000000001) == "1.000000001"
	lib.usd(123456789) == "0.123456789"
	lib.usd(12345678901234) == "12345.678901234"
}

test_label_names_type_and_id_when_entity_given if {
	lib.label({"type": "team", "id": "t1"}) == "team t1"
	lib.label({"type": "team_member", "id": "t1/u1"}) == "team member t1/u1"
	lib.label({"type": "end_user", "id": "cust-9"}) == "end user cust-9"
}

test_number_is_value_when_number if {
	lib.number(5) == 5
	lib.number(0) == 0
}

test_number_is_zero_when_null_or_not_number if {
	lib.number(null) == 0
	lib.number("5") == 0
}

test_positive_holds_when_number_above_zero if {
	lib.positive(1)
}

test_positive_fails_when_zero_null_or_not_number if {
	not lib.positive(0)
	not lib.positive(null)
	not lib.positive(-1)
	not lib.positive("1")
}

test_amount_text_is_display_string_when_ledger_has_one if {
	lib.amount_text({"spent": 1250000000, "display": {"spent": "1.25 as sent"}}, "spent") == "1.25 as sent"
}

test_amount_text_is_formatted_when_display_missing_or_null if {
	lib.amount_text({"spent": 1250000000}, "spent") == "1.250000"
	lib.amount_text({"spent": 1250000000, "display": null}, "spent") == "1.250000"
	lib.amount_text({"spent": 1250000000, "display": {"limit": "9.000000"}}, "spent") == "1.250000"
}

test_amount_text_is_zero_when_amount_missing_or_null if {
	lib.amount_text({}, "reserved") == "0.000000"
	lib.amount_text({"reserved": null}, "reserved") == "0.000000"
}
