"""Configuration: config.toml plus ``POSTLOAN_<SECTION>_<KEY>`` environment overrides.

Every key and its default is listed in the repository's config.toml. An unknown
section or key is an error, so a misspelt setting never passes silently.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

ENV_PREFIX = "POSTLOAN_"
_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")


class ConfigError(ValueError):
    """A configuration file or environment variable has an invalid value."""


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    host: str = "0.0.0.0"
    gt06_port: int = 5023
    jt808_port: int = 5015
    nmea_port: int = 5010
    idle_timeout_s: float = 600.0
    max_frame_bytes: int = 0
    max_decode_errors: int = 5
    gt06_ack_locations: bool = True
    event_loop: str = "auto"
    command_timeout_s: float = 60.0
    command_ttl_s: float = 300.0


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str = "sqlite:///var/postloan.db"
    batch_size: int = 500
    flush_interval_ms: float = 10.0
    max_pending: int = 20_000
    spool_dir: str = "var/spool"
    spool_max_mb: int = 1024
    spool_segment_mb: int = 16
    partition_interval: str = "day"
    partitions_ahead: int = 3
    retention_days: int = 0
    compress_after_days: int = 7
    timescaledb: str = "auto"
    covering_index: bool = False
    maintenance_interval_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class GeofenceConfig:
    file: str = ""
    id_property: str = "id"
    margin_m: float = 50.0
    confirm_fixes: int = 2
    dwell_s: float = 600.0


@dataclass(frozen=True, slots=True)
class DevicesConfig:
    gt06_utc_offset: str = "+00:00"
    jt808_utc_offset: str = "+08:00"
    max_future_s: float = 900.0
    # JT/T 808 terminals must authenticate (0x0102 with the code from the
    # 0x8100 register response) before their other messages are stored.
    jt808_require_auth: bool = True
    utc_offsets: Mapping[str, str] = field(default_factory=dict)

    def utc_offset(self, protocol: str, device_id: str | None) -> timedelta:
        """Return the clock offset of one device: its own entry, else the protocol's."""
        if device_id is not None and device_id in self.utc_offsets:
            return parse_utc_offset(self.utc_offsets[device_id])
        default = {"gt06": self.gt06_utc_offset, "jt808": self.jt808_utc_offset}
        return parse_utc_offset(default.get(protocol, "+00:00"))


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "INFO"


@dataclass(frozen=True, slots=True)
class ApiConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    enabled: bool = True
    tokens_file: str = ""
    ledger_dir: str = "var/ledger"
    state_dir: str = "var/risk"
    audit_file: str = "var/audit.jsonl"


@dataclass(frozen=True, slots=True)
class BusConfig:
    url: str = ""
    partitions: int = 16
    client_id: str = "postloan-gateway"
    queue_dir: str = "var/bus-queue"
    queue_max_mb: int = 256
    roles: tuple[str, ...] = ("store", "fence", "risk")
    worker_index: int = 0
    worker_count: int = 1
    shared_group: str = "postloan"
    shared_subscriptions: bool = False
    session_expiry_s: int = 3600
    retry_max_s: float = 10.0


@dataclass(frozen=True, slots=True)
class RiskConfig:
    rules: str = ""
    fix_interval_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Config:
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    geofence: GeofenceConfig = field(default_factory=GeofenceConfig)
    devices: DevicesConfig = field(default_factory=DevicesConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    # The [loans] table as written; postloan.loans.LoanPolicy.from_table reads it
    # (and load_config checks it), so its keys are documented with the policy.
    loans: Mapping[str, Any] = field(default_factory=dict)


def parse_utc_offset(text: str) -> timedelta:
    """Parse ``+08:00`` / ``-04:00`` into a timedelta."""
    match = _OFFSET.match(text.strip())
    if match is None:
        raise ConfigError(f"invalid UTC offset {text!r}: expected +HH:MM or -HH:MM")
    sign = -1 if match.group(1) == "-" else 1
    hours, minutes = int(match.group(2)), int(match.group(3))
    if hours > 14 or minutes > 59:
        raise ConfigError(f"invalid UTC offset {text!r}: out of range")
    return sign * timedelta(hours=hours, minutes=minutes)


def _coerce(section: str, key: str, value: Any, default: Any) -> Any:
    name = f"[{section}] {key}"
    if isinstance(default, bool):
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if isinstance(default, int | float):
        try:
            number = type(default)(value)
        except (TypeError, ValueError) as exc:
            kind = type(default).__name__
            raise ConfigError(f"{name}: expected {kind}, got {value!r}") from exc
        if key.endswith("_port") and not -1 <= number <= 65535:
            raise ConfigError(
                f"{name}: expected a TCP port from 0 to 65535 or -1 (disabled), "
                f"got {value!r}"
            )
        if number < 0 and not key.endswith("_port"):
            raise ConfigError(f"{name}: must not be negative, got {value!r}")
        return number
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(default, tuple):
        return _coerce_names(name, value)
    raise ConfigError(f"{name}: expected a table, got {value!r}")


def _coerce_names(name: str, value: Any) -> tuple[str, ...]:
    # The environment gives a list as one comma-separated string.
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ConfigError(f"{name}: expected a list of strings, got {value!r}")


def _apply(section_obj: Any, section: str, values: Mapping[str, Any]) -> Any:
    known = {f.name: f for f in fields(section_obj)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            allowed = ", ".join(sorted(known))
            raise ConfigError(f"unknown key [{section}] {key}; known keys: {allowed}")
        default = getattr(section_obj, key)
        changes[key] = _coerce(section, key, value, default)
    return replace(section_obj, **changes)


def _env_overrides(env: Mapping[str, str], config: Config) -> dict[str, dict[str, str]]:
    overrides: dict[str, dict[str, str]] = {}
    sections = {f.name for f in fields(config)}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section in sections and key:
            overrides.setdefault(section, {})[key] = value
    return overrides


def load_config(
    path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Load config.toml (if given) and apply environment overrides on top.

    ``POSTLOAN_STORE_URL=postgresql://...`` sets ``[store] url``, and so on for
    every key. The environment wins over the file.
    """
    config = Config()
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML in {path}: {exc}") from exc
    for section, values in _env_overrides(env or os.environ, config).items():
        data.setdefault(section, {}).update(values)
    for section, values in data.items():
        if section == "loans" and isinstance(values, Mapping):
            _check_loans(values)
            config = replace(config, loans=dict(values))
            continue
        if not hasattr(config, section) or not isinstance(values, Mapping):
            known = ", ".join(f.name for f in fields(config))
            raise ConfigError(f"unknown section [{section}]; known sections: {known}")
        updated = _apply(getattr(config, section), section, values)
        config = replace(config, **{section: updated})
    for protocol in ("gt06", "jt808"):
        config.devices.utc_offset(protocol, None)
    for offset in config.devices.utc_offsets.values():
        parse_utc_offset(offset)
    return config


def _check_loans(table: Mapping[str, Any]) -> None:
    from postloan.loans.policy import LoanPolicy, PolicyError

    try:
        LoanPolicy.from_table(table)
    except PolicyError as exc:
        raise ConfigError(f"[loans]: {exc}") from exc
