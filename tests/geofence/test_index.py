"""FenceIndex: bulk set, run-time additions and removals, wrapped queries."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import MultiPolygon, Polygon

from postloan.geofence import FenceIndex, circle_fence, polygon_fence
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


def test_index_prepare_keeps_one_table_of_all_fences() -> None:
    index = FenceIndex([circle_fence(f"c{n}", n * 0.1, 0.0, 100.0) for n in range(5)])

    index.prepare(50.0)
    table, row_of = index.fence_table(50.0, np.array([3]))
    again, _ = index.fence_table(50.0)

    assert [fence.id for fence in table.fences] == ["c0", "c1", "c2", "c3", "c4"]
    assert row_of.tolist() == [0, 1, 2, 3, 4]
    assert again is table


def test_index_add_after_prepare_prepares_fence() -> None:
    index = FenceIndex([circle_fence("a", 0.0, 0.0, 100.0)])
    index.prepare(50.0)
    square = Polygon([(1, 1), (1.01, 1), (1.01, 1.01), (1, 1.01)])
    late = polygon_fence("late", square)

    index.add(late)
    table, row_of = index.fence_table(50.0)

    assert late.shape.__dict__.get("_prepared") is True
    assert [fence.id for fence in table.fences] == ["a", "late"]
    assert row_of.tolist() == [0, 1]


def test_index_fence_table_without_prepare_covers_slots() -> None:
    index = FenceIndex([circle_fence(f"c{n}", n * 0.1, 0.0, 100.0) for n in range(4)])

    table, row_of = index.fence_table(50.0, np.array([1, 3]))

    assert [fence.id for fence in table.fences] == ["c1", "c3"]
    assert row_of.tolist() == [-1, 0, -1, 1]


def test_index_candidates_fast_path_equals_wrapped_path() -> None:
    rng = np.random.default_rng(11)
    exclave = MultiPolygon(
        [
            Polygon([(0, 0), (0.2, 0), (0.2, 0.2), (0, 0.2)]),
            Polygon([(0.5, 0.5), (0.6, 0.5), (0.6, 0.6), (0.5, 0.6)]),
        ]
    )
    fences = [polygon_fence("exclave", exclave)]
    fences += [
        circle_fence(f"c{n}", float(x), float(y), 2000.0)
        for n, (x, y) in enumerate(rng.uniform(-0.5, 1.5, (200, 2)))
    ]
    index = FenceIndex(fences)
    index.remove("c7")

    for x, y in rng.uniform(-0.5, 1.5, (100, 2)):
        box = (float(x), float(y), float(x) + 0.2, float(y) + 0.2)
        fast = [fence.id for fence in index.candidates(*box)]
        general = [index._slots[slot] for slot in index._candidate_slots(*box)]
        assert fast == [fence.id for fence in general if fence is not None]
        assert "c7" not in fast


def test_index_query_boxes_pairs_unique() -> None:
    fences = [circle_fence(f"c{n}", n * 0.001, 0.0, 500.0) for n in range(10)]
    index = FenceIndex(fences)

    query, slots = index.query_boxes(
        np.array([-0.01, -0.01]),
        np.array([-0.01, -0.01]),
        np.array([0.02, 0.02]),
        np.array([0.01, 0.01]),
    )
    pairs = list(zip(query.tolist(), slots.tolist(), strict=True))

    assert len(pairs) == 20
    assert len(set(pairs)) == 20
