"""Spatial index of fences for candidate look-ups by box.

The bulk set lives in a packed shapely STRtree (bulk-loaded, fast to query,
immutable). Fences added at run time go to an rtree (libspatialindex) index,
which takes incremental inserts; removals leave tombstones. The STRtree is
rebuilt from all live fences on the next query once the rtree or the
tombstones grow past a threshold. Multipolygon parts are indexed one by one,
so an exclave or a country split at ±180 does not widen the box of its fence.

Measured on a 2-core AMD EPYC VM with 100,000 fences (shapely 2.2, rtree
1.4): an STRtree query by box costs about 1 µs when the box comes as a
one-element array and 4-5 µs as a scalar geometry. Building the box costs
2-3 µs more, and an rtree query costs 15-25 µs. So rtree takes only the few
run-time additions. bench/bench_geofence.py prints the same comparison.

`FenceIndex.prepare` builds every structure the zone tests need that
depends only on the fences (polygon edges and inradius, GEOS point indexes)
and the arrays of the batch path (`FenceTable`), so that neither the engine
nor the batch path builds them while it handles fixes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import rtree
import shapely
from shapely.strtree import STRtree

from postloan.geofence.fences import (
    Box,
    CircleShape,
    Fence,
    PolygonShape,
    prepare_shapes,
    wrap_boxes,
)

#: Rebuild the STRtree once this many run-time changes are pending, or a
#: quarter of the indexed fences when that is more.
REBUILD_MIN_CHANGES = 256


_UNBOUNDED = (-np.inf, -np.inf, np.inf, np.inf)

CIRCLE = 0
POLYGON = 1
CORRIDOR = 2


@dataclass(frozen=True)
class FenceTable:
    """Arrays, one row per fence, of what the batch path tests for one
    hysteresis margin.

    A point outside a row's `reach_bounds` is OUTSIDE (unbounded for a
    circle whose `CircleShape.reach_box` is None). Circles fill `lon`,
    `lat`, `rho` and `radius`; polygons `area` and `lines` (their edges);
    corridors `lines` and `half` (half the width in metres).
    """

    fences: Sequence[Fence]
    restricted: np.ndarray  # applies_to is set: check the device's labels
    kind: np.ndarray  # CIRCLE, POLYGON or CORRIDOR
    margin: np.ndarray  # effective margin in metres
    reach_bounds: np.ndarray  # (min_x, min_y, max_x, max_y) per row
    lon: np.ndarray
    lat: np.ndarray
    rho: np.ndarray  # Gaussian radius of curvature at the centre, metres
    radius: np.ndarray  # metres
    half: np.ndarray
    area: np.ndarray
    lines: np.ndarray

    @classmethod
    def build(cls, fences: Sequence[Fence], margin_m: float) -> FenceTable:
        """Build the table, preparing the shapes that are not yet."""
        prepare_shapes([fence.shape for fence in fences])
        count = len(fences)
        kind = np.zeros(count, dtype=np.int8)
        margin = np.zeros(count)
        reach = np.zeros((count, 4))
        circle = np.zeros((count, 4))  # lon, lat, rho, radius
        circle[:, 2] = 1.0
        half = np.zeros(count)
        area = np.full(count, None, dtype=object)
        lines = np.full(count, None, dtype=object)

        for row, fence in enumerate(fences):
            shape = fence.shape
            margin[row] = shape.effective_margin(margin_m)
            if isinstance(shape, CircleShape):
                circle[row] = (shape.lon, shape.lat, shape.curvature_m, shape.radius_m)
                reach[row] = shape.reach_box(margin[row]) or _UNBOUNDED
                continue
            reach[row] = shape.reach_bounds(margin[row])
            lines[row] = shape.lines
            if isinstance(shape, PolygonShape):
                kind[row] = POLYGON
                area[row] = shape.polygons
            else:
                kind[row] = CORRIDOR
                half[row] = shape.width_m / 2.0
        restricted = [fence.applies_to is not None for fence in fences]
        return cls(
            fences,
            np.array(restricted, dtype=bool),
            kind,
            margin,
            reach,
            circle[:, 0],
            circle[:, 1],
            circle[:, 2],
            circle[:, 3],
            half,
            area,
            lines,
        )


class FenceIndex:
    """Fences by id with a spatial index over their boxes.

    `version` increases on every change, so callers can drop cached
    candidate lists.
    """

    def __init__(self, fences: Iterable[Fence] = ()) -> None:
        self._slots: list[Fence | None] = []
        self._slot_of: dict[str, int] = {}
        self._table_margins: list[float] = []  # prepared: keep their tables
        self._tables: dict[float, FenceTable] = {}
        self.version = 0
        for fence in fences:
            self._insert(fence)
        self._build()

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, fence_id: object) -> bool:
        return fence_id in self._slot_of

    def __iter__(self) -> Iterator[Fence]:
        return (fence for fence in self._slots if fence is not None)

    def get(self, fence_id: str) -> Fence | None:
        slot = self._slot_of.get(fence_id)
        return None if slot is None else self._slots[slot]

    def add(self, fence: Fence) -> None:
        """Add a fence at run time; raise ValueError if its id is taken."""
        if fence.id in self._slot_of:
            raise ValueError(
                f"fence id {fence.id!r} is already indexed; remove it first"
            )
        if self._table_margins:
            prepare_shapes([fence.shape])
        slot = self._insert(fence)
        for box in fence.shape.boxes:
            self._overflow.insert(slot, box)
        self._overflow_count += 1
        self._tables.clear()
        self.version += 1

    def remove(self, fence_id: str) -> Fence:
        """Remove a fence and return it; raise KeyError if it is unknown."""
        slot = self._slot_of.pop(fence_id)
        fence = self._slots[slot]
        assert fence is not None
        self._slots[slot] = None
        if slot >= self._packed_slots:
            for box in fence.shape.boxes:
                self._overflow.delete(slot, box)
            self._overflow_count -= 1
        else:
            self._live[slot] = False
            self._tombstones += 1
        self._tables.clear()
        self.version += 1
        return fence

    def prepare(self, margin_m: float) -> None:
        """Build everything the zone tests need that depends only on the
        fences, and the `FenceTable` for the hysteresis margin `margin_m`.

        Fences added later are prepared by `add`. Without this call the
        engine and the batch path build these structures for each fence the
        first time a fix comes near it, which makes those fixes slow.
        """
        if margin_m not in self._table_margins:
            self._table_margins.append(margin_m)
        prepare_shapes(fence.shape for fence in self)
        self.fence_table(margin_m)

    def fence_table(
        self, margin_m: float, slots: np.ndarray | None = None
    ) -> tuple[FenceTable, np.ndarray]:
        """Return a `FenceTable` with a row for each of `slots` (default:
        all) and the row of every slot, -1 where the table has none.

        After `prepare(margin_m)` this is one table of all fences, kept until
        the next change. Otherwise the table covers `slots` only and is built
        on every call, preparing the fences that are not yet.
        """
        self.compact()
        prepared = margin_m in self._table_margins
        if prepared or slots is None:
            slots = np.arange(len(self._slots))
        table = self._tables.get(margin_m)
        if table is None:
            fences = [self.slot_fence(int(slot)) for slot in slots]
            table = FenceTable.build(fences, margin_m)
            if prepared:
                self._tables[margin_m] = table
        row_of = np.full(self.slot_count, -1, dtype=np.int64)
        row_of[slots] = np.arange(len(slots))
        return table, row_of

    def candidates(
        self, min_x: float, min_y: float, max_x: float, max_y: float
    ) -> list[Fence]:
        """Return the fences with a box that meets the query box, in slot
        order. The query box may reach past ±180; it wraps around."""
        self._rebuild_if_due()
        if min_x < -180.0 or max_x > 180.0 or self._overflow_count:
            slots = self._candidate_slots(min_x, min_y, max_x, max_y)
        else:
            # The common case, kept short: it runs for every index query of
            # the engine. STRtree.query takes a one-element array about 4 µs
            # faster than a scalar geometry (shapely 2.2), and returns
            # (input index, tree index) rows.
            query = np.array([shapely.box(min_x, min_y, max_x, max_y)])
            parts = self._tree.query(query)[1]
            if self._one_part:
                slots = sorted(parts.tolist())
            else:
                slots = sorted(set(self._part_slot[parts].tolist()))
        found = [self._slots[slot] for slot in slots]
        return [fence for fence in found if fence is not None]

    def _candidate_slots(
        self, min_x: float, min_y: float, max_x: float, max_y: float
    ) -> list[int]:
        slots: set[int] = set()
        for box in wrap_boxes(min_x, min_y, max_x, max_y):
            parts = self._tree.query(shapely.box(*box))
            slots.update(self._part_slot[parts].tolist())
            if self._overflow_count:
                slots.update(self._overflow.intersection(box))
        return sorted(slots)

    def query_boxes(
        self, min_x: np.ndarray, min_y: np.ndarray, max_x: np.ndarray, max_y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return unique (query index, slot) pairs for many boxes at once.

        The boxes must lie within ±180. Run-time additions are packed into
        the STRtree first, so this is one bulk query.
        """
        self.compact()
        boxes = shapely.box(min_x, min_y, max_x, max_y)
        query, parts = self._tree.query(boxes)
        if self._one_part:
            # Compacted, so no removals: the pairs are unique.
            return query.astype(np.int64), self._part_slot[parts]
        slots = self._part_slot[parts]
        keys = np.unique(query.astype(np.int64) * len(self._slots) + slots)
        return keys // len(self._slots), keys % len(self._slots)

    @property
    def slot_count(self) -> int:
        """Number of slots, removed ones included; slots index `slot_fence`."""
        return max(len(self._slots), 1)

    def slot_fence(self, slot: int) -> Fence:
        fence = self._slots[slot]
        assert fence is not None, f"slot {slot} was removed"
        return fence

    def compact(self) -> None:
        """Rebuild the STRtree now if any run-time change is pending."""
        if self._overflow_count or self._tombstones:
            self._build()

    def _insert(self, fence: Fence) -> int:
        if fence.id in self._slot_of:
            raise ValueError(f"fence id {fence.id!r} is listed twice")
        self._slots.append(fence)
        self._slot_of[fence.id] = len(self._slots) - 1
        return len(self._slots) - 1

    def _rebuild_if_due(self) -> None:
        pending = self._overflow_count + self._tombstones
        if pending > max(REBUILD_MIN_CHANGES, len(self._slot_of) // 4):
            self._build()

    def _build(self) -> None:
        live = [fence for fence in self._slots if fence is not None]
        self._slots = list[Fence | None](live)
        self._slot_of = {fence.id: slot for slot, fence in enumerate(live)}
        boxes: list[Box] = []
        owners: list[int] = []
        for slot, fence in enumerate(live):
            boxes.extend(fence.shape.boxes)
            owners.extend([slot] * len(fence.shape.boxes))
        coords = np.array(boxes, dtype=float).reshape(-1, 4)
        self._tree = STRtree(
            shapely.box(coords[:, 0], coords[:, 1], coords[:, 2], coords[:, 3])
        )
        self._part_slot = np.array(owners, dtype=np.int64)
        # With one box per fence, part numbers are slot numbers.
        self._one_part = len(owners) == len(live)
        self._packed_slots = len(live)
        self._tables.clear()
        self._live = np.ones(len(live), dtype=bool)
        self._overflow = rtree.index.Index(interleaved=True)
        self._overflow_count = 0
        self._tombstones = 0
