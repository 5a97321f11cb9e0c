"""What one policy evaluation costs regorus, in CPU instructions: the same figure on every run.

    python bench/policy_instructions.py [--rule data.spendgate.attribution.entities ...] [-n 200]

Wall-clock timings of a ~100 µs evaluation move by ±30 % on a shared VM, so a reshape worth 10 % cannot
be seen in them. `valgrind --tool=callgrind` counts the instructions executed instead, which for the
same policies and input is the same number every run (PYTHONHASHSEED fixed). Each rule is measured in
a child process under callgrind that sets the input and evaluates the rule N times inside one
`functools.reduce` call, the only code collected (`--toggle-collect=functools_reduce`), after a
warm-up; the figure is instructions per evaluation, input parsing (`set_input_json`) included. The row
`(set_input_json only)` is the input alone, so a rule's own cost is its row minus that one; a rule's
row includes the rules it reads and writing its value as JSON.

Input: bench/_fixtures.py's team key with 11 candidate ledgers (as bench/policy_eval.py). Needs
valgrind (Debian package `valgrind`); about 20 s per rule.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT

DEFAULT_RULES = (
    "data.spendgate.attribution.key_kind",
    "data.spendgate.attribution.entities",
    "data.spendgate.attribution.charges",
    "data.spendgate.admission.reasons",
    "data.spendgate.decision.result",
)
_INPUT_ONLY = "(set_input_json only)"


def _child(policy_dir: str, rule: str, n: int) -> None:
    """Runs under callgrind: everything but the reduce() below is left out of the count."""
    from _fixtures import decision_inputs
    from spendgate.policy import load_policy_set
    from spendgate.policy.embedded import compile_policy_set

    engine = compile_policy_set(load_policy_set(Path(policy_dir)))
    text = json.dumps(decision_inputs(team_key=True)[3])

    def once(_: object, __: object) -> None:
        engine.set_input_json(text)
        if rule != _INPUT_ONLY:
            engine.eval_rule_as_json(rule)

    for _ in range(20):  # warm-up, not collected
        once(None, None)
    functools.reduce(once, range(n), None)


def _instructions(policy_dir: str, rule: str, n: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=functools_reduce",
             f"--callgrind-out-file={out}/callgrind.out", sys.executable, __file__, "--child", policy_dir, rule,
             str(n)],
            capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"},
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run of {rule} failed:\n{done.stderr[-2000:]}")
    return int(found.group(1)) / n


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--child":
        _child(args[1], args[2], int(args[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rule", action="append", help="a rule path (repeatable); default: the main ones")
    parser.add_argument("-n", type=int, default=200, help="evaluations counted per rule")
    parser.add_argument("--policy-dir", default=str(ROOT / "policies"))
    options = parser.parse_args(args)
    rules = [_INPUT_ONLY, *(options.rule or DEFAULT_RULES)]
    print(f"policies: {options.policy_dir}; input: team key, 11 candidate ledgers; n={options.n}")
    print(f"{'rule':45s} {'k instructions / evaluation':>28s}")
    for rule in rules:
        print(f"{rule:45s} {_instructions(options.policy_dir, rule, options.n) / 1000:28.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
