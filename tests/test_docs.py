"""The user documentation stays true to the code: every route, error code, setting and metric is in
docs/, and every relative Markdown link in the repository's docs resolves inside the repository.

The route list comes from the app itself and the settings from `Settings`, so a new route or
variable that nobody documented fails here rather than in a user's hands.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import iter_route_contexts

from spendgate.api import create_app
from spendgate.errors import SpendgateError
from spendgate.integrations.litellm import VARIABLES as LITELLM_VARIABLES
from spendgate.metrics import Metrics
from spendgate.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: Framework routes that are not part of the API (Swagger UI's OAuth2 helper page).
_INTERNAL_PATHS = {"/docs/oauth2-redirect"}
#: HEAD is answered wherever GET is; documenting GET covers it.
_IMPLIED_METHODS = {"HEAD"}


def _documented_routes() -> list[str]:
    app = create_app(Settings(_env_file=None))  # type: ignore[call-arg]
    found = []
    for route in iter_route_contexts(app.routes):
        if route.path is None or route.path in _INTERNAL_PATHS:
            continue
        for method in sorted(set(route.methods or ()) - _IMPLIED_METHODS):
            found.append(f"`{method} {route.path}`")
    return found


def _error_codes(cls: type[SpendgateError] = SpendgateError) -> set[str]:
    codes = {cls.code}
    for sub in cls.__subclasses__():
        codes |= _error_codes(sub)
    return codes


def test_every_route_of_the_app_is_in_the_api_reference() -> None:
    api = (DOCS / "api.md").read_text()
    routes = _documented_routes()
    assert len(routes) > 30, routes  # the app really was enumerated
    missing = [route for route in routes if route not in api]
    assert not missing, f"docs/api.md does not document: {', '.join(missing)}"


def test_every_error_code_of_the_hierarchy_is_in_the_api_reference() -> None:
    api = (DOCS / "api.md").read_text()
    codes = _error_codes()
    assert {"unauthorized", "invalid_request", "unavailable"} <= codes
    missing = sorted(code for code in codes if f"`{code}`" not in api)
    assert not missing, f"docs/api.md does not document the error codes: {', '.join(missing)}"


def test_every_setting_is_in_the_configuration_page() -> None:
    page = (DOCS / "configuration.md").read_text()
    missing = [
        f"SPENDGATE_{name.upper()}" for name in Settings.model_fields if f"`SPENDGATE_{name.upper()}`" not in page
    ]
    assert not missing, f"docs/configuration.md does not document: {', '.join(missing)}"


def test_every_metric_is_in_the_operations_page() -> None:
    page = (DOCS / "operations.md").read_text()
    names = [
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in Metrics(process=False).registry.collect()
    ]
    assert len(names) > 10, names
    missing = [name for name in names if f"`{name}`" not in page]
    assert not missing, f"docs/operations.md does not list the metrics: {', '.join(missing)}"


def test_every_variable_the_docs_name_is_a_real_setting() -> None:
    # The service's settings, and those the LiteLLM integration reads in the proxy (docs/litellm.md).
    known = {f"SPENDGATE_{name.upper()}" for name in Settings.model_fields} | set(LITELLM_VARIABLES)
    named: dict[str, set[str]] = {}
    for page in sorted(DOCS.rglob("*.md")):
        for variable in re.findall(r"\bSPENDGATE_[A-Z0-9_]*[A-Z0-9]\b", page.read_text()):
            named.setdefault(variable, set()).add(page.relative_to(ROOT).as_posix())
    unknown = {variable: sorted(pages) for variable, pages in named.items() if variable not in known}
    assert not unknown, f"docs name variables Settings does not have: {unknown}"


# --- links -------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_INLINE_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+[^>]*(?:name|id)=\"([^\"]+)\"")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose_lines(text: str) -> Iterator[str]:
    """The lines outside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation removed, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link reads as its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose_lines(text):
        found.update(_HTML_ANCHOR.findall(line))
        match = _HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(text: str) -> list[str]:
    found = []
    for line in _prose_lines(text):
        reference = _REFERENCE_LINK.match(line)
        if reference:
            found.append(reference.group(1))
            continue
        found.extend(_INLINE_LINK.findall(_CODE_SPAN.sub("", line)))
    return found


def broken_links(page: Path, root: Path) -> list[str]:
    """Every relative link of `page` that leaves `root`, names a missing file or a missing heading."""
    problems = []
    for target in links(page.read_text()):
        if _SCHEME.match(target):
            continue  # http(s), mailto: not checked offline
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page.resolve()
        if "shared/" in path_part or not resolved.is_relative_to(root.resolve()):
            problems.append(f"{target}: points outside the repository")
            continue
        if not resolved.exists():
            problems.append(f"{target}: {resolved.relative_to(root.resolve())} does not exist")
            continue
        if anchor and resolved.is_file() and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text()):
            problems.append(f"{target}: no heading #{anchor} in {resolved.relative_to(root.resolve())}")
    return problems


def _markdown_pages() -> list[Path]:
    pages = [ROOT / "README.md"]
    for folder in ("docs", "policies", "bench"):
        pages += sorted((ROOT / folder).rglob("*.md"))
    pages += sorted((ROOT / "tests").rglob("README.md"))
    return pages


@pytest.mark.parametrize("page", _markdown_pages(), ids=lambda page: page.relative_to(ROOT).as_posix())
def test_relative_links_resolve_inside_the_repository(page: Path) -> None:
    assert not broken_links(page, ROOT), broken_links(page, ROOT)


def test_the_docs_index_links_every_page_of_docs() -> None:
    index = (DOCS / "README.md").read_text()
    linked = {target.partition("#")[0] for target in links(index)}
    pages = {page.name for page in DOCS.glob("*.md")} - {"README.md"}
    assert pages <= linked, f"docs/README.md does not link {sorted(pages - linked)}"


def test_the_link_checker_reports_missing_files_anchors_and_links_out_of_the_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "docs" / "target.md").write_text("# Target page\n\n## `POST /v1/authorize`\n")
    page = repo / "docs" / "page.md"
    page.write_text(
        "[ok](target.md#post-v1authorize) [ok too](#local-heading) [web](https://example.com/x.md)\n"
        "[gone](missing.md) [no anchor](target.md#nowhere) [out](../../elsewhere.md) [shared](../shared/API.md)\n"
        "`[in code](missing-too.md)`\n\n## Local heading\n\n```\n[in a fence](missing-three.md)\n```\n"
    )
    problems = broken_links(page, repo)
    assert [problem.split(":")[0] for problem in problems] == [
        "missing.md",
        "target.md#nowhere",
        "../../elsewhere.md",
        "../shared/API.md",
    ]


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("`POST /v1/authorize`", "post-v1authorize"),
        ("Policy reload and the gate", "policy-reload-and-the-gate"),
        ("Configuration (`data.spendgate.config`, shipped in `policies/data.json`)",
         "configuration-dataspendgateconfig-shipped-in-policiesdatajson"),
        ("Walk-through: \"team keys also charge the user's personal budget\"",
         "walk-through-team-keys-also-charge-the-users-personal-budget"),
    ],
)
def test_github_slugs(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug
