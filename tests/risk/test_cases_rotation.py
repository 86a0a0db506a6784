"""Collector rotation kept in the risk state folder, across runs and processes."""

from __future__ import annotations

import json
import multiprocessing
from collections import Counter
from pathlib import Path

import pytest

from postloan.risk import DEFAULT_RULES, CollectorPool, JsonRiskRepository, load_rules
from postloan.risk.cases import next_position
from postloan.risk.evaluation import open_engine

COLLECTORS = ["a", "b", "c", "d", "e"]
LISBON = {"Europe/Lisbon": ["l1", "l2"]}


def pool_over(state: Path) -> CollectorPool:
    """A pool as a new run builds it: fresh objects over the same folder."""
    return CollectorPool(COLLECTORS, LISBON, JsonRiskRepository(state).rotation())


def test_rotation_continues_in_next_run(tmp_path: Path) -> None:
    first = [pool_over(tmp_path).assign(None) for _ in range(2)]
    second = [pool_over(tmp_path).assign(None) for _ in range(4)]

    assert first == ["a", "b"]
    assert second == ["c", "d", "e", "a"]


def test_rotation_keeps_regions_apart(tmp_path: Path) -> None:
    pool = pool_over(tmp_path)
    picks = [pool.assign("Europe/Lisbon"), pool.assign(None)]
    picks += [pool_over(tmp_path).assign("Europe/Lisbon"), pool.assign("Asia/Tokyo")]

    assert picks == ["l1", "a", "l2", "b"]
    stored = json.loads((tmp_path / "assignment.json").read_text(encoding="utf-8"))
    assert stored == {
        "*": {"index": 1, "name": "b"},
        "Europe/Lisbon": {"index": 1, "name": "l2"},
    }


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["x", "y", "z"], 2),  # unchanged list: the one after y
        (["x", "w", "y", "z"], 3),  # w added before y: still the one after y
        (["x", "z"], 1),  # y removed: z, which took y's place
        (["y"], 0),  # one collector left
        (["p", "q"], 1),  # all replaced: carry on at y's index
    ],
)
def test_next_position_after_list_edit(names: list[str], expected: int) -> None:
    assert next_position(names, {"index": 1, "name": "y"}) == expected


def test_next_position_starts_at_first() -> None:
    assert next_position(["x", "y"], None) == 0


def test_rotation_damaged_file_names_path(tmp_path: Path) -> None:
    (tmp_path / "assignment.json").write_text("[]", encoding="utf-8")

    with pytest.raises(ValueError, match=r"assignment\.json is not a JSON object"):
        pool_over(tmp_path).assign(None)


def _assign_many(state: str, count: int, start: object, output: object) -> None:
    pool = pool_over(Path(state))
    start.wait()  # type: ignore[attr-defined]
    picks = [pool.assign(None) for _ in range(count)]
    output.put(picks)  # type: ignore[attr-defined]


def test_rotation_concurrent_processes_share_turns(tmp_path: Path) -> None:
    """Four processes assigning at once give every collector the same count."""
    context = multiprocessing.get_context("fork")
    start = context.Barrier(4)
    output = context.Queue()
    workers = [
        context.Process(target=_assign_many, args=(str(tmp_path), 25, start, output))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    picks = [name for _ in workers for name in output.get(timeout=60)]
    for worker in workers:
        worker.join(timeout=60)

    assert [worker.exitcode for worker in workers] == [0] * 4
    assert Counter(picks) == {name: 20 for name in COLLECTORS}


def test_open_engine_rotation_persists(tmp_path: Path) -> None:
    rules = load_rules(DEFAULT_RULES)
    picks = []
    for _ in range(3):
        engine, _ = open_engine(rules, tmp_path, {})
        assert engine.pool is not None
        picks.append(engine.pool.assign(None))

    assert picks == ["collector-1", "collector-2", "collector-1"]
