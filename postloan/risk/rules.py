"""Risk rules from TOML: conditions over signals and loan state, a level, actions.

A rule file has ``[[rule]]`` tables (see ``default_rules.toml`` for every key
with its meaning), ``[template.<id>]`` message templates, an optional
``[signals]`` table overriding `SignalSettings`, ``[assignment]`` collectors
and ``[[agency]]`` outsourcing agencies. `parse_rules` rejects a bad file
with `RuleError` naming the line and the reason. `RuleSet` re-reads the file
when its modification time changes and keeps the previous rules in force when
the new file is bad.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from postloan.model import EMPTY
from postloan.risk.signals import SIGNALS, Signal, SignalSettings

log = logging.getLogger(__name__)

DEFAULT_RULES = Path(__file__).with_name("default_rules.toml")


class Level(StrEnum):
    """Risk level of a firing, in rising order."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Level).index(self)


#: Case states a rule may escalate a case to, in escalation order.
ESCALATION = ("pre_due", "overdue", "collection", "outsourced", "repossession")
CHANNELS = frozenset({"sms", "call"})


class RuleError(ValueError):
    """A rule file is invalid; `line` is 1-based, or None when unknown."""

    def __init__(self, source: str, line: int | None, reason: str) -> None:
        where = f"{source}, line {line}" if line else source
        super().__init__(f"{where}: {reason}")
        self.source = source
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LoanFacts:
    """The loan state that rules read, taken from a contract's ledger."""

    contract_id: str
    dpd: int
    bucket: str
    contract_state: str
    overdue_amount: Decimal
    days_to_due: int | None  # to the next unpaid installment; None if none
    payments: tuple[str, ...] = ()  # bank references of payments received


@dataclass(frozen=True, slots=True)
class Condition:
    """All of the set fields must hold for a rule to fire."""

    signals: frozenset[str] = frozenset()  # every one present
    any_signals: frozenset[str] = frozenset()  # at least one present
    dpd_min: int | None = None
    dpd_max: int | None = None
    days_to_due_max: int | None = None  # a pre-due window; implies DPD 0
    buckets: frozenset[str] = frozenset()
    contract_states: frozenset[str] = frozenset()
    overdue_amount_min: Decimal | None = None

    def matches(self, facts: LoanFacts, present: frozenset[str]) -> bool:
        return all(check(self, facts, present) for check in _CHECKS)


_Check = Callable[[Condition, LoanFacts, frozenset[str]], bool]
_CHECKS: tuple[_Check, ...] = (
    lambda c, f, s: c.signals <= s,
    lambda c, f, s: not c.any_signals or bool(c.any_signals & s),
    lambda c, f, s: c.dpd_min is None or f.dpd >= c.dpd_min,
    lambda c, f, s: c.dpd_max is None or f.dpd <= c.dpd_max,
    lambda c, f, s: (
        c.days_to_due_max is None
        or (
            f.dpd == 0
            and f.days_to_due is not None
            and 0 <= f.days_to_due <= c.days_to_due_max
        )
    ),
    lambda c, f, s: not c.buckets or f.bucket in c.buckets,
    lambda c, f, s: not c.contract_states or f.contract_state in c.contract_states,
    lambda c, f, s: (
        c.overdue_amount_min is None or f.overdue_amount >= c.overdue_amount_min
    ),
)


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: when `condition` holds, raise `level` and take the actions."""

    rule_id: str
    level: Level
    condition: Condition
    case: str | None = None  # escalate the case to this state
    messages: tuple[str, ...] = ()  # template ids, queued in this order
    work_order: str | None = None  # GPS work order reason
    immobilize: bool = False  # request a fuel cut, pending approval
    line: int = 0


@dataclass(frozen=True, slots=True)
class Template:
    """A message template: channel (sms or call) and `string.Template` text."""

    template_id: str
    channel: str
    text: str


@dataclass(frozen=True, slots=True)
class Agency:
    """An outsourced collection agency and its commission (fraction of recoveries)."""

    name: str
    commission_rate: Decimal


@dataclass(frozen=True)
class Rules:
    """A parsed rule file."""

    rules: tuple[Rule, ...]
    templates: Mapping[str, Template] = field(default_factory=lambda: EMPTY)
    signal_settings: SignalSettings = field(default_factory=SignalSettings)
    collectors: tuple[str, ...] = ()
    regions: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: EMPTY)
    agencies: tuple[Agency, ...] = ()

    def matching(self, facts: LoanFacts, signals: Sequence[Signal]) -> list[Rule]:
        """Return the rules that fire, in file order."""
        present = frozenset(signal.name for signal in signals)
        return [rule for rule in self.rules if rule.condition.matches(facts, present)]


# --- parsing ------------------------------------------------------------------

_TOML_LINE = re.compile(r"at line (\d+)")
_RULE_KEYS = frozenset(
    {"id", "level", "when", "case", "messages", "work_order", "immobilize"}
)


class _Lines:
    """Finds the source line of a table or key, since tomllib returns none."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def header(self, pattern: str, occurrence: int) -> int | None:
        found = [
            number
            for number, line in enumerate(self.lines, start=1)
            if re.match(pattern, line.strip())
        ]
        return found[occurrence] if occurrence < len(found) else None

    def key(self, start: int | None, key: str) -> int | None:
        if start is None:
            return None
        leaf = re.escape(key.split(".")[-1])
        for number in range(start, len(self.lines)):
            text = self.lines[number].strip()
            if number > start and text.startswith("["):
                break
            if re.match(rf"({leaf}|[\w.]*\.{leaf})\s*=", text) or re.search(
                rf"[{{,]\s*{leaf}\s*=", text
            ):
                return number + 1
        return start


def parse_rules(text: str, source: str = "<rules>") -> Rules:
    """Parse a rule file's text; raise RuleError with the line and reason."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_LINE.search(str(exc))
        raise RuleError(
            source, int(match.group(1)) if match else None, str(exc)
        ) from exc
    lines = _Lines(text)
    templates = _parse_templates(document.get("template", {}), lines, source)
    rules = tuple(
        _parse_rule(index, table, lines, source, templates)
        for index, table in enumerate(_tables(document.get("rule", []), source))
    )
    _check_unique(rules, source)
    assignment = document.get("assignment", {})
    return Rules(
        rules=rules,
        templates=MappingProxyType(templates),
        signal_settings=_parse_settings(document.get("signals", {}), lines, source),
        collectors=tuple(assignment.get("collectors", ())),
        regions=MappingProxyType(
            {k: tuple(v) for k, v in assignment.get("regions", {}).items()}
        ),
        agencies=tuple(
            _parse_agency(i, table, lines, source)
            for i, table in enumerate(_tables(document.get("agency", []), source))
        ),
    )


def _tables(value: Any, source: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise RuleError(source, None, "rule and agency must be arrays of tables")
    return value


def _parse_rule(
    index: int,
    table: Mapping[str, Any],
    lines: _Lines,
    source: str,
    templates: Mapping[str, Template],
) -> Rule:
    start = lines.header(r"\[\[\s*rule\s*\]\]", index)

    def fail(key: str, reason: str) -> RuleError:
        name = table.get("id", f"#{index + 1}")
        return RuleError(source, lines.key(start, key), f"rule {name!r}: {reason}")

    unknown = sorted(set(table) - _RULE_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key {unknown[0]!r}")
    if not isinstance(table.get("id"), str) or not table["id"]:
        raise fail("id", "missing id: give every rule a unique text id")
    try:
        level = Level(str(table.get("level")))
    except ValueError:
        choices = ", ".join(Level)
        raise fail(
            "level", f"invalid level {table.get('level')!r}; use {choices}"
        ) from None
    case = table.get("case")
    if case is not None and case not in ESCALATION:
        raise fail("case", f"invalid case state {case!r}; use {', '.join(ESCALATION)}")
    messages = tuple(table.get("messages", ()))
    missing = [m for m in messages if m not in templates]
    if missing:
        raise fail(
            "messages",
            f"template {missing[0]!r} not found; add [template.{missing[0]}]",
        )
    return Rule(
        rule_id=table["id"],
        level=level,
        condition=_parse_condition(table.get("when", {}), fail),
        case=case,
        messages=messages,
        work_order=table.get("work_order"),
        immobilize=bool(table.get("immobilize", False)),
        line=start or 0,
    )


def _signal_names(value: Any) -> frozenset[str]:
    names = frozenset(_strings(value))
    unknown = sorted(names - set(SIGNALS))
    if unknown:
        raise ValueError(f"unknown signal {unknown[0]!r}; known: {', '.join(SIGNALS)}")
    return names


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number of days from 0, got {value!r}")
    return value


def _amount(value: Any) -> Decimal:
    # Amounts are strings so that TOML floats never round a money value.
    if not isinstance(value, str):
        raise ValueError(
            f'expected an amount as a string such as "100.00", got {value!r}'
        )
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ValueError(f"invalid amount {value!r}") from None


_CONDITION_READERS: Mapping[str, Callable[[Any], Any]] = {
    "signals": _signal_names,
    "any_signals": _signal_names,
    "dpd_min": _count,
    "dpd_max": _count,
    "days_to_due_max": _count,
    "buckets": lambda v: frozenset(_strings(v)),
    "contract_states": lambda v: frozenset(_strings(v)),
    "overdue_amount_min": _amount,
}


def _parse_condition(table: Any, fail: Callable[[str, str], RuleError]) -> Condition:
    if not isinstance(table, dict):
        raise fail("when", "when must be a table of conditions")
    values: dict[str, Any] = {}
    for key, value in table.items():
        reader = _CONDITION_READERS.get(key)
        if reader is None:
            raise fail(
                key, f"unknown condition {key!r}; use {', '.join(_CONDITION_READERS)}"
            )
        try:
            values[key] = reader(value)
        except ValueError as exc:
            raise fail(key, f"when.{key}: {exc}") from None
    return Condition(**values)


def _parse_templates(tables: Any, lines: _Lines, source: str) -> dict[str, Template]:
    templates = {}
    for template_id, table in tables.items():
        start = lines.header(rf"\[\s*template\.{re.escape(template_id)}\s*\]", 0)
        channel = table.get("channel")
        if channel not in CHANNELS:
            line = lines.key(start, "channel")
            raise RuleError(
                source,
                line,
                f"template {template_id!r}: invalid channel {channel!r}; "
                "use sms or call",
            )
        if not isinstance(table.get("text"), str):
            raise RuleError(source, start, f"template {template_id!r}: missing text")
        templates[template_id] = Template(template_id, channel, table["text"])
    return templates


def _parse_settings(table: Any, lines: _Lines, source: str) -> SignalSettings:
    known = {f.name: f for f in fields(SignalSettings) if f.name != "places"}
    start = lines.header(r"\[\s*signals\s*\]", 0)
    for key, value in table.items():
        if (
            key not in known
            or isinstance(value, bool)
            or not isinstance(value, int | float)
        ):
            raise RuleError(
                source,
                lines.key(start, key),
                f"signals.{key}: unknown setting or not a number",
            )
    return SignalSettings(**table)


def _parse_agency(
    index: int, table: Mapping[str, Any], lines: _Lines, source: str
) -> Agency:
    start = lines.header(r"\[\[\s*agency\s*\]\]", index)
    try:
        rate = _amount(table.get("commission_rate"))
    except ValueError as exc:
        raise RuleError(
            source, lines.key(start, "commission_rate"), f"agency: {exc}"
        ) from None
    if not (0 <= rate <= 1 and isinstance(table.get("name"), str)):
        raise RuleError(
            source, start, "agency needs a name and a commission_rate from 0 to 1"
        )
    return Agency(table["name"], rate)


def _check_unique(rules: Sequence[Rule], source: str) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.rule_id in seen:
            raise RuleError(source, rule.line, f"duplicate rule id {rule.rule_id!r}")
        seen.add(rule.rule_id)


def load_rules(path: Path) -> Rules:
    """Read and parse a rule file; raise RuleError or OSError."""
    return parse_rules(path.read_text(encoding="utf-8"), str(path))


class RuleSet:
    """The rules in force, re-read when the file's modification time changes.

    A bad file is logged and rejected; the previous rules stay in force and
    `last_error` holds the reason. Only the first load raises.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime_ns = path.stat().st_mtime_ns
        self._rules = load_rules(path)
        self.last_error: RuleError | None = None

    @property
    def rules(self) -> Rules:
        """The current rules, after re-reading the file if it changed."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError as exc:
            log.warning(
                "rule file %s unreadable, keeping old rules: %s", self.path, exc
            )
            return self._rules
        if mtime != self._mtime_ns:
            self.reload()
        return self._rules

    def reload(self) -> bool:
        """Re-read the file now; return whether the new rules took effect."""
        try:
            self._mtime_ns = self.path.stat().st_mtime_ns
            rules = load_rules(self.path)
        except (OSError, RuleError) as exc:
            error = (
                exc
                if isinstance(exc, RuleError)
                else RuleError(str(self.path), None, str(exc))
            )
            self.last_error = error
            log.warning("rejected rule file, keeping old rules: %s", error)
            return False
        self._rules = rules
        self.last_error = None
        log.info("loaded %d rules from %s", len(rules.rules), self.path)
        return True


def due_in_days(due: date | None, on: date) -> int | None:
    return None if due is None else (due - on).days
