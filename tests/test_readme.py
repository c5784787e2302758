"""The README stays true: its configuration reference is the configuration model, and its
first lines are the two commands a newcomer runs."""

from __future__ import annotations

import re
from pathlib import Path

from sesrelay.config import PARAMETERS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def reference_rows() -> dict[str, tuple[str, str]]:
    section = README.split("### Parameter reference", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for match in re.finditer(r"^\| `([a-z0-9_]+)` \| (.*?) \| (.*) \|$", section, re.M):
        default = match.group(2)
        default = "" if default == "(empty)" else default.strip("`")
        rows[match.group(1)] = (default, match.group(3))
    return rows


def test_reference_lists_every_parameter_with_its_default_and_meaning() -> None:
    rows = reference_rows()
    assert list(rows) == list(PARAMETERS)
    for name, info in PARAMETERS.items():
        assert rows[name] == (info.default, info.doc), name


def test_first_lines_give_the_dev_and_test_commands() -> None:
    first_lines = README.splitlines()[:6]
    assert any(line.startswith("make dev ") for line in first_lines)
    assert any(line.startswith("make test ") for line in first_lines)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^dev: .*\n\t\$\(BIN\)/sesrelay dev$", makefile, re.M)
    assert re.search(r"^test: .*\n\t\$\(BIN\)/pytest( .*)?$", makefile, re.M)
    assert "make test" in (ROOT / ".ci/run").read_text()
