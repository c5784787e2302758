"""The README's command table lists every command the parser has."""

from __future__ import annotations

import re
from pathlib import Path

from sesrelay.cli import build_parser

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_command_is_in_the_readme_table() -> None:
    table = README.split("## Commands", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `sesrelay (\w+)", table, re.M))
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert listed == set(commands)
