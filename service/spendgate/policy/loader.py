"""Read a policy directory: every `.rego` module and `data.json` document, and a content hash.

Data documents are mounted at the path of their directory relative to the root, as OPA
does: `policies/data.json` is the data root, `policies/a/b/data.json` is `data.a.b`.

A module has two names: its id, `<root name>/<path under root>` (stable wherever the service
runs: OPA stores modules under it), and the path a user can open (`PolicySet.path_of`),
which is what engines are given, so that every error and test result points at the file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import PolicyError

__all__ = ["ModuleFile", "PolicySet", "display_path", "load_policy_set", "merge_data", "combine_policy_sets"]

TEST_SUFFIX = "_test.rego"


class ModuleFile(NamedTuple):
    """Where a module was read from."""

    #: Relative to the working directory when the file is under it, absolute otherwise.
    path: str
    #: The directory it was loaded from (one of the roots given to `load_policy_set`).
    root: Path


@dataclass(frozen=True)
class PolicySet:
    root: Path
    #: (module id, source text), sorted by path within each root.
    modules: tuple[tuple[str, str], ...]
    data: dict[str, Any] = field(default_factory=dict)
    #: sha256 of every module and data file (names and contents): the policy revision.
    revision: str = ""
    #: Module id → the file it came from.
    files: dict[str, ModuleFile] = field(default_factory=dict)

    def path_of(self, module_id: str) -> str:
        """The path of a module as a user can open it (the id itself for a set built by hand)."""
        known = self.files.get(module_id)
        return known.path if known else module_id


def display_path(path: Path) -> str:
    """`path` relative to the working directory when it is under it, absolute otherwise."""
    absolute = Path(os.path.abspath(path))  # normalised (no `..`), symlinks kept as the user named them
    try:
        return absolute.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return absolute.as_posix()


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


def load_policy_set(*roots: Path, include_tests: bool = False, only_tests: bool = False) -> PolicySet:
    """Load the policies under `roots` (test files `*_test.rego` only with `include_tests`).

    `only_tests` loads nothing but the test modules (no data, and none at all is not an error).
    """
    modules: list[tuple[str, str]] = []
    files: dict[str, ModuleFile] = {}
    data: dict[str, Any] = {}
    digest = hashlib.sha256()
    for root in roots:
        if not root.is_dir():
            raise PolicyError(f"policy directory {root} does not exist")
        for path in sorted(root.rglob("*")):
            if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
                continue
            relative = path.relative_to(root).as_posix()
            is_test = path.name.endswith(TEST_SUFFIX)
            if path.suffix == ".rego" and (is_test if only_tests else include_tests or not is_test):
                source = path.read_text(encoding="utf-8")
                module_id = f"{root.name}/{relative}"
                modules.append((module_id, source))
                files[module_id] = ModuleFile(display_path(path), root)
            elif path.name == "data.json" and not only_tests:
                source = path.read_text(encoding="utf-8")
                try:
                    document = json.loads(source)
                except json.JSONDecodeError as exc:
                    raise PolicyError(f"{display_path(path)}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
                merge_data(data, tuple(path.parent.relative_to(root).parts), document)
            else:
                continue
            digest.update(relative.encode() + b"\0" + source.encode() + b"\0")
    if not modules and not only_tests:
        raise PolicyError(f"no .rego policies found under {', '.join(display_path(r) for r in roots)}")
    return PolicySet(roots[0], tuple(modules), data, "sha256:" + digest.hexdigest()[:16], files)


def combine_policy_sets(base: PolicySet, *others: PolicySet) -> PolicySet:
    """`base` with the modules and data of `others` added (their data merged over a copy of base's).

    The result keeps base's root and revision: it is base, seen together with its tests.
    """
    data = copy.deepcopy(base.data)
    modules = list(base.modules)
    files = dict(base.files)
    for other in others:
        merge_data(data, (), other.data)
        modules.extend(other.modules)
        files.update(other.files)
    return PolicySet(base.root, tuple(modules), data, base.revision, files)
