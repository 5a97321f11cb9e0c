"""Read a policy directory: every `.rego` module and `data.json` document, and a content hash.

Data documents are mounted at the path of their directory relative to the root, as OPA
does: `policies/data.json` is the data root, `policies/a/b/data.json` is `data.a.b`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PolicyError

__all__ = ["PolicySet", "load_policy_set", "merge_data"]


@dataclass(frozen=True)
class PolicySet:
    root: Path
    #: (path relative to root, source text), sorted by path.
    modules: tuple[tuple[str, str], ...]
    data: dict[str, Any] = field(default_factory=dict)
    #: sha256 of every module and data file (names and contents): the policy revision.
    revision: str = ""


def merge_data(target: dict[str, Any], path: tuple[str, ...], document: Any) -> None:
    """Merge `document` into `target` at `path`, objects merged key by key."""
    node = target
    for part in path:
        node = node.setdefault(part, {})
    if not isinstance(document, dict):
        raise PolicyError(f"data document at {'.'.join(path) or 'the root'} must be a JSON object")
    for key, value in document.items():
        if isinstance(value, dict) and isinstance(node.get(key), dict):
            merge_data(node, (key,), value)
        else:
            node[key] = value


def load_policy_set(*roots: Path, include_tests: bool = False) -> PolicySet:
    """Load the policies under `roots` (test files `*_test.rego` only with `include_tests`)."""
    modules: list[tuple[str, str]] = []
    data: dict[str, Any] = {}
    digest = hashlib.sha256()
    for root in roots:
        if not root.is_dir():
            raise PolicyError(f"policy directory {root} does not exist")
        for path in sorted(root.rglob("*")):
            if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
                continue
            relative = path.relative_to(root).as_posix()
            if path.suffix == ".rego" and (include_tests or not path.name.endswith("_test.rego")):
                source = path.read_text(encoding="utf-8")
                modules.append((f"{root.name}/{relative}", source))
            elif path.name == "data.json":
                source = path.read_text(encoding="utf-8")
                try:
                    document = json.loads(source)
                except json.JSONDecodeError as exc:
                    raise PolicyError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
                merge_data(data, tuple(path.parent.relative_to(root).parts), document)
            else:
                continue
            digest.update(relative.encode() + b"\0" + source.encode() + b"\0")
    if not modules:
        raise PolicyError(f"no .rego policies found under {', '.join(str(r) for r in roots)}")
    return PolicySet(roots[0], tuple(modules), data, "sha256:" + digest.hexdigest()[:16])
