"""Rule parsing, errors with line numbers, and reload."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from postloan.risk import DEFAULT_RULES, LoanFacts, RuleError, RuleSet, parse_rules

GOOD = """
[template.sms1]
channel = "sms"
text = "Hi $name"

[[rule]]
id = "late"
level = "medium"
when = { dpd_min = 1 }
messages = ["sms1"]
"""


def facts(dpd: int) -> LoanFacts:
    return LoanFacts("C", dpd, "M1", "active", Decimal("10.00"), 5)


def test_parse_rules_default_file_loads() -> None:
    rules = parse_rules(DEFAULT_RULES.read_text(), "default")

    assert len(rules.rules) >= 5
    assert rules.agencies[0].commission_rate == Decimal("0.15")


def test_parse_rules_matches_dpd() -> None:
    rules = parse_rules(GOOD)

    assert [r.rule_id for r in rules.matching(facts(3), [])] == ["late"]
    assert rules.matching(facts(0), []) == []


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("[[rule]]\nid = 'x'\nlevel = 'severe'\n", 3, "invalid level 'severe'"),
        (
            "[[rule]]\nid = 'x'\nlevel = 'low'\nwhen = { signals = ['nope'] }\n",
            4,
            "unknown signal 'nope'",
        ),
        (
            "[[rule]]\nid = 'x'\nlevel = 'low'\n\n[[rule]]\nid = 'y'\nlevel = 'low'\n"
            "colour = 1\n",
            8,
            "unknown key 'colour'",
        ),
        (
            "[[rule]]\nid = 'x'\nlevel = 'low'\nmessages = ['missing']\n",
            4,
            "template 'missing' not found",
        ),
        ("[[rule]]\nid = 'x'\nlevel = = 'low'\n", 3, "Invalid value"),
        (
            "[[rule]]\nid = 'x'\nlevel = 'low'\nwhen = { dpd_min = -1 }\n",
            4,
            "whole number",
        ),
    ],
    ids=[
        "bad-level",
        "unknown-signal",
        "unknown-key-second-rule",
        "missing-template",
        "toml-syntax",
        "negative-dpd",
    ],
)
def test_parse_rules_error_names_line(text: str, line: int, reason: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rules(text, "rules.toml")

    assert caught.value.line == line
    assert reason in str(caught.value)


def test_ruleset_reloads_on_mtime_change(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(GOOD)
    holder = RuleSet(path)
    path.write_text(GOOD.replace('"late"', '"later"'))
    os.utime(path, ns=(1, path.stat().st_mtime_ns + 10**9))

    assert holder.rules.rules[0].rule_id == "later"


def test_ruleset_bad_file_keeps_old_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(GOOD)
    holder = RuleSet(path)
    path.write_text(GOOD.replace('level = "medium"', 'level = "huge"'))

    accepted = holder.reload()

    assert accepted is False
    assert holder.rules.rules[0].level.value == "medium"
    assert holder.last_error is not None
    assert holder.last_error.line == 8
