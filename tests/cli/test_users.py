"""`sesrelay users add|remove|list`: a table of salted scrypt hashes, never passwords."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from sesrelay.cli import main
from sesrelay.users import UserStore, UserTable, UserTableError


def add(table: Path, name: str, password: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    return main(["users", "add", name, "--table", str(table), "--password-stdin"])


def test_add_list_remove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    table = tmp_path / "users.json"
    assert add(table, "app1", "s3cret one", monkeypatch) == 0
    assert add(table, "app2", "s3cret two", monkeypatch) == 0
    assert add(table, "app1", "s3cret three", monkeypatch) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"changed password of app1 in {table}"
    assert stat.S_IMODE(table.stat().st_mode) == 0o600
    text = table.read_text()
    assert "s3cret" not in text
    entries = json.loads(text)["users"]
    assert entries["app1"].startswith("$scrypt$ln=14,r=8,p=1$")
    stored = UserStore(str(table)).load()
    assert stored.verify("app1", "s3cret three") and not stored.verify("app1", "s3cret one")
    assert main(["users", "list", "--table", str(table)]) == 0
    assert capsys.readouterr().out == "app1\napp2\n"
    assert main(["users", "remove", "app2", "--table", str(table)]) == 0
    assert main(["users", "remove", "app2", "--table", str(table)]) == 1
    assert list(UserStore(str(table)).load().users) == ["app1"]


def test_names_that_cannot_be_logged_safely_are_refused(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("two words", "tab\there", "caf\u00e9", "x" * 256):
        assert add(tmp_path / "users.json", name, "pw", monkeypatch) == 2


def test_a_damaged_table_is_an_error_not_an_empty_one(tmp_path: Path) -> None:
    table = tmp_path / "users.json"
    table.write_text('{"version": 1, "users": {"app1": "plaintext"}}')
    with pytest.raises(UserTableError, match="bad entry for user 'app1'"):
        UserStore(str(table)).load()
    assert main(["users", "list", "--table", str(table)]) == 1
    assert UserTable().verify("nobody", "") is False
