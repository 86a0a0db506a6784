"""Risk engine: signals from fixes and events, TOML rules over signals and loan
state, the post-loan case workflow and the actions it takes.

The package imports no database driver: store access goes through the
`Store` instance the caller passes in, and risk state through a
`RiskRepository` (in memory or a JSON directory).
"""

from postloan.risk.actions import (
    ImmobilizeRequest,
    ImmobilizeStatus,
    WorkOrder,
    approve,
    is_stopped,
    on_fix,
)
from postloan.risk.cases import (
    TRANSITIONS,
    Case,
    CaseChange,
    CaseEvent,
    CaseState,
    CaseTransitionError,
    CollectorPool,
    apply_case_event,
    escalation_steps,
)
from postloan.risk.engine import Firing, RiskEngine, evaluate, loan_facts
from postloan.risk.evidence import Evidence
from postloan.risk.repository import (
    JsonRiskRepository,
    MemoryRiskRepository,
    RiskRepository,
)
from postloan.risk.rules import (
    DEFAULT_RULES,
    Level,
    LoanFacts,
    Rule,
    RuleError,
    Rules,
    RuleSet,
    load_rules,
    parse_rules,
)
from postloan.risk.signals import (
    SIGNALS,
    FenceInfo,
    Observations,
    Signal,
    SignalSettings,
    compute_signals,
)

__all__ = [
    "DEFAULT_RULES",
    "SIGNALS",
    "TRANSITIONS",
    "Case",
    "CaseChange",
    "CaseEvent",
    "CaseState",
    "CaseTransitionError",
    "CollectorPool",
    "Evidence",
    "FenceInfo",
    "Firing",
    "ImmobilizeRequest",
    "ImmobilizeStatus",
    "JsonRiskRepository",
    "Level",
    "LoanFacts",
    "MemoryRiskRepository",
    "Observations",
    "RiskEngine",
    "RiskRepository",
    "Rule",
    "RuleError",
    "RuleSet",
    "Rules",
    "Signal",
    "SignalSettings",
    "WorkOrder",
    "apply_case_event",
    "approve",
    "compute_signals",
    "escalation_steps",
    "evaluate",
    "is_stopped",
    "load_rules",
    "loan_facts",
    "on_fix",
    "parse_rules",
]
