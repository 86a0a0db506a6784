"""Spatial index of fences for candidate look-ups by box.

The bulk set lives in a packed shapely STRtree (bulk-loaded, fast to query,
immutable). Fences added at run time go to an rtree (libspatialindex) index,
which takes incremental inserts; removals leave tombstones. The STRtree is
rebuilt from all live fences on the next query once the rtree or the
tombstones grow past a threshold. Multipolygon parts are indexed one by one,
so an exclave or a country split at ±180 does not widen the box of its fence.

Measured on a 2-core AMD EPYC VM with 10,000 polygons, a query by box costs
about 4 µs on the STRtree plus 3 µs to build the query box, and about 15 µs
on rtree. So rtree takes only the few run-time additions.
bench/bench_geofence.py prints the same comparison for its own data.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import rtree
import shapely
from shapely.strtree import STRtree

from postloan.geofence.fences import Box, Fence, wrap_boxes

#: Rebuild the STRtree once this many run-time changes are pending, or a
#: quarter of the indexed fences when that is more.
REBUILD_MIN_CHANGES = 256


class FenceIndex:
    """Fences by id with a spatial index over their boxes.

    `version` increases on every change, so callers can drop cached
    candidate lists.
    """

    def __init__(self, fences: Iterable[Fence] = ()) -> None:
        self._slots: list[Fence | None] = []
        self._slot_of: dict[str, int] = {}
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
        slot = self._insert(fence)
        for box in fence.shape.boxes:
            self._overflow.insert(slot, box)
        self._overflow_count += 1
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
        self.version += 1
        return fence

    def candidates(
        self, min_x: float, min_y: float, max_x: float, max_y: float
    ) -> list[Fence]:
        """Return the fences with a box that meets the query box. The query
        box may reach past ±180; it wraps around."""
        self._rebuild_if_due()
        slots: set[int] = set()
        for box in wrap_boxes(min_x, min_y, max_x, max_y):
            parts = self._tree.query(shapely.box(*box))
            slots.update(self._part_slot[parts].tolist())
            if self._overflow_count:
                slots.update(self._overflow.intersection(box))
        fences = [self._slots[slot] for slot in sorted(slots)]
        return [fence for fence in fences if fence is not None]

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
        slots = self._part_slot[parts]
        live = self._live[slots]
        keys = np.unique(query[live].astype(np.int64) * len(self._slots) + slots[live])
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
        self._packed_slots = len(live)
        self._live = np.ones(len(live), dtype=bool)
        self._overflow = rtree.index.Index(interleaved=True)
        self._overflow_count = 0
        self._tombstones = 0
