"""API tokens, roles and what each role may see.

A tokens file (TOML) lists one ``[[token]]`` table per token with its SHA-256
hex digest, never the token itself::

    [[token]]
    sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    user = "li.wei"
    role = "collector"    # admin, supervisor, analyst, collector or agency
    party_id = "c-07"     # the collector's or agency's id in cases

`hash_token` computes the digest; ``postloan api token`` is not a command
yet, so digests are made with ``printf %s TOKEN | sha256sum``.
"""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from postloan.notify import mask_phone


class Role(StrEnum):
    """Permission level of a token's user; collectors and agencies see their cases."""

    ADMIN = "admin"
    SUPERVISOR = "supervisor"  # works every case, decides write-offs and outsourcing
    ANALYST = "analyst"  # reads everything, writes nothing
    COLLECTOR = "collector"  # cases assigned to them
    AGENCY = "agency"  # cases outsourced to it


# Roles that work every case and every device, as opposed to their own cases.
ALL_CASES = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.ANALYST})
# Roles that see a borrower's full phone number: collectors phone borrowers.
SEES_PHONE = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.COLLECTOR})
# Roles that see a borrower's full ID number.
SEES_ID_NUMBER = frozenset({Role.ADMIN})


class TokenFileError(ValueError):
    """A tokens file is missing, unreadable or has an invalid entry."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The user behind a request's token."""

    user: str
    role: Role
    party_id: str | None = None  # collector or agency id, as in `Case`

    def can_see_case(self, collector: str | None, agency: str | None) -> bool:
        """Return whether the user may read a case with this collector and agency."""
        if self.role in ALL_CASES:
            return True
        if self.role is Role.COLLECTOR:
            return collector is not None and collector == self.party_id
        return agency is not None and agency == self.party_id


def hash_token(token: str) -> str:
    """Return the SHA-256 hex digest under which a token is listed."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenTable:
    """Token digests and the principals they stand for."""

    def __init__(self, entries: Mapping[str, Principal]) -> None:
        self._entries = {digest.lower(): p for digest, p in entries.items()}

    @classmethod
    def load(cls, path: Path) -> TokenTable:
        """Read a tokens file; raise TokenFileError naming the bad entry."""
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise TokenFileError(f"cannot read tokens file {path}: {exc}") from exc
        entries: dict[str, Principal] = {}
        for index, table in enumerate(document.get("token", [])):
            digest, principal = _read_entry(path, index, table)
            entries[digest] = principal
        return cls(entries)

    def authenticate(self, token: str) -> Principal | None:
        """Return the principal of a token, or None for an unknown token."""
        digest = hash_token(token)
        for known, principal in self._entries.items():
            if hmac.compare_digest(known, digest):
                return principal
        return None


def _read_entry(path: Path, index: int, table: Any) -> tuple[str, Principal]:
    where = f"{path}: token #{index + 1}"
    if not isinstance(table, Mapping):
        raise TokenFileError(f"{where}: expected a [[token]] table")
    digest = str(table.get("sha256", ""))
    if len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
        raise TokenFileError(f"{where}: sha256 {digest!r} is not 64 hex digits")
    try:
        role = Role(str(table.get("role")))
    except ValueError:
        allowed = ", ".join(Role)
        raise TokenFileError(
            f"{where}: invalid role {table.get('role')!r}; expected one of {allowed}"
        ) from None
    party_id = table.get("party_id")
    if role not in ALL_CASES and not party_id:
        raise TokenFileError(f"{where}: role {role.value} needs a party_id")
    user = str(table.get("user", "")).strip()
    if not user:
        raise TokenFileError(f"{where}: missing user")
    return digest.lower(), Principal(user, role, party_id and str(party_id))


def mask_id_number(id_number: str) -> str:
    """Mask all but the first and last 2 characters: 110101199003074218 -> 11**18."""
    if len(id_number) <= 4:
        return "*" * len(id_number)
    return id_number[:2] + "*" * (len(id_number) - 4) + id_number[-2:]


def mask_borrower(borrower: Mapping[str, Any], role: Role) -> dict[str, Any]:
    """Return a borrower record with phone and ID number masked for the role."""
    masked = dict(borrower)
    if role not in SEES_PHONE and masked.get("phone"):
        masked["phone"] = mask_phone(str(masked["phone"]))
    if role not in SEES_ID_NUMBER and masked.get("id_number"):
        masked["id_number"] = mask_id_number(str(masked["id_number"]))
    return masked
