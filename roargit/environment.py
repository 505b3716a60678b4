"""The environment a run ran in, as a typed record: interpreter, OS, CPU, GPUs, selected
environment variables (redacted), and the Python distributions the run actually used; and
how two environments differ (`changes`, used by `roar diff` and by reproduction plans).

A run record keeps the environment as a plain map (`Environment.to_dict`); every reader goes
through `Environment.from_dict`, which reads only what the record schema allows.
Probing this machine is machine.py's job, the package list packages.py's.

Distribution names in `packages` are the `Name:` field of the distribution's METADATA as
published (`PyYAML`, not `pyyaml`); two lists are compared by their PEP 503 names
(`normalise_name`).
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping

from roargit import TYPE_CHECKING
from roargit.errors import RecordCorrupt
from roargit.structs import NamedTuple

if TYPE_CHECKING:
    from typing import Any


class PythonInfo(NamedTuple):
    implementation: str  # "CPython", "PyPy", or "" when it could not be told
    version: str  # "3.11.7", or "3.11" when only the executable's name says
    executable: str


class OsInfo(NamedTuple):
    system: str  # "Linux"
    release: str  # kernel release, "6.8.0-45-generic"
    distro: str  # /etc/os-release PRETTY_NAME, "" when absent


class CpuInfo(NamedTuple):
    model: str
    cores: int  # recorded as "count"


class GpuInfo(NamedTuple):
    name: str
    driver: str
    memory_mib: int  # 0 when nvidia-smi did not say


class Environment(NamedTuple):
    """Where a run ran. `env_vars` and `packages` are dicts for the codec: treat as read-only."""

    python: PythonInfo
    os: OsInfo
    arch: str
    cpu: CpuInfo
    gpus: tuple[GpuInfo, ...]
    hostname: str
    user: str
    env_vars: dict[str, str]
    packages: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """Plain str/int/list/dict data, for the canonical msgpack codec."""
        return {
            "python": {
                "implementation": self.python.implementation,
                "version": self.python.version,
                "executable": self.python.executable,
            },
            "os": {"system": self.os.system, "release": self.os.release, "distro": self.os.distro},
            "arch": self.arch,
            "cpu": {"model": self.cpu.model, "count": self.cpu.cores},
            "gpus": [
                {"name": g.name, "driver": g.driver, "memory_mib": g.memory_mib} for g in self.gpus
            ],
            "hostname": self.hostname,
            "user": self.user,
            "env_vars": dict(sorted(self.env_vars.items())),
            "packages": dict(sorted(self.packages.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Environment:
        """The inverse of `to_dict`: how a recorded environment map is read. Missing fields
        read as empty (an older writer); unknown ones are ignored (a newer minor writer); wrong
        types raise `RecordCorrupt`, from the record schema's own check, so this reads only
        what a record may hold."""
        # Here, not at the top: `roar run` loads this module to write an environment, never
        # to read one (record_fields is the decoding side).
        from roargit.record_fields import check_environment

        data = check_environment(data, "environment")
        py = _submap(data, "python")
        osd = _submap(data, "os")
        cpu = _submap(data, "cpu")
        gpus = data.get("gpus", [])
        if not isinstance(gpus, list) or not all(isinstance(g, Mapping) for g in gpus):
            raise RecordCorrupt("environment", "'gpus' is not a list of maps")
        return cls(
            python=PythonInfo(
                implementation=_str(py, "implementation"),
                version=_str(py, "version"),
                executable=_str(py, "executable"),
            ),
            os=OsInfo(
                system=_str(osd, "system"),
                release=_str(osd, "release"),
                distro=_str(osd, "distro"),
            ),
            arch=_str(data, "arch"),
            cpu=CpuInfo(model=_str(cpu, "model"), cores=_int(cpu, "count")),
            gpus=tuple(
                GpuInfo(
                    name=_str(g, "name"), driver=_str(g, "driver"), memory_mib=_int(g, "memory_mib")
                )
                for g in gpus
            ),
            hostname=_str(data, "hostname"),
            user=_str(data, "user"),
            env_vars=_strmap(data, "env_vars"),
            packages=_strmap(data, "packages"),
        )


def _submap(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise RecordCorrupt("environment", f"'{key}' is not a map")
    return value


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise RecordCorrupt("environment", f"'{key}' is not a string")
    return value


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordCorrupt("environment", f"'{key}' is not an integer")
    return value


def _strmap(data: Mapping[str, Any], key: str) -> dict[str, str]:
    value = _submap(data, key)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise RecordCorrupt("environment", f"'{key}' is not a map of strings")
    return dict(value)


# --- comparing two environments ---------------------------------------------------------------

_PEP503 = r"[-_.]+"  # compiled on first use (re's cache): comparisons only, not `roar run`


def normalise_name(name: str) -> str:
    """A distribution name as PEP 503 compares it: `PyYAML`, `pyyaml` and `py_yaml` alike."""
    return re.sub(_PEP503, "-", name).lower()


class Change(NamedTuple):
    """One fact that differs. `kind` is "python", "os", "kernel", "arch", "cpu", "gpu", "env"
    or "package"; `a` / `b` are None where that side does not have the fact."""

    kind: str
    label: str  # "python", "package numpy", "env CUDA_VISIBLE_DEVICES"
    a: str | None
    b: str | None


def facts(env: Environment) -> dict[str, tuple[str, str, str]]:
    """Comparable facts of an environment: {key: (kind, label, value)}. Hostname, user and the
    interpreter's path are left out: they name where a run ran, not what it ran with; so is
    a fact the environment does not know (an empty OS record, no interpreter version)."""
    out: dict[str, tuple[str, str, str]] = {}
    py = env.python
    if py.version or py.implementation:
        out["python"] = ("python", "python", f"{py.implementation} {py.version}".strip())
    if env.os.distro or env.os.system:
        out["os"] = ("os", "os", env.os.distro or env.os.system)
    if env.os.release:
        out["kernel"] = ("kernel", "kernel", env.os.release)
    if env.arch:
        out["arch"] = ("arch", "arch", env.arch)
    if env.cpu.model or env.cpu.cores:
        out["cpu"] = ("cpu", "cpu", f"{env.cpu.model} x{env.cpu.cores or '?'}")
    names = [f"{g.name or '?'} (driver {g.driver or '?'})" for g in env.gpus]
    out["gpu"] = ("gpu", "gpu", ", ".join(names) or "none")
    for k, v in sorted(env.env_vars.items()):
        out[f"env:{k}"] = ("env", f"env {k}", v)
    for name, version in sorted(env.packages.items()):
        out[f"pkg:{normalise_name(name)}"] = ("package", f"package {name}", version)
    return out


def _same(kind: str, a: str, b: str) -> bool:
    if kind == "python":
        # "CPython 3.11" (only the executable's name said) matches "CPython 3.11.7".
        ia, _, va = a.rpartition(" ")
        ib, _, vb = b.rpartition(" ")
        pa, pb = va.split("."), vb.split(".")
        n = min(len(pa), len(pb))
        return (ia == ib or not ia or not ib) and pa[:n] == pb[:n]
    return a == b


def changes(a: Environment, b: Environment, kinds: Container[str] | None = None) -> list[Change]:
    """The facts that differ from `a` to `b`, in `facts` order (a's first, then b's own);
    only those of `kinds` when given. A package with an empty version is one not installed."""
    if a == b:
        return []
    fa, fb = facts(a), facts(b)
    out: list[Change] = []
    for key in dict.fromkeys([*fa, *fb]):
        va, vb = fa.get(key), fb.get(key)
        kind, label, _ = vb or va  # type: ignore[misc]  # one side has the key
        if kinds is not None and kind not in kinds:
            continue
        if va is not None and vb is not None and _same(kind, va[2], vb[2]):
            continue
        out.append(Change(kind, label, va[2] if va else None, vb[2] if vb else None))
    return out
