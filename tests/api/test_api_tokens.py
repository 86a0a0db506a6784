"""The tokens file: digests, roles and party ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from postloan.api import Role, TokenFileError, TokenTable, hash_token


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tokens.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_tokens_file_authenticates_listed_token(tmp_path: Path) -> None:
    digest = hash_token("s3cret")
    path = _write(
        tmp_path,
        f'[[token]]\nsha256 = "{digest}"\nuser = "li"\nrole = "collector"\n'
        'party_id = "c-07"\n',
    )

    principal = TokenTable.load(path).authenticate("s3cret")

    assert principal is not None
    assert principal.role is Role.COLLECTOR
    assert principal.party_id == "c-07"


def test_tokens_file_rejects_unknown_role(tmp_path: Path) -> None:
    digest = hash_token("x")
    path = _write(
        tmp_path, f'[[token]]\nsha256 = "{digest}"\nuser = "li"\nrole = "root"\n'
    )

    with pytest.raises(TokenFileError, match="'root'"):
        TokenTable.load(path)


def test_tokens_file_collector_needs_party_id(tmp_path: Path) -> None:
    digest = hash_token("x")
    path = _write(
        tmp_path, f'[[token]]\nsha256 = "{digest}"\nuser = "li"\nrole = "agency"\n'
    )

    with pytest.raises(TokenFileError, match="party_id"):
        TokenTable.load(path)


def test_tokens_file_rejects_plain_token(tmp_path: Path) -> None:
    path = _write(
        tmp_path, '[[token]]\nsha256 = "s3cret"\nuser = "li"\nrole = "admin"\n'
    )

    with pytest.raises(TokenFileError, match="64 hex digits"):
        TokenTable.load(path)
