"""This machine, as a run's environment: interpreter, OS, CPU, GPUs, selected environment
variables (redacted), and who records.

Reading the machine is this module's job, so `capture_environment` reads a few files
(/etc/os-release, /proc/cpuinfo) and may run `nvidia-smi`; the static parts are cached for the
life of the process because `roar run` must stay cheap. Everything that interprets text is a
pure parser (`parse_os_release`, `parse_cpuinfo`, `parse_nvidia_smi`).
"""

from __future__ import annotations

import fnmatch
import functools
import os
import pwd
import re
import sys
from collections.abc import Callable, Iterable, Mapping

from roargit.environment import CpuInfo, Environment, GpuInfo, OsInfo, PythonInfo
from roargit.packages import installed_version, read_text, same_file
from roargit.records import Identity
from roargit.redact import redact_env


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


# Patterns that only some machines or interpreters need are compiled on first use (re's
# cache), not by every `roar run` that loads this module.
_MIB = r"^\s*(\d+)\s*MiB\s*$"


def parse_nvidia_smi(text: str) -> tuple[GpuInfo, ...]:
    """GPUs from `nvidia-smi --query-gpu=name,driver_version,memory.total
    --format=csv,noheader` output ("NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB")."""
    import csv  # lazy: only a machine with nvidia-smi needs it

    gpus: list[GpuInfo] = []
    for row in csv.reader(line for line in text.splitlines() if line.strip()):
        if len(row) < 3:
            continue
        name, driver, memory = (c.strip() for c in row[:3])
        m = re.match(_MIB, memory, re.IGNORECASE)
        gpus.append(GpuInfo(name=name, driver=driver, memory_mib=int(m.group(1)) if m else 0))
    return tuple(gpus)


# --- reading the machine (cached: none of it changes while a process lives) ------------------


@functools.cache
def os_info() -> OsInfo:
    u = os.uname()
    text = read_text("/etc/os-release") or read_text("/usr/lib/os-release")
    return OsInfo(system=u.sysname, release=u.release, distro=parse_os_release(text))


@functools.cache
def cpu_info() -> CpuInfo:
    # /proc/cpuinfo is generated on read and runs to hundreds of KiB on big machines; the first
    # processor's block is all parse_cpuinfo needs.
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            head = f.read(8192)
    except OSError:
        head = ""
    return CpuInfo(model=parse_cpuinfo(head), cores=os.cpu_count() or 0)


@functools.cache
def hostname() -> str:
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
        hostname() if share_host else "",
    )


_NVIDIA_SMI_TIMEOUT_S = 5.0  # a healthy driver answers in well under a second


@functools.cache
def _query_gpus(nvidia_smi: str) -> tuple[GpuInfo, ...]:
    import subprocess  # lazy: only a machine with nvidia-smi gets here

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
    found = _which("nvidia-smi", path_var) if path_var else None
    return _query_gpus(found) if found else ()


def _which(name: str, path_var: str) -> str | None:
    """shutil.which on POSIX, without the import: shutil brings bz2 and lzma, 1.9 ms of every
    `roar run`'s fixed cost for this one lookup."""
    for folder in path_var.split(os.pathsep):
        candidate = os.path.join(folder or os.curdir, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _user(env: Mapping[str, str]) -> str:
    for name in ("USER", "LOGNAME"):
        if env.get(name):
            return env[name]
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid with no passwd entry, as in some containers
        return str(os.getuid())


_PY_NAME = r"^(python|pypy)(\d+(?:\.\d+)?)?"


@functools.cache
def python_info(executable: str | None = None) -> PythonInfo:
    """The interpreter at `executable` (None: this one) without running it, which would cost
    more than the whole capture: the same binary as ours → our `sys`; else a venv's pyvenv.cfg
    (`version`, or virtualenv's `version_info` and `implementation`); else its file name."""
    if executable is None or same_file(executable, sys.executable):
        v = sys.version_info
        return PythonInfo(
            implementation=sys.implementation.name.replace("cpython", "CPython").replace(
                "pypy", "PyPy"
            ),
            version=f"{v.major}.{v.minor}.{v.micro}",
            executable=executable or sys.executable,
        )
    cfg: dict[str, str] = {}
    text = read_text(os.path.join(os.path.dirname(os.path.dirname(executable)), "pyvenv.cfg"))
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            cfg[key.strip().lower()] = value.strip()
    names = (os.path.basename(executable), os.path.basename(os.path.realpath(executable)))
    matches = [m for m in (re.match(_PY_NAME, n, re.IGNORECASE) for n in names) if m]
    implementation = cfg.get("implementation", "")
    if not implementation and matches:
        implementation = "PyPy" if matches[0].group(1).lower() == "pypy" else "CPython"
    version = cfg.get("version") or ".".join(cfg.get("version_info", "").split(".")[:3])
    if not version:
        # The most specific of the two names: python3 → python3.11 through the symlink.
        version = max((m.group(2) or "" for m in matches), key=len, default="")
    return PythonInfo(implementation=implementation, version=version, executable=executable)


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
        if not _has_glob(g):
            names.add(g)
        elif g.endswith("*") and not _has_glob(g[:-1]):
            prefixes.append(g[:-1])
        elif g.startswith("*") and not _has_glob(g[1:]):
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


def _has_glob(text: str) -> bool:
    return "*" in text or "?" in text or "[" in text


def select_env(env: Mapping[str, str], include: Iterable[str] = ()) -> dict[str, str]:
    """The variables of `env` worth recording (the defaults plus `include` globs), redacted:
    secret-named ones get the marker, the rest lose secret-looking parts of their values."""
    wanted = _env_selector(tuple(include))
    return redact_env({name: value for name, value in sorted(env.items()) if wanted(name)})


def capture_environment(
    env: Mapping[str, str],
    packages: Mapping[str, str],
    python: str | None = None,
    include: Iterable[str] = (),
) -> Environment:
    """The environment of a run started with `env`, which used `packages` (from
    `packages.packages_for_paths`) and, if it was a Python program, the interpreter at `python`.
    `include` adds glob patterns of variable names to record (config `roar.env.include`)."""
    return Environment(
        python=python_info(python),
        os=os_info(),
        arch=os.uname().machine,
        cpu=cpu_info(),
        gpus=detect_gpus(env.get("PATH")),
        hostname=hostname(),
        user=_user(env),
        env_vars=select_env(env, include),
        packages=dict(sorted(packages.items())),
    )


def this_machine(
    python: str | None, packages: Iterable[str], env: Mapping[str, str]
) -> Environment:
    """This machine as the environment a recorded run would meet here: the interpreter at
    `python` (empty when None: nothing says which one the command would start), the installed
    versions of the distributions named in `packages` for that interpreter ("" when not
    installed), OS, arch, CPU and GPUs; no variables, host or user."""
    return Environment(
        python=python_info(python) if python is not None else PythonInfo("", "", ""),
        os=os_info(),
        arch=os.uname().machine,
        cpu=cpu_info(),
        gpus=detect_gpus(env.get("PATH")),
        hostname="",
        user="",
        env_vars={},
        packages={name: installed_version(python, name) or "" for name in packages},
    )
