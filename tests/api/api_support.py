"""Tokens, borrower data and the request header helper shared by the API tests.

Tokens are the role names themselves (``admin``, ``analyst``, ``collector-c1``
...), so a test reads ``auth("collector-c1")``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from postloan.api import Principal, Role

NOW = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
PRINCIPALS = {
    "admin": Principal("ana", Role.ADMIN),
    "admin2": Principal("bo", Role.ADMIN),
    "supervisor": Principal("gao", Role.SUPERVISOR),
    "analyst": Principal("chen", Role.ANALYST),
    "collector-c1": Principal("dina", Role.COLLECTOR, "c1"),
    "collector-c2": Principal("emil", Role.COLLECTOR, "c2"),
    "agency-a1": Principal("fast-recovery", Role.AGENCY, "a1"),
}
PHONE = "+8613812348000"
ID_NUMBER = "110101199003074218"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
