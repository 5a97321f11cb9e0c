"""Cost of one policy decision through the embedded engine, split into its parts.

Loads /work/main/policies with `spendgate.policy.load_policy_set`, compiles them with
`spendgate.policy.embedded.EmbeddedEngine`, builds a realistic authorize input the way the service
does (`candidate_ledgers` + `build_input`, see bench/_fixtures.py: a team key with 11 candidate
ledgers) and times, over N evaluations each (after a warm-up):

  candidate_ledgers      facts → candidate ledgers (periods of every budget window)
  build_input            candidates + figures → the input document (policies/INTERFACE.md)
  orjson.dumps(input)    encoding the input, as EmbeddedEngine.decide does
  set_input_json         regorus's interpreter parses the JSON input
  eval_rule_as_json      the interpreter's evaluation (the rule path, evaluated as a rule)
  json.loads + validate  decoding the result and `decision_from_result`
  decide(), interpreter  `await EmbeddedEngine.decide(input)` with the compiled VM off
  compiled VM            regorus's virtual machine: input and evaluation (policy/compiled.py)
  decide() end to end    `await EmbeddedEngine.decide(input)` as the service runs it (the compiled VM,
                         every 100th decision also evaluated by the interpreter)

and, for comparison, alternatives decide() could use: `set_input(dict)` (no JSON text) and
`eval_query_as_json` (the rule path as a query, which decide() used until issue 11: twice the cost). Prints p50/p99 in µs and the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from _common import ROOT, fmt_us, machine_summary, pct
from _fixtures import decision_inputs
from spendgate.decisions.candidates import candidate_ledgers
from spendgate.decisions.policy_input import build_input
from spendgate.policy import DECISION_QUERY, load_policy_set
from spendgate.policy.embedded import EmbeddedEngine
from spendgate.policy.engine import decision_from_result


def measure(fn: Callable[[], Any], n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    samples.sort()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=5000, help="evaluations per measurement")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--personal", action="store_true", help="a personal key instead of a team key")
    parser.add_argument("--policy-dir", default=str(ROOT / "policies"))
    args = parser.parse_args(argv)

    policies = load_policy_set(Path(args.policy_dir))
    engine = EmbeddedEngine(policies)  # as the service runs it: the compiled VM, 1 decision in 100 checked
    interpreted = EmbeddedEngine(policies, compiled=False)
    regorus_engine = interpreted._current.interpreter  # the regorus.Engine the interpreter's decide() uses
    compiled = engine._current.decision
    if compiled is None:
        print("warning: the compiled engine did not pass its probes; decide() is the interpreter's", file=sys.stderr)
    facts, candidates, figures, doc = decision_inputs(team_key=not args.personal)
    text = json.dumps(doc)
    regorus_engine.set_input_json(text)
    raw = regorus_engine.eval_query_as_json(DECISION_QUERY)
    rows = json.loads(raw).get("result") or []
    result = rows[0]["expressions"][0]["value"] if rows else None
    decision = decision_from_result(result, revision=engine.revision)
    if not decision.allow:
        print(f"warning: the fixture input is denied: {decision.reasons}", file=sys.stderr)

    instant = datetime.fromisoformat(doc["request"]["now"].replace("Z", "+00:00"))  # the fixture's instant
    loop = asyncio.new_event_loop()

    def decode() -> Any:
        rows = json.loads(raw).get("result") or []
        return decision_from_result(rows[0]["expressions"][0]["value"] if rows else None, revision=engine.revision)

    def eval_rule_path() -> Any:
        regorus_engine.set_input_json(text)
        return regorus_engine.eval_rule_as_json(DECISION_QUERY)

    def set_input_dict() -> Any:
        regorus_engine.set_input(doc)
        return regorus_engine.eval_query_as_json(DECISION_QUERY)

    parts: list[tuple[str, Callable[[], Any]]] = [
        ("candidate_ledgers(facts)", lambda: candidate_ledgers(facts, instant)),
        ("build_input(...)", lambda: build_input(
            request_id="req-0001", phase="authorize", model="gpt-4o", end_user="cust-40", tags=["tag-2", "tag-5"],
            estimated_cost=20_000_000, now=instant, facts=facts, candidates=candidates, figures=figures)),
        ("orjson.dumps(input)", lambda: orjson.dumps(doc)),
        ("set_input_json(text)", lambda: regorus_engine.set_input_json(text)),
        ("eval_rule_as_json(rule)", lambda: regorus_engine.eval_rule_as_json(DECISION_QUERY)),
        ("json.loads + validate result", decode),
        ("decide() end to end, interpreter", lambda: loop.run_until_complete(interpreted.decide(doc))),
        ("compiled VM: set_input_json + execute", lambda: compiled.evaluate(text) if compiled else None),
        ("decide() end to end", lambda: loop.run_until_complete(engine.decide(doc))),
    ]
    def eval_query_path() -> Any:
        regorus_engine.set_input_json(text)
        return regorus_engine.eval_query_as_json(DECISION_QUERY)

    alternatives: list[tuple[str, Callable[[], Any]]] = [
        ("set_input_json + eval_rule_as_json (used)", eval_rule_path),
        ("set_input_json + eval_query_as_json", eval_query_path),
        ("set_input(dict) + eval_query_as_json", set_input_dict),
    ]

    print(machine_summary())
    print(f"policies: {args.policy_dir} (revision {engine.revision}); input: {'personal' if args.personal else 'team'} "
          f"key, {len(candidates)} candidate ledgers, {len(text)} bytes of JSON; result: "
          f"{'allow' if decision.allow else 'deny'}, {len(decision.charges)} charges; n={args.n}")
    print(f"{'step':<40} {'p50 µs':>8} {'p99 µs':>8} {'mean µs':>8}")
    medians: dict[str, float] = {}
    for group, rows_ in (("", parts), ("alternatives to decide()'s two engine calls:", alternatives)):
        if group:
            print(group)
        for name, fn in rows_:
            samples = measure(fn, args.n, args.warmup)
            medians[name] = pct(samples, 50)
            print(f"{name:<40} {fmt_us(pct(samples, 50)):>8} {fmt_us(pct(samples, 99)):>8} "
                  f"{fmt_us(sum(samples) / len(samples)):>8}")
    engine_part = medians["set_input_json(text)"] + medians["eval_rule_as_json(rule)"]
    json_part = medians["orjson.dumps(input)"] + medians["json.loads + validate result"]
    total = medians["decide() end to end"]
    interpreter_total = medians["decide() end to end, interpreter"]
    print(f"the interpreter's decide() p50 {fmt_us(interpreter_total)} µs: engine (set_input_json + eval) {fmt_us(engine_part)} µs "
          f"({100 * engine_part / interpreter_total:.0f}%), Python JSON encode/decode {fmt_us(json_part)} µs "
          f"({100 * json_part / interpreter_total:.0f}%); building the input (candidates + build_input) adds "
          f"{fmt_us(medians['candidate_ledgers(facts)'] + medians['build_input(...)'])} µs per attempt")
    print(f"decide() as the service runs it (compiled VM, 1 in 100 also interpreted): {fmt_us(total)} µs, "
          f"{total / interpreter_total:.2f}× the interpreter's {fmt_us(interpreter_total)} µs")
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
