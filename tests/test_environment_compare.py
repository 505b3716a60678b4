"""Comparing two environments through their type: what roar diff and a reproduction plan show."""

from __future__ import annotations

from typing import Any

from roargit.environment import Change, Environment, changes, facts
from roargit.machine import this_machine
from roargit.plan import environment_warnings

BASE: dict[str, Any] = {
    "python": {"implementation": "CPython", "version": "3.11.7", "executable": "/a/python"},
    "os": {"system": "Linux", "release": "6.1", "distro": "Debian 12"},
    "arch": "x86_64",
    "cpu": {"model": "EPYC", "count": 8},
    "gpus": [],
    "hostname": "a",
    "user": "me",
    "env_vars": {"LANG": "C"},
    "packages": {"PyYAML": "6.0", "numpy": "1.26.4"},
}


def test_changes_ignore_where_and_normalise_package_names() -> None:
    other = {
        **BASE,
        "python": {**BASE["python"], "executable": "/b/python"},
        "hostname": "b",
        "user": "you",
        "packages": {"pyyaml": "6.0", "numpy": "2.1.0"},
        "gpus": [{"name": "H100", "driver": "550", "memory_mib": 80000}],
    }
    a, b = Environment.from_dict(BASE), Environment.from_dict(other)
    assert changes(a, b) == [
        Change("gpu", "gpu", "none", "H100 (driver 550)"),
        Change("package", "package numpy", "1.26.4", "2.1.0"),
    ]
    assert changes(a, b, {"package"}) == [changes(a, b)[1]]
    empty = Environment.from_dict({})
    assert changes(empty, empty) == []


def test_a_python_version_told_by_name_alone_matches_the_full_one() -> None:
    short = Environment.from_dict({**BASE, "python": {"version": "3.11"}})
    full = Environment.from_dict(BASE)
    assert changes(short, full, {"python"}) == []
    newer = Environment.from_dict({**BASE, "python": {**BASE["python"], "version": "3.12.1"}})
    assert changes(full, newer, {"python"}) == [
        Change("python", "python", "CPython 3.11.7", "CPython 3.12.1")
    ]


def test_facts_leave_out_what_the_record_does_not_know() -> None:
    assert set(facts(Environment.from_dict({}))) == {"gpu"}
    assert "kernel" in facts(Environment.from_dict(BASE))


def test_this_machine_names_a_missing_package_with_an_empty_version() -> None:
    here = this_machine(None, ["surely-not-installed-dist", "pytest"], {"PATH": ""})
    assert here.packages["surely-not-installed-dist"] == ""
    assert here.packages["pytest"] != ""
    assert here.os.system and here.arch


class _Run:
    def __init__(self, environment: dict[str, Any]) -> None:
        self.environment = environment
        self.argv = ("true",)


class _Step:
    def __init__(self, label: str, environment: dict[str, Any]) -> None:
        self.label = label
        self.run = _Run(environment)


def test_plan_warnings_name_each_difference_once_with_its_steps() -> None:
    recorded = {**BASE, "arch": "sparc64", "packages": {"surely-not-installed-dist": "1.0"}}
    steps = [_Step("@1", recorded), _Step("@2", recorded), _Step("@3", {})]
    warnings = environment_warnings(steps)  # type: ignore[arg-type]
    assert "environment: package surely-not-installed-dist 1.0 → not installed (@1, @2)" in (
        warnings
    )
    assert any(w.startswith("environment: arch sparc64 → ") for w in warnings)
    assert not any("@3" in w for w in warnings)
