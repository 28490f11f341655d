from __future__ import annotations

from coordinator.dag import check_dependencies


def test_unknown_dependency() -> None:
    assert check_dependencies({}, [("a", ["x"])]) == "unknown dependency x (of task a)"


def test_cycle_in_a_batch() -> None:
    error = check_dependencies({"k": 1}, [("a", ["b"]), ("b", ["c"]), ("c", ["a", "k"])])
    assert error is not None and error.startswith("dependency cycle: ")
    assert error.split(": ")[1].split(" -> ")[0] == error.split(" -> ")[-1]


def test_self_and_duplicate_ids() -> None:
    assert check_dependencies({}, [("a", ["a"])]) == "task a cannot depend on itself"
    assert check_dependencies({"a": 1}, [("a", [])]) == "task id a already exists"


def test_valid_dag() -> None:
    assert check_dependencies({"k": 1}, [("a", ["k"]), ("b", ["a", "k"]), ("c", ["a", "b"])]) is None
