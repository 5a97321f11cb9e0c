"""Where the files shipped beside the code live: the checkout's own, or the copy inside the wheel.

The policies (`policies/`) and their tests (`policy_tests/`) stay at the top of the project, where
`opa test policies policy_tests` finds them. A wheel cannot reach outside its package, so the build
(`setup.py`) copies both into `spendgate/_bundled/`. Which of the two a process uses is decided here
and nowhere else: the checkout's when the package is imported from one (an editable install, so an
edit takes effect at once), otherwise the bundled copy.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BUNDLED_DIR", "resource_root", "default_policy_dir"]

_PACKAGE_DIR = Path(__file__).resolve().parent
#: The copy of `policies/` and `policy_tests/` a built wheel carries (absent in a checkout).
BUNDLED_DIR = _PACKAGE_DIR / "_bundled"


def _checkout_root() -> Path | None:
    """The project checkout this package is imported from (`<root>/service/spendgate`), if any."""
    root = _PACKAGE_DIR.parents[1]
    if _PACKAGE_DIR.parent.name == "service" and (root / "pyproject.toml").is_file() and (root / "policies").is_dir():
        return root
    return None


def resource_root() -> Path:
    """The directory holding `policies/` and `policy_tests/`: the checkout, or the wheel's bundled copy."""
    return _checkout_root() or BUNDLED_DIR


def default_policy_dir() -> Path:
    """The policies used when SPENDGATE_POLICY_DIR is not set."""
    return resource_root() / "policies"
