"""Vehicle affairs: return visits, GPS work orders, traffic violations, monitoring.

Pure domain types and rules plus in-memory and JSON-directory repositories;
the store is reached only through the `DeviceBindings` protocol.
"""

from postloan.affairs.monitoring import (
    OfflineDevice,
    latest_by_vehicle,
    offline_devices,
    open_alarms,
)
from postloan.affairs.repository import (
    AffairsRepository,
    JsonAffairsRepository,
    MemoryAffairsRepository,
)
from postloan.affairs.violations import (
    TrafficViolation,
    ViolationImport,
    read_violations,
)
from postloan.affairs.visits import (
    AffairError,
    ReturnVisit,
    VisitStatus,
    cancel_visit,
    complete_visit,
)
from postloan.affairs.work_orders import (
    DeviceBindings,
    GpsWorkOrder,
    OrderKind,
    OrderStatus,
    complete_work_order,
)

__all__ = [
    "AffairError",
    "AffairsRepository",
    "DeviceBindings",
    "GpsWorkOrder",
    "JsonAffairsRepository",
    "MemoryAffairsRepository",
    "OfflineDevice",
    "OrderKind",
    "OrderStatus",
    "ReturnVisit",
    "TrafficViolation",
    "ViolationImport",
    "VisitStatus",
    "cancel_visit",
    "complete_visit",
    "complete_work_order",
    "latest_by_vehicle",
    "offline_devices",
    "open_alarms",
    "read_violations",
]
