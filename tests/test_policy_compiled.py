"""The compiled decision (regorus's VM) serves a policy revision only while it decides like the interpreter.

The stand-in policy below holds a statement regorus's VM (gordon-to-regorus 0.13.0) gets wrong: a
body's `tier := input.key.tier`, whose `tier` nothing reads, succeeds on the VM although the value is
undefined (the interpreter and OPA: the body fails). Each test first shows the VM still gets it wrong,
so that a fixed VM turns these tests red rather than leaves them proving nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import regorus

from spendgate.cli import main
from spendgate.errors import PolicyError
from spendgate.policy import PolicySet, load_policy_set
from spendgate.policy.compiled import PROBE_COUNT, CompiledDecision, same_answer
from spendgate.policy.embedded import EmbeddedEngine
from spendgate.policy.engine import DECISION_QUERY
from spendgate.policy.probes import probe_inputs
from spendgate.runtime import _policy_engine
from spendgate.settings import Settings

POLICY_DIR = Path(__file__).resolve().parents[1] / "policies"

#: Refuses the requests for model `{model}` of keys with a `tier` (no key has one: it allows all).
MISJUDGED = """package spendgate.decision

default allow := true

allow := false if {{
	input.request.model == "{model}"
	tier := input.key.tier
}}

result := {{"allow": allow, "charges": [], "reasons": _reasons, "alerts": []}}

_reasons := [] if allow

else := [{{"code": "key_blocked", "entity": {{"type": "key", "id": "k1"}}, "message": "tiered key"}}]
"""


def misjudged(root: Path, model: str) -> PolicySet:
    (root / "decision.rego").write_text(MISJUDGED.format(model=model))
    return load_policy_set(root)


def request_for(model: str) -> dict[str, Any]:
    return {"request": {"request_id": f"req-{model}", "model": model}, "key": {"id": "k1"}, "ledgers": []}


def vm_allows(policies: PolicySet, input_doc: dict[str, Any]) -> bool:
    """What regorus's VM alone answers (the precondition each test relies on)."""
    program = regorus.Program.compile_from_modules(
        "{}", [(policies.path_of(n), s) for n, s in policies.modules], [DECISION_QUERY]
    )
    vm = regorus.Rvm()
    vm.load_program(program)
    vm.set_data_json("{}")
    vm.set_input_json(json.dumps(input_doc))
    return bool(json.loads(vm.execute_entry_point(DECISION_QUERY))["allow"])


def decide(engine: EmbeddedEngine, input_doc: dict[str, Any]) -> bool:
    return asyncio.run(engine.decide(input_doc)).allow


def test_the_shipped_policies_are_decided_by_the_compiled_engine() -> None:
    assert EmbeddedEngine(load_policy_set(POLICY_DIR)).compiled
    assert not EmbeddedEngine(load_policy_set(POLICY_DIR), compiled=False).compiled


def test_the_probe_inputs_reach_both_outcomes_and_every_reason_of_the_shipped_policy() -> None:
    engine = EmbeddedEngine(load_policy_set(POLICY_DIR), compiled=False)
    seen: Counter[str] = Counter()
    for input_doc in probe_inputs(PROBE_COUNT):
        decision = asyncio.run(engine.decide(input_doc))
        seen["allow" if decision.allow else "deny"] += 1
        seen.update(reason["code"] for reason in decision.reasons)
        seen.update(alert["code"] for alert in decision.alerts)
    assert min(seen["allow"], seen["deny"]) >= PROBE_COUNT // 5, seen
    for code in ("invalid_key", "key_blocked", "key_expired", "model_not_allowed", "budget_exceeded"):
        assert seen[code] > 0, (code, seen)
    assert seen["soft_budget_crossed"] > 0 and seen["policy_undefined"] == 0, seen
    assert list(probe_inputs(8)) == list(probe_inputs(8)), "the corpus is the same on every start"


def test_a_policy_the_vm_misjudges_on_a_probe_input_is_decided_by_the_interpreter(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    policies = misjudged(tmp_path, "gpt-4o")  # a model the probes use
    assert not vm_allows(policies, request_for("gpt-4o"))
    with caplog.at_level(logging.WARNING, logger="spendgate.policy"):
        engine = EmbeddedEngine(policies)
    assert not engine.compiled
    assert decide(engine, request_for("gpt-4o"))
    assert f"policy revision {policies.revision}: the compiled engine decides probe input" in caplog.text


def test_a_disagreement_found_by_a_check_is_served_the_interpreters_answer_and_ends_compiled_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    policies = misjudged(tmp_path, "model-no-probe-uses")
    assert not vm_allows(policies, request_for("model-no-probe-uses"))
    engine = EmbeddedEngine(policies, check_every=1)
    assert engine.compiled  # the probes never meet the misjudged body
    assert decide(engine, request_for("gpt-4o"))  # checked, alike: still compiled
    assert engine.compiled
    with caplog.at_level(logging.ERROR, logger="spendgate.policy"):
        assert decide(engine, request_for("model-no-probe-uses"))
    assert not engine.compiled
    assert "decided request req-model-no-probe-uses unlike the interpreter; the interpreter decides this revision" in caplog.text
    assert decide(engine, request_for("model-no-probe-uses"))


def test_only_every_nth_compiled_decision_is_checked(tmp_path: Path) -> None:
    engine = EmbeddedEngine(misjudged(tmp_path, "model-no-probe-uses"), check_every=3)
    answers = [decide(engine, request_for("model-no-probe-uses")) for _ in range(4)]
    # The first two are the VM's own (wrong) answers: the price of checking a sample, said in the docs.
    assert answers == [False, False, True, True]
    assert not engine.compiled


def test_with_checks_off_no_decision_is_evaluated_twice(tmp_path: Path) -> None:
    engine = EmbeddedEngine(misjudged(tmp_path, "model-no-probe-uses"), check_every=0)
    assert [decide(engine, request_for("model-no-probe-uses")) for _ in range(200)] == [False] * 200
    assert engine.compiled
    with pytest.raises(ValueError, match="check_every"):
        EmbeddedEngine(load_policy_set(POLICY_DIR), check_every=-1)


def test_a_failing_vm_leaves_the_decision_to_the_interpreter(caplog: pytest.LogCaptureFixture) -> None:
    engine = EmbeddedEngine(load_policy_set(POLICY_DIR), check_every=0)
    current = engine._current
    engine._current = current._replace(decision=CompiledDecision(regorus.Rvm()))  # a VM with no program raises
    input_doc = next(probe_inputs(1))
    reference = asyncio.run(EmbeddedEngine(load_policy_set(POLICY_DIR), compiled=False).decide(input_doc))
    with caplog.at_level(logging.ERROR, logger="spendgate.policy"):
        assert asyncio.run(engine.decide(input_doc)) == reference
    assert not engine.compiled and "unlike the interpreter" in caplog.text


def test_a_policy_error_is_raised_as_the_interpreter_raises_it(tmp_path: Path) -> None:
    (tmp_path / "decision.rego").write_text(
        "package spendgate.decision\n\nresult := {\"allow\": count(input.request.model) > 0, \"charges\": []}\n"
    )
    engine = EmbeddedEngine(load_policy_set(tmp_path), check_every=1)
    with pytest.raises(PolicyError, match="policy evaluation failed: .*count"):
        asyncio.run(engine.decide({"request": {"model": 5}}))


async def test_a_swapped_revision_is_proven_again(tmp_path: Path) -> None:
    engine = EmbeddedEngine(load_policy_set(POLICY_DIR))
    assert engine.compiled
    await engine.swap(misjudged(tmp_path, "gpt-4o"))
    assert not engine.compiled
    await engine.swap(load_policy_set(POLICY_DIR))
    assert engine.compiled


async def test_decisions_go_on_while_a_reloaded_revision_is_proven(tmp_path: Path) -> None:
    shutil.copytree(POLICY_DIR, tmp_path / "policies")
    (tmp_path / "policies" / "extra.rego").write_text("package mine\n\nnote := 1\n")  # a new revision
    engine, reloaded = EmbeddedEngine(load_policy_set(POLICY_DIR)), load_policy_set(tmp_path / "policies")
    swapping = asyncio.create_task(engine.swap(reloaded))
    await asyncio.sleep(0)  # the swap compiles, then proves its first probes and lets the loop go on
    decision = await engine.decide(next(probe_inputs(1)))
    assert not swapping.done() and decision.revision != reloaded.revision  # served mid-proof, by the old one
    await swapping
    assert engine.revision == reloaded.revision and engine.compiled


def test_the_settings_choose_the_interpreter_and_the_check_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    policies = load_policy_set(POLICY_DIR)
    monkeypatch.setenv("SPENDGATE_POLICY_COMPILED", "false")
    assert not _policy_engine(Settings(), policies).compiled  # type: ignore[attr-defined]
    monkeypatch.setenv("SPENDGATE_POLICY_COMPILED", "true")
    assert _policy_engine(Settings(), policies).compiled  # type: ignore[attr-defined]
    monkeypatch.setenv("SPENDGATE_POLICY_COMPILED_CHECK_EVERY", "-1")
    with pytest.raises(ValueError, match="policy_compiled_check_every"):
        Settings()


def test_policy_check_says_which_engine_decides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(POLICY_DIR)]) == 0
    assert f"the compiled engine decides them (it answered all {PROBE_COUNT} probe inputs" in capsys.readouterr().out
    misjudged(tmp_path, "gpt-4o")
    assert main(["policy", "check", str(tmp_path)]) == 0  # it compiles: the service runs it, on the interpreter
    out = capsys.readouterr().out
    assert "the interpreter decides them: the compiled engine decides probe input" in out
    (tmp_path / "decision.rego").unlink()
    (tmp_path / "lib.rego").write_text("package mine.lib\n\nx := 1\n")  # no decision: no verdict
    assert main(["policy", "check", str(tmp_path)]) == 0
    assert "decides them" not in capsys.readouterr().out


def test_answers_are_the_same_only_with_the_same_types() -> None:
    assert same_answer('{"allow": true, "charges": ["a"]}', '{\n  "charges": ["a"],\n  "allow": true\n}')
    assert not same_answer('{"allow": true}', '{"allow": 1}')
    assert not same_answer('{"limit": 1}', '{"limit": 1.0}')
    assert not same_answer('"<undefined>"', RuntimeError("count: wrong type"))
    assert same_answer(RuntimeError("one"), RuntimeError("other"))
