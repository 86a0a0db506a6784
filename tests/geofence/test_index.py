"""FenceIndex: bulk set, run-time additions and removals, wrapped queries."""

from __future__ import annotations

import numpy as np
import pytest

from postloan.geofence import FenceIndex, circle_fence
from postloan.geofence.index import REBUILD_MIN_CHANGES


def ids(fences: list) -> set[str]:  # type: ignore[type-arg]
    return {fence.id for fence in fences}


def test_index_candidates_by_box() -> None:
    index = FenceIndex(
        [circle_fence("a", 0.0, 0.0, 100.0), circle_fence("b", 1.0, 1.0, 100.0)]
    )

    found = index.candidates(-0.01, -0.01, 0.01, 0.01)

    assert ids(found) == {"a"}


def test_index_add_at_run_time() -> None:
    index = FenceIndex([circle_fence("a", 0.0, 0.0, 100.0)])
    version = index.version

    index.add(circle_fence("b", 0.0, 0.0, 200.0))

    assert ids(index.candidates(-0.01, -0.01, 0.01, 0.01)) == {"a", "b"}
    assert index.version > version
    assert len(index) == 2


def test_index_remove_bulk_and_added_fences() -> None:
    index = FenceIndex([circle_fence("a", 0.0, 0.0, 100.0)])
    index.add(circle_fence("b", 0.0, 0.0, 200.0))

    index.remove("a")
    index.remove("b")

    assert index.candidates(-0.01, -0.01, 0.01, 0.01) == []
    assert "a" not in index
    assert len(index) == 0


def test_index_add_duplicate_id_rejected() -> None:
    index = FenceIndex([circle_fence("a", 0.0, 0.0, 100.0)])

    with pytest.raises(ValueError, match="already indexed"):
        index.add(circle_fence("a", 5.0, 5.0, 100.0))


def test_index_remove_unknown_raises_key_error() -> None:
    index = FenceIndex([])

    with pytest.raises(KeyError):
        index.remove("nope")


def test_index_rebuilds_after_many_changes() -> None:
    index = FenceIndex([])
    count = REBUILD_MIN_CHANGES + 10
    for n in range(count):
        index.add(circle_fence(f"c{n}", n * 0.01, 0.0, 100.0))

    found = index.candidates(-0.001, -0.001, 0.001 + 0.01 * (count - 1), 0.001)

    assert len(found) == count
    assert index._overflow_count == 0


def test_index_query_wraps_antimeridian() -> None:
    index = FenceIndex([circle_fence("east", 179.99, 0.0, 100.0)])

    found = index.candidates(-180.02, -0.01, -179.98, 0.01)

    assert ids(found) == {"east"}


def test_index_circle_across_antimeridian_has_two_boxes() -> None:
    fence = circle_fence("seam", 179.9999, 0.0, 500.0)

    boxes = fence.shape.boxes

    assert len(boxes) == 2
    assert ids(FenceIndex([fence]).candidates(-179.999, -0.001, -179.998, 0.001)) == {
        "seam"
    }


def test_index_query_boxes_bulk() -> None:
    index = FenceIndex(
        [circle_fence("a", 0.0, 0.0, 100.0), circle_fence("b", 1.0, 1.0, 100.0)]
    )
    index.add(circle_fence("c", 1.0, 1.0, 50.0))

    query, slots = index.query_boxes(
        np.array([-0.01, 0.99]),
        np.array([-0.01, 0.99]),
        np.array([0.01, 1.01]),
        np.array([0.01, 1.01]),
    )
    found = {
        (int(q), index.slot_fence(int(s)).id) for q, s in zip(query, slots, strict=True)
    }

    assert found == {(0, "a"), (1, "b"), (1, "c")}
