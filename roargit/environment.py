"""The environment a run ran in, as plain data: interpreter, OS, CPU, GPUs, selected
environment variables (redacted), and the Python distributions the run actually used.

Reading the machine is this module's job, so `capture_environment` reads a few files
(/etc/os-release, /proc/cpuinfo) and may run `nvidia-smi`; the static parts are cached for the
life of the process because `roar run` must stay cheap. Everything that interprets text is a
pure parser (`parse_os_release`, `parse_cpuinfo`, `parse_nvidia_smi`).

Noise rules (`is_system_path`) — a path the tracer saw is *not* an artifact when it is:

1. inside a `site-packages` / `dist-packages` dir: never noise here, because those reads become
   the run's package list (`packages_for_paths`); call that first and drop what it classified;
2. under a system tree: /usr (lib*, libexec, share, include, bin, sbin, local/{lib*,share,
   include,bin,sbin}), /lib*, /bin, /sbin, /etc, /proc, /sys, /dev, /run, /var/run, /var/cache,
   /var/lib/{dpkg,apt}, /nix/store, /snap;
3. under the user's caches and tool homes, given `home`: ~/.cache (except ~/.cache/huggingface
   and ~/.cache/torch/hub, which hold models and datasets a run genuinely consumes, and
   ~/.cache/roargit, whose clones of registered lineage are reproduced in), ~/.pyenv,
   ~/.nv, ~/.triton, ~/.terminfo, ~/.python_history;
4. part of any Python interpreter: a stdlib dir `…/lib/python3.X/` (or `lib/python3X.zip`),
   a `pyvenv.cfg`, an executable `…/bin/python*`;
5. bytecode anywhere: `__pycache__/`, `*.pyc`;
6. inside a `.git/` dir (git's own metadata, read by tools the run spawned);
7. matched by one of the caller's extra globs (fnmatch syntax, where `*` also crosses `/`).

/tmp, /var/tmp, /mnt, /data, /opt and the rest of $HOME are *not* noise: real data lives there.

Distribution names in `packages` are the `Name:` field of the distribution's METADATA as
published (`PyYAML`, not `pyyaml`), which is what `pip freeze` shows and what `pip install`
accepts; comparing two lists should normalise with PEP 503 (`packaging.utils.canonicalize_name`).
"""

from __future__ import annotations

import fnmatch
import functools
import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from roargit.errors import RecordCorrupt
from roargit.records import Identity
from roargit.redact import MARK, is_secret_name, redact_value

# --- the record ------------------------------------------------------------------------------


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
        """The inverse of `to_dict`. Missing fields read as empty (an older writer); unknown
        ones are ignored (a newer minor writer); wrong types raise `RecordCorrupt`, from the
        record schema's own check, so this reads only what a record may hold."""
        from roargit.records import check_environment

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


# --- pure parsers ----------------------------------------------------------------------------


def parse_os_release(text: str) -> str:
    """PRETTY_NAME from os-release(5) text (shell-style quoting), or NAME VERSION, or ""."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        fields[key] = value
    if fields.get("PRETTY_NAME"):
        return fields["PRETTY_NAME"]
    return " ".join(v for v in (fields.get("NAME", ""), fields.get("VERSION", "")) if v)


def parse_cpuinfo(text: str) -> str:
    """The CPU model from /proc/cpuinfo text. x86 says "model name"; arm64 kernels often give
    only the implementer and part numbers (arch/arm64/kernel/cpuinfo.c), so say those."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:  # one processor's block is enough: the rest repeat it
                break
            continue
        fields.setdefault(key.strip(), value.strip())
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor", "cpu"):
        if fields.get(key):
            return fields[key]
    implementer, part = fields.get("CPU implementer"), fields.get("CPU part")
    if implementer and part:
        return f"CPU implementer {implementer} part {part}"
    return ""


_MIB = re.compile(r"^\s*(\d+)\s*MiB\s*$", re.IGNORECASE)


def parse_nvidia_smi(text: str) -> tuple[GpuInfo, ...]:
    """GPUs from `nvidia-smi --query-gpu=name,driver_version,memory.total
    --format=csv,noheader` output ("NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB")."""
    gpus: list[GpuInfo] = []
    import csv  # lazy: only nvidia-smi output needs it

    for row in csv.reader(line for line in text.splitlines() if line.strip()):
        if len(row) < 3:
            continue
        name, driver, memory = (c.strip() for c in row[:3])
        m = _MIB.match(memory)
        gpus.append(GpuInfo(name=name, driver=driver, memory_mib=int(m.group(1)) if m else 0))
    return tuple(gpus)


# --- reading the machine (cached: none of it changes while a process lives) ------------------


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


@functools.cache
def _os_info() -> OsInfo:
    u = os.uname()
    text = _read_text("/etc/os-release") or _read_text("/usr/lib/os-release")
    return OsInfo(system=u.sysname, release=u.release, distro=parse_os_release(text))


@functools.cache
def _cpu_info() -> CpuInfo:
    # /proc/cpuinfo is generated on read and runs to hundreds of KiB on big machines; the first
    # processor's block is all parse_cpuinfo needs.
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            head = f.read(8192)
    except OSError:
        head = ""
    return CpuInfo(model=parse_cpuinfo(head), cores=os.cpu_count() or 0)


@functools.cache
def _hostname() -> str:
    return os.uname().nodename  # what gethostname(2) answers, without importing socket


def recorder(
    env: Mapping[str, str], name: str, email: str, *, share_user: bool, share_host: bool
) -> Identity:
    """Who records a run: the identity git would put on a commit made now (GIT_AUTHOR_NAME
    and GIT_AUTHOR_EMAIL over `name` and `email`, git's user.name and user.email) and this
    host; each withheld ("") when the roar.share settings say so."""
    return Identity(
        (env.get("GIT_AUTHOR_NAME") or name) if share_user else "",
        (env.get("GIT_AUTHOR_EMAIL") or email) if share_user else "",
        _hostname() if share_host else "",
    )


_NVIDIA_SMI_TIMEOUT_S = 5.0  # a healthy driver answers in well under a second


@functools.cache
def _query_gpus(nvidia_smi: str) -> tuple[GpuInfo, ...]:
    try:
        out = subprocess.run(
            [
                nvidia_smi,
                "--query-gpu=name,driver_version,memory.total",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=_NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    # nvidia-smi exits non-zero (and prints an error) when the driver is missing or wedged.
    return parse_nvidia_smi(out.stdout) if out.returncode == 0 else ()


def detect_gpus(path_var: str | None) -> tuple[GpuInfo, ...]:
    """GPUs as nvidia-smi reports them, looking for it on `path_var` (a $PATH value); empty
    when it is absent, fails, or hangs past a short timeout. Cached per nvidia-smi binary."""
    found = shutil.which("nvidia-smi", path=path_var) if path_var else None
    return _query_gpus(found) if found else ()


def _user(env: Mapping[str, str]) -> str:
    for name in ("USER", "LOGNAME"):
        if env.get(name):
            return env[name]
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid with no passwd entry, as in some containers
        return str(os.getuid())


_PY_NAME = re.compile(r"^(python|pypy)(\d+(?:\.\d+)?)?", re.IGNORECASE)


@functools.cache
def python_info(executable: str | None = None) -> PythonInfo:
    """The interpreter at `executable` (None: this one) without running it, which would cost
    more than the whole capture: the same binary as ours → our `sys`; else a venv's pyvenv.cfg
    (`version`, or virtualenv's `version_info` and `implementation`); else its file name."""
    if executable is None or _same_file(executable, sys.executable):
        v = sys.version_info
        return PythonInfo(
            implementation=sys.implementation.name.replace("cpython", "CPython").replace(
                "pypy", "PyPy"
            ),
            version=f"{v.major}.{v.minor}.{v.micro}",
            executable=executable or sys.executable,
        )
    cfg: dict[str, str] = {}
    text = _read_text(os.path.join(os.path.dirname(os.path.dirname(executable)), "pyvenv.cfg"))
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            cfg[key.strip().lower()] = value.strip()
    names = (os.path.basename(executable), os.path.basename(os.path.realpath(executable)))
    matches = [m for m in (_PY_NAME.match(n) for n in names) if m]
    implementation = cfg.get("implementation", "")
    if not implementation and matches:
        implementation = "PyPy" if matches[0].group(1).lower() == "pypy" else "CPython"
    version = cfg.get("version") or ".".join(cfg.get("version_info", "").split(".")[:3])
    if not version:
        # The most specific of the two names: python3 → python3.11 through the symlink.
        version = max((m.group(2) or "" for m in matches), key=len, default="")
    return PythonInfo(implementation=implementation, version=version, executable=executable)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# --- which environment variables are worth recording ----------------------------------------

# Variables that change what a run computes or how fast: seeds, threading, device selection,
# framework switches, locale and time zone, which environment is active, and roar's own.
DEFAULT_ENV_INCLUDE: tuple[str, ...] = (
    "PYTHONHASHSEED", "PYTHONPATH", "PYTHONOPTIMIZE", "PYTHONWARNINGS", "PYTHONUTF8",
    "CUDA_*", "CUBLAS_*", "CUDNN_*", "NVIDIA_VISIBLE_DEVICES", "NCCL_*",
    "OMP_*", "MKL_*", "OPENBLAS_*", "KMP_*", "NUMEXPR_*", "VECLIB_MAXIMUM_THREADS",
    "TORCH_*", "PYTORCH_*", "TF_*", "HF_*", "TRANSFORMERS_*", "HUGGINGFACE_*",
    "TOKENIZERS_PARALLELISM", "JAX_*", "XLA_*",
    "SEED", "*_SEED",
    "LANG", "LANGUAGE", "LC_*", "TZ",
    "VIRTUAL_ENV", "CONDA_DEFAULT_ENV", "CONDA_PREFIX",
    "ROAR_*",
)  # fmt: skip


@functools.lru_cache(maxsize=64)
def _env_selector(include: tuple[str, ...]) -> Callable[[str], bool]:
    """A test for variable names matching any of the globs. Names, `X_*` and `*_X` (all the
    defaults) are set and prefix/suffix tests; only other globs go through a regex, whose
    compilation would cost a millisecond or two on every `roar run`. Case-sensitive on purpose:
    environment names are (POSIX), and a glob from the user's config means what it says."""
    names: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    others: list[str] = []
    for g in (*DEFAULT_ENV_INCLUDE, *include):
        if not _GLOB_CHARS.search(g):
            names.add(g)
        elif g.endswith("*") and not _GLOB_CHARS.search(g[:-1]):
            prefixes.append(g[:-1])
        elif g.startswith("*") and not _GLOB_CHARS.search(g[1:]):
            suffixes.append(g[1:])
        else:
            others.append(g)
    starts, ends = tuple(prefixes), tuple(suffixes)
    rest = re.compile("|".join(fnmatch.translate(g) for g in others)) if others else None

    def wanted(name: str) -> bool:
        return (
            name in names
            or name.startswith(starts)
            or name.endswith(ends)
            or (rest is not None and rest.match(name) is not None)
        )

    return wanted


_GLOB_CHARS = re.compile(r"[*?\[]")


def select_env(env: Mapping[str, str], include: Iterable[str] = ()) -> dict[str, str]:
    """The variables of `env` worth recording (the defaults plus `include` globs), redacted:
    secret-named ones get the marker, the rest lose secret-looking parts of their values."""
    wanted = _env_selector(tuple(include))
    return {
        name: MARK if is_secret_name(name) else redact_value(value)
        for name, value in sorted(env.items())
        if wanted(name)
    }


def capture_environment(
    env: Mapping[str, str],
    packages: Mapping[str, str],
    python: str | None = None,
    include: Iterable[str] = (),
) -> Environment:
    """The environment of a run started with `env`, which used `packages` (from
    `packages_for_paths`) and, if it was a Python program, the interpreter at `python`.
    `include` adds glob patterns of variable names to record (config `roar.env.include`)."""
    return Environment(
        python=python_info(python),
        os=_os_info(),
        arch=os.uname().machine,
        cpu=_cpu_info(),
        gpus=detect_gpus(env.get("PATH")),
        hostname=_hostname(),
        user=_user(env),
        env_vars=select_env(env, include),
        packages=dict(sorted(packages.items())),
    )


# --- installed distributions ---------------------------------------------------------------

_SITE_ROOT = re.compile(r"^(.*?/(?:site|dist)-packages)(?:/|$)")
_EGG_DIR = re.compile(r"^(?P<name>[^-/]+)-(?P<version>[^-/]+)(?:-[^/]*)?\.egg$")


class _RootIndex:
    """What one site-packages dir holds: which distribution owns each top-level name."""

    __slots__ = ("editable", "outside", "shared_dirs", "shared_files", "tops")

    def __init__(self) -> None:
        # top-level name (package dir, `mod.py`, `x.dist-info`, `x.pth`) → (name, version)
        self.tops: dict[str, tuple[str, str]] = {}
        # Namespace packages (`google/`, `nvidia/`) are shared by several distributions; below
        # such a top the owner is found by file, then by the deepest directory with one owner.
        self.shared_files: dict[str, tuple[str, str]] = {}
        self.shared_dirs: dict[str, set[tuple[str, str]]] = {}
        # Files a distribution installed outside the root (console scripts in bin/), absolute.
        self.outside: dict[str, tuple[str, str]] = {}
        # Source dirs of editable installs, absolute.
        self.editable: dict[str, tuple[str, str]] = {}


def _metadata_fields(path: str) -> tuple[str, str]:
    """Name and Version from a METADATA / PKG-INFO file: the RFC 822 header block only."""
    name = version = ""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break
                if line.startswith("Name:"):
                    name = line[5:].strip()
                elif line.startswith("Version:"):
                    version = line[8:].strip()
                if name and version:
                    break
    except OSError:
        pass
    return name, version


def _record_paths(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out: list[str] = []
    for line in lines:
        if not line:
            continue
        if line[0] == '"':  # a path quoted for its commas: rare, let csv do it properly
            import csv  # lazy: rarely needed

            out.extend(row[0] for row in csv.reader([line]) if row)
        else:
            out.append(line.rsplit(",", 2)[0])
    return out


_FINDER_MAPPING = re.compile(r"^MAPPING\s*(?::[^=]*)?=\s*(\{.*?\})\s*$", re.MULTILINE | re.DOTALL)


def _editable_sources(root: str, rel_paths: Iterable[str]) -> list[str]:
    """Source dirs an editable install points at: setuptools' `__editable___*_finder.py`
    MAPPING (PEP 660, setuptools ≥ 64) and path lines of the `.pth` files it installed (the
    older and the hatch/flit/pdm way)."""
    sources: list[str] = []
    for rel in rel_paths:
        if "/" in rel:
            continue
        if rel.startswith("__editable___") and rel.endswith("_finder.py"):
            m = _FINDER_MAPPING.search(_read_text(os.path.join(root, rel)))
            if m:
                try:
                    import ast  # lazy: only package metadata needs it

                    mapping = ast.literal_eval(m.group(1))
                except (ValueError, SyntaxError):
                    continue
                if isinstance(mapping, dict):
                    sources.extend(str(v) for v in mapping.values())
        elif rel.endswith(".pth"):
            for line in _read_text(os.path.join(root, rel)).splitlines():
                line = line.strip()
                # site(7): lines starting with "import" are executed, "#" are comments.
                if line and not line.startswith(("import ", "import\t", "#")):
                    sources.append(line if os.path.isabs(line) else os.path.join(root, line))
    return [os.path.normpath(s) for s in sources if os.path.isdir(s)]


def _is_editable(direct_url_json: str) -> bool:
    # PEP 610: pip writes direct_url.json for any install from a URL or a local path; only
    # `dir_info.editable` says the code stays in the source tree.
    text = _read_text(direct_url_json)
    if not text:
        return False
    try:
        import json  # lazy: only package metadata needs it

        info = json.loads(text)
    except ValueError:
        return False
    dir_info = info.get("dir_info") if isinstance(info, dict) else None
    return isinstance(dir_info, dict) and dir_info.get("editable") is True


def _build_index(root: str) -> _RootIndex:
    index = _RootIndex()
    owned: list[tuple[tuple[str, str], list[str]]] = []
    try:
        entries = [e.name for e in os.scandir(root)]
    except OSError:
        return index
    for entry in entries:
        meta_dir = os.path.join(root, entry)
        if entry.endswith(".dist-info"):
            dist = _metadata_fields(os.path.join(meta_dir, "METADATA"))
            if not dist[0]:  # METADATA unreadable: the dir name is `name-version.dist-info`
                name, _, version = entry[: -len(".dist-info")].partition("-")
                dist = (name, version)
            rels = _record_paths(os.path.join(meta_dir, "RECORD"))
            rels.extend(_read_text(os.path.join(meta_dir, "top_level.txt")).split())
            if _is_editable(os.path.join(meta_dir, "direct_url.json")):
                for src in _editable_sources(root, rels):
                    index.editable[src] = dist
        elif entry.endswith(".egg-info"):
            pkg_info = os.path.join(meta_dir, "PKG-INFO") if os.path.isdir(meta_dir) else meta_dir
            dist = _metadata_fields(pkg_info)
            if not dist[0]:
                name, _, version = entry[: -len(".egg-info")].partition("-")
                dist = (name, version.split("-")[0])
            # installed-files.txt lists paths relative to the .egg-info dir itself.
            rels = [
                os.path.normpath(os.path.join(entry, p))
                for p in _read_text(os.path.join(meta_dir, "installed-files.txt")).split("\n")
                if p
            ]
            for top in _read_text(os.path.join(meta_dir, "top_level.txt")).split():
                rels.extend((top, f"{top}.py"))
        elif entry.endswith(".egg-link"):
            # `setup.py develop`: the first line is the project's source dir.
            lines = _read_text(meta_dir).splitlines()
            src = os.path.normpath(os.path.join(root, lines[0].strip())) if lines else ""
            if src and os.path.isdir(src):
                egg_infos = [e for e in os.listdir(src) if e.endswith(".egg-info")]
                dist = _metadata_fields(os.path.join(src, *egg_infos[:1], "PKG-INFO"))
                if not dist[0]:
                    dist = (entry[: -len(".egg-link")], "")
                index.editable[src] = dist
                index.tops[entry] = dist
            continue
        else:
            m = _EGG_DIR.match(entry)
            if m:
                index.tops[entry] = (m.group("name"), m.group("version"))
            continue
        rels.append(entry)
        owned.append((dist, rels))

    owners: dict[str, set[tuple[str, str]]] = {}
    for dist, rels in owned:
        for rel in rels:
            if rel.startswith("../"):
                index.outside[os.path.normpath(os.path.join(root, rel))] = dist
                continue
            owners.setdefault(rel.split("/", 1)[0], set()).add(dist)
    # A top-level __pycache__ holds the bytecode of every top-level module of every
    # distribution: shared even when only one distribution's RECORD happens to list it.
    shared = {top for top, dists in owners.items() if len(dists) > 1 or top == "__pycache__"}
    for top, dists in owners.items():
        if top not in shared:
            index.tops[top] = next(iter(dists))
    for dist, rels in owned:
        for rel in rels:
            top, sep, _ = rel.partition("/")
            if not sep or top not in shared:
                continue
            index.shared_files[rel] = dist
            parent = os.path.dirname(rel)
            while parent != top:
                index.shared_dirs.setdefault(parent, set()).add(dist)
                parent = os.path.dirname(parent)
    return index


_INDEXES: dict[str, tuple[int, _RootIndex]] = {}


def _root_index(root: str) -> _RootIndex:
    # Keyed by the dir's mtime too: installing or upgrading anything adds or replaces a
    # *.dist-info entry in it, so a changed root is re-read and an unchanged one never is.
    try:
        mtime = os.stat(root).st_mtime_ns
    except OSError:
        return _RootIndex()
    cached = _INDEXES.get(root)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    index = _build_index(root)
    _INDEXES[root] = (mtime, index)
    return index


def _owner(index: _RootIndex, rel: str) -> tuple[str, str] | None:
    top, _, rest = rel.partition("/")
    if top == "__pycache__" and rest:
        # `__pycache__/six.cpython-311.pyc` is compiled from the top-level module `six.py`,
        # and is often written after install, so RECORD may not list it.
        found = index.shared_files.get(rel) or index.tops.get(rest.split(".", 1)[0] + ".py")
        if found:
            return found
    dist = index.tops.get(top)
    if dist is not None:
        return dist
    dist = index.shared_files.get(rel)
    if dist is not None:
        return dist
    parent = os.path.dirname(rel)
    while parent and parent != top:
        dists = index.shared_dirs.get(parent)
        if dists is not None:
            return next(iter(dists)) if len(dists) == 1 else None
        parent = os.path.dirname(parent)
    return None


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def packages_for_paths(
    paths: Iterable[str],
    site_dirs: Iterable[str] = (),
    code_roots: Iterable[str] = (),
) -> tuple[dict[str, str], set[str]]:
    """The installed distributions a run used, from the absolute paths it read.

    Returns ({distribution name: version}, the paths that are package files). A path is a
    package file when it lies in a site-packages / dist-packages dir (any interpreter's, this
    one's or not; owned by a distribution or not: a `.pth`, a stray `__pycache__`), is a
    console script a distribution installed, or lies in the source dir of an editable install.

    Each site-packages dir seen among `paths` is indexed once per process (its RECORDs and
    top_level.txt files), as are `site_dirs`, which name more of them to look for editable
    installs in. Paths under `code_roots` (pass the repository root) are never taken as
    editable package files: the project's own sources are code inputs even when it is
    installed with `pip install -e .`.
    """
    found: dict[str, str] = {}
    classified: set[str] = set()
    by_root: dict[str, list[str]] = {}
    others: list[str] = []
    for path in paths:
        m = _SITE_ROOT.match(path) if "-packages" in path else None  # the test is 10x cheaper
        if m:
            by_root.setdefault(m.group(1), []).append(path)
        else:
            others.append(path)

    indexes: list[_RootIndex] = []
    for root, members in by_root.items():
        index = _root_index(root)
        indexes.append(index)
        start = len(root) + 1
        for path in members:
            classified.add(path)
            dist = _owner(index, path[start:]) if len(path) > len(root) else None
            if dist is not None:
                found[dist[0]] = dist[1]
    indexes.extend(_root_index(d.rstrip("/")) for d in site_dirs if d.rstrip("/") not in by_root)

    if others:
        outside: dict[str, tuple[str, str]] = {}
        editable: list[tuple[str, tuple[str, str]]] = []
        for index in indexes:
            outside.update(index.outside)
            editable.extend(index.editable.items())
        editable.sort(key=lambda item: len(item[0]), reverse=True)  # innermost source first
        editable_set = {src for src, _ in editable}
        skip = tuple(os.path.normpath(r) for r in code_roots)
        # str.startswith on a tuple first: most of `others` are data under the repo.
        skip_under = tuple(r.rstrip("/") + "/" for r in skip)
        sources = tuple(src.rstrip("/") + "/" for src, _ in editable)
        for path in others:
            dist = outside.get(path)
            if (
                dist is None
                and (path in editable_set or path.startswith(sources))
                and not (path in skip or path.startswith(skip_under))
            ):
                dist = next((d for src, d in editable if _under(path, src)), None)
            if dist is not None:
                classified.add(path)
                found[dist[0]] = dist[1]
    return found, classified


# --- noise -----------------------------------------------------------------------------------

# Regexes, anchored at the start of the path; `lib` may be lib32, lib64, libx32 (multilib).
_SYSTEM_PREFIXES = (
    r"/usr/lib(?:32|64|x32|exec)?/", r"/usr/(?:share|include|bin|sbin)/",
    r"/usr/local/lib(?:32|64)?/", r"/usr/local/(?:share|include|bin|sbin)/",
    r"/lib(?:32|64|x32)?/", r"/s?bin/", r"/etc/", r"/proc/", r"/sys/", r"/dev/", r"/run/",
    r"/var/run/", r"/var/cache/", r"/var/lib/(?:dpkg|apt)/", r"/nix/store/", r"/snap/",
)  # fmt: skip
# Trees under $HOME that are tool state, not data.
_HOME_NOISE = (".cache/", ".pyenv/", ".nv/", ".triton/", ".terminfo/", ".python_history")
# …except the model and dataset caches a run genuinely consumes, and the clones roar keeps
# for registered lineage (a reproduction runs in their work trees).
_HOME_KEEP = (".cache/huggingface/", ".cache/torch/hub/", ".cache/roargit/")

_ALWAYS_NOISE = re.compile(
    r"""
      /__pycache__(?:/|$) | \.pyc$
    | /\.git(?:/(?!roar/worktrees/)|$)          # but roar reproduce's worktrees are work trees
    | /lib(?:64)?/(?:python\d(?:\.\d+)?t?/|python\d+\.zip$)   # an interpreter's stdlib
    | /pyvenv\.cfg$
    | /bin/(?:python|pypy)[\d.]*(?:-config)?$                 # an interpreter itself
    """,
    re.VERBOSE,
)


@functools.lru_cache(maxsize=16)
def _noise_matcher(home: str, extra: tuple[str, ...]) -> re.Pattern[str]:
    home = home.rstrip("/")
    parts = list(_SYSTEM_PREFIXES)
    if home:
        keep = "|".join(re.escape(k) for k in _HOME_KEEP)
        noise = "|".join(re.escape(n) for n in _HOME_NOISE)
        parts.append(rf"{re.escape(home)}/(?!{keep})(?:{noise})")
    prefix = "|".join(parts)
    globs = "|".join(fnmatch.translate(g) for g in extra)
    return re.compile(rf"(?:{prefix})" + (f"|(?:{globs})" if globs else ""))


# A cheap first test, since most paths a run reads are data and the regexes cost ~2 µs a path:
# every path the rules above can call noise starts with one of these prefixes, or contains one
# of the hints (each _ALWAYS_NOISE branch contains one). Keep them in step with the rules.
_SYSTEM_STARTS = (
    "/usr/", "/lib", "/bin/", "/sbin/", "/etc/", "/proc/", "/sys/", "/dev/", "/run/", "/var/",
    "/nix/store/", "/snap/",
)  # fmt: skip


@functools.lru_cache(maxsize=16)
def _noise_starts(home: str) -> tuple[str, ...]:
    home = home.rstrip("/")
    return _SYSTEM_STARTS + tuple(f"{home}/{n}" for n in _HOME_NOISE if home)


@functools.lru_cache(maxsize=16)
def _glob_matcher(extra: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(fnmatch.translate(g) for g in extra)) if extra else None


def _maybe_noise(path: str, starts: tuple[str, ...]) -> bool:
    return (
        path.startswith(starts)
        or "/lib" in path
        or "/bin/" in path
        or "/.git" in path
        or "/__pycache__" in path
        or path.endswith((".pyc", "/pyvenv.cfg"))
    )


def system_paths(
    paths: Iterable[str], home: str = "", extra_ignore: Iterable[str] = ()
) -> set[str]:
    """Those of `paths` that `is_system_path` calls noise. For the many paths of a big run:
    the cheap first test (`_maybe_noise`'s, kept in step with it) runs inline, not as a call a
    path, and only the few paths it lets through pay for the rules."""
    extra = tuple(extra_ignore)
    if _glob_matcher(extra) is not None:
        return {p for p in paths if is_system_path(p, home, extra)}  # globs may match any path
    starts = _noise_starts(home)
    return {
        p
        for p in paths
        if (
            p.startswith(starts)
            or "/lib" in p
            or "/bin/" in p
            or "/.git" in p
            or "/__pycache__" in p
            or p.endswith((".pyc", "/pyvenv.cfg"))
        )
        and is_system_path(p, home, extra)
    }


def is_system_path(path: str, home: str = "", extra_ignore: Iterable[str] = ()) -> bool:
    """True when the tracer's `path` is noise, not an artifact: see the module docstring for
    the rules. `home` is the user's home dir ("" to skip those rules); `extra_ignore` are
    fnmatch globs matched against the whole path (config `roar.ignore`, say)."""
    extra = tuple(extra_ignore)
    if _maybe_noise(path, _noise_starts(home)):
        if _SITE_ROOT.match(path):
            return False  # a package file: the package list's business, see packages_for_paths
        if _ALWAYS_NOISE.search(path):
            return True
        return _noise_matcher(home, extra).match(path) is not None
    globs = _glob_matcher(extra)
    if globs is None or ("-packages" in path and _SITE_ROOT.match(path)):
        return False
    return globs.match(path) is not None
