"""Build hook: ship a copy of `policies/` and `policy_tests/` inside the wheel (all else is in pyproject.toml).

The two folders stay at the top of the project (`opa test policies policy_tests` runs there), which a
wheel cannot reach, so `build_py` copies them to `spendgate/_bundled/` as package data. An editable
install gets no copy: it reads the checkout's folders (spendgate/resources.py decides which).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: Top-level folders copied into the package, and where they land inside it.
BUNDLED = ("policies", "policy_tests")
BUNDLED_INTO = ("spendgate", "_bundled")


def _files(folder: Path) -> list[str]:
    """Every file under `folder` (relative, POSIX), hidden ones and caches left out."""
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and not any(part.startswith((".", "__pycache__")) for part in path.relative_to(folder).parts)
    )


class BuildPyWithPolicies(build_py):
    """build_py whose package data also carries the bundled folders (so `get_outputs` lists them)."""

    def run(self) -> None:
        if not self.editable_mode:  # an in-tree build/ must not keep files since deleted from the folders
            shutil.rmtree(os.path.join(self.build_lib, *BUNDLED_INTO), ignore_errors=True)
        super().run()

    def _get_data_files(self) -> list[tuple[str, str, str, list[str]]]:
        data_files = list(super()._get_data_files())
        if self.editable_mode:
            return data_files
        for name in BUNDLED:
            source = ROOT / name
            if not source.is_dir():
                raise SystemExit(f"setup.py: {source} is missing; build from a checkout or a complete sdist")
            target = os.path.join(self.build_lib, *BUNDLED_INTO, name)
            data_files.append((BUNDLED_INTO[0], str(source), target, _files(source)))
        return data_files


setup(cmdclass={"build_py": BuildPyWithPolicies})
