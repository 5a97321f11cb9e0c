# METADATA
# title: Decision
# description: >-
#   The one document the service asks for per request (data.spendgate.decision.result),
#   assembled from attribution and admission. It holds no sets, only arrays in a fixed
#   order, so that OPA and the embedded engine serialise the same input to the same bytes.
package spendgate.decision

# Rules are imported one by one: regorus evaluates every rule of a package referenced through
# a package import (`import data.spendgate.admission`), which made each decision slower.
import data.spendgate.admission.alerts
import data.spendgate.admission.reasons
import data.spendgate.attribution.charges

# METADATA
# title: Decision result
# description: >-
#   {"allow", "charges", "reasons", "alerts"} as policies/INTERFACE.md describes it.
#   allow is true exactly when there is no reason to refuse. charges is the sorted array
#   of charged ledger ids, reported on a denial too (a record without a prior authorize
#   is attributed from it). reasons are sorted by code, entity type, entity id, ledger
#   and message; alerts by entity type, entity id and ledger.
result := {
	"allow": count(reasons) == 0,
	"charges": sort(charges),
	"reasons": [reason | some pair in sort([[_reason_order(r), r] | some r in reasons]); reason := pair[1]],
	"alerts": [alert | some pair in sort([[_alert_order(a), a] | some a in alerts]); alert := pair[1]],
}

# Sort keys hold only strings: null ids sort as "", and two distinct reasons never share a key,
# so the reason objects themselves are never compared (engines may order objects differently).
_reason_order(reason) := [
	reason.code,
	reason.entity.type,
	_text(reason.entity.id),
	_text(object.get(reason, "ledger", null)),
	reason.message,
]

_alert_order(alert) := [alert.entity.type, _text(alert.entity.id), alert.ledger]

_text(value) := value if is_string(value)

else := ""
