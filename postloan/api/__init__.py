"""The HTTP API for analysts and staff (FastAPI), with token roles and an audit log.

`create_app` builds the ASGI app over an `ApiContext`: the store, the loans
ledger, the risk and notify repositories, the tokens and the audit log.
"""

from postloan.api.app import create_app
from postloan.api.audit import AuditEntry, AuditLog, JsonAuditLog, MemoryAuditLog
from postloan.api.auth import Principal, Role, TokenFileError, TokenTable, hash_token
from postloan.api.context import ApiContext, ApiError

__all__ = [
    "ApiContext",
    "ApiError",
    "AuditEntry",
    "AuditLog",
    "JsonAuditLog",
    "MemoryAuditLog",
    "Principal",
    "Role",
    "TokenFileError",
    "TokenTable",
    "create_app",
    "hash_token",
]
