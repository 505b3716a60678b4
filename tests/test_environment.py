"""Environment capture on this machine, packages from a real venv, and the noise rules."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import os
import platform
import re
import socket
import stat
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import roargit.machine as machine
import roargit.rules as rules
from roargit.environment import CpuInfo, Environment, GpuInfo, OsInfo, PythonInfo
from roargit.errors import RecordCorrupt
from roargit.machine import (
    capture_environment,
    detect_gpus,
    parse_cpuinfo,
    parse_nvidia_smi,
    parse_os_release,
    python_info,
    select_env,
)
from roargit.packages import packages_for_paths
from roargit.redact import MARK
from roargit.rules import is_system_path

PYTAG = f"cpython-{sys.version_info.major}{sys.version_info.minor}"

# --- a real venv with real installs, built once for the module ------------------------------


def _wheel(
    out_dir: Path, name: str, version: str, files: dict[str, str], scripts: str = ""
) -> Path:
    """A minimal, valid pure-Python wheel (PEP 427), written by hand: no build backend needed."""
    safe = name.replace("-", "_")  # PEP 427 escapes '-' in the file and dir names
    dist_info = f"{safe}-{version}.dist-info"
    members = dict(files)
    members[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n"
    )
    members[f"{dist_info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: roargit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if scripts:
        members[f"{dist_info}/entry_points.txt"] = f"[console_scripts]\n{scripts}\n"
    members[f"{dist_info}/RECORD"] = "".join(f"{p},,\n" for p in [*members, f"{dist_info}/RECORD"])
    path = out_dir / f"{safe}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, text in members.items():
            zf.writestr(member, text)
    return path


def _metadata(name: str, version: str) -> str:
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    base = tmp_path_factory.mktemp("venv")
    root = base / "v"
    # --without-pip: ten times faster; this interpreter's pip installs into it with --python.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    wheels = base / "wheels"
    wheels.mkdir()
    built = [
        _wheel(
            wheels,
            "Tiny_Pkg",
            "0.3.1",
            {
                "tinypkg/__init__.py": "def main():\n    pass\n",
                "tinypkg/data/vocab.txt": "a\nb\n",
                "tinymod.py": "X = 1\n",
            },
            scripts="tinycli = tinypkg:main",
        ),
        # Two distributions sharing the namespace package `nsx` (PEP 420).
        _wheel(wheels, "nsx-one", "1.0", {"nsx/one/__init__.py": ""}),
        _wheel(wheels, "nsx-two", "2.0", {"nsx/two/__init__.py": "", "nsx/two/core.py": ""}),
    ]
    home = base / "home"  # pip must not touch the real $HOME (cache, config)
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PIP_NO_CACHE_DIR": "1", "PIP_CONFIG_FILE": os.devnull}
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install",
         "-q", "--no-deps", "--no-index", "--disable-pip-version-check", *map(str, built)],
        check=True, env=env,
    )  # fmt: skip
    site = Path(sysconfig.get_path("purelib", vars={"base": str(root), "platbase": str(root)}))
    assert (site / "tinypkg" / "__init__.py").is_file()

    # Editable installs, laid out the way the installers leave them (building them for real
    # needs a build backend with network access).
    src = base / "src"
    (src / "editme").mkdir(parents=True)
    (src / "editme" / "core.py").write_text("")
    _place_dist(site, "Edit_Me", "0.9", {"__editable__.edit_me-0.9.pth": f"{src}\n"})
    finder_src = base / "finder_src" / "finderpkg"
    finder_src.mkdir(parents=True)
    finder = (
        "from __future__ import annotations\nimport sys\n\n"
        f"MAPPING: dict[str, str] = {{'finderpkg': {str(finder_src)!r}}}\n"
        "NAMESPACES: dict[str, list[str]] = {}\n"
    )
    _place_dist(site, "finder-pkg", "0.1", {"__editable___finder_pkg_0_1_finder.py": finder})
    # A legacy egg-info install (setup.py install, distro packages).
    egg = site / "legacy_pkg-1.2-py3.11.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: legacy-pkg\nVersion: 1.2\n\n")
    (egg / "top_level.txt").write_text("legacy\n")
    (site / "legacy").mkdir()
    (site / "legacy" / "__init__.py").write_text("")
    yield {"root": root, "site": site, "src": src, "finder_src": finder_src}


def _place_dist(site: Path, name: str, version: str, files: dict[str, str]) -> None:
    dist_info = site / f"{name}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    )
    (dist_info / "direct_url.json").write_text(
        '{"dir_info": {"editable": true}, "url": "file:///somewhere"}'
    )
    for rel, text in files.items():
        (site / rel).write_text(text)
    (dist_info / "RECORD").write_text(
        "".join(f"{p},,\n" for p in files) + f"{dist_info.name}/METADATA,,\n"
    )


# --- packages_for_paths ---------------------------------------------------------------------


def test_wheel_files_map_to_their_distribution(venv: dict[str, Path]) -> None:
    site = venv["site"]
    paths = [
        f"{site}/tinypkg/__init__.py",
        f"{site}/tinypkg/data/vocab.txt",
        f"{site}/tinypkg/__pycache__/__init__.{PYTAG}.pyc",
        f"{site}/tinymod.py",
        f"{site}/__pycache__/tinymod.{PYTAG}.pyc",  # compiled by pip, in RECORD
        f"{site}/__pycache__/tinymod.cpython-39.pyc",  # by another interpreter: not in RECORD
        f"{site}/Tiny_Pkg-0.3.1.dist-info/METADATA",  # importlib.metadata reads
    ]
    found, classified = packages_for_paths(paths)
    assert found == {"Tiny_Pkg": "0.3.1"}  # the published name, not the import name
    assert classified == set(paths)


def test_stray_bytecode_is_not_pinned_on_a_distribution(venv: dict[str, Path]) -> None:
    # Only Tiny_Pkg's RECORD lists a top-level __pycache__, yet other.py is not Tiny_Pkg's.
    stray = f"{venv['site']}/__pycache__/other.{PYTAG}.pyc"
    assert packages_for_paths([stray]) == ({}, {stray})


def test_console_script_maps_to_its_distribution(venv: dict[str, Path]) -> None:
    script = str(venv["root"] / "bin" / "tinycli")
    assert os.path.isfile(script)
    found, classified = packages_for_paths([script, f"{venv['site']}/tinypkg/__init__.py"])
    assert found == {"Tiny_Pkg": "0.3.1"}
    assert script in classified


def test_namespace_package_split_by_distribution(venv: dict[str, Path]) -> None:
    site = venv["site"]
    one, two = f"{site}/nsx/one/__init__.py", f"{site}/nsx/two/core.py"
    assert packages_for_paths([one])[0] == {"nsx-one": "1.0"}
    assert packages_for_paths([two])[0] == {"nsx-two": "2.0"}
    # A file of the shared namespace dir itself belongs to no single distribution, but it is
    # still a package file, not an artifact.
    shared = f"{site}/nsx/__pycache__/thing.{PYTAG}.pyc"
    found, classified = packages_for_paths([shared])
    assert found == {} and classified == {shared}


def test_unowned_site_packages_files_are_package_files(venv: dict[str, Path]) -> None:
    stray = f"{venv['site']}/stray_cache.bin"
    found, classified = packages_for_paths([stray, "/tmp/data.csv", "/mnt/ds/train.parquet"])
    assert found == {}
    assert classified == {stray}


def test_editable_pth_install(venv: dict[str, Path]) -> None:
    src_file = str(venv["src"] / "editme" / "core.py")
    pth = f"{venv['site']}/__editable__.edit_me-0.9.pth"  # read by site.py at startup
    found, classified = packages_for_paths([pth, src_file])
    assert found == {"Edit_Me": "0.9"}
    assert classified == {pth, src_file}
    # The project's own sources stay code inputs when the caller says where the repo is.
    found, classified = packages_for_paths([pth, src_file], code_roots=[str(venv["src"])])
    assert src_file not in classified


def test_editable_finder_install(venv: dict[str, Path]) -> None:
    src_file = str(venv["finder_src"] / "mod.py")
    # No site-packages path among them: the caller names the site dir to search.
    assert packages_for_paths([src_file]) == ({}, set())
    found, classified = packages_for_paths([src_file], site_dirs=[str(venv["site"])])
    assert found == {"finder-pkg": "0.1"}
    assert classified == {src_file}


def test_egg_info_install(venv: dict[str, Path]) -> None:
    path = f"{venv['site']}/legacy/__init__.py"
    assert packages_for_paths([path])[0] == {"legacy-pkg": "1.2"}


def test_new_install_seen_by_a_cached_index(venv: dict[str, Path], tmp_path: Path) -> None:
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    path = f"{site}/late/__init__.py"
    packages_for_paths([path])  # indexes the empty dir
    _place_dist(site, "late", "5.0", {"late.pth": ""})
    (site / "late").mkdir()
    rec = site / "late-5.0.dist-info" / "RECORD"
    rec.write_text(rec.read_text() + "late/__init__.py,,\n")
    os.utime(site, ns=(0, 0))  # a different mtime even on a coarse-grained filesystem
    assert packages_for_paths([path])[0] == {"late": "5.0"}


def test_this_venvs_real_packages() -> None:
    import _pytest
    import msgpack

    msgpack_dir = os.path.dirname(msgpack.__file__)
    paths = [
        msgpack.__file__,
        *(os.path.join(msgpack_dir, f) for f in os.listdir(msgpack_dir)),
        os.path.join(os.path.dirname(_pytest.__file__), "main.py"),  # import name ≠ dist name
    ]
    found, classified = packages_for_paths(paths)
    assert found == {
        "msgpack": importlib.metadata.version("msgpack"),
        "pytest": importlib.metadata.version("pytest"),
    }
    assert classified == set(paths)


def test_this_projects_editable_install() -> None:
    import roargit

    site = sysconfig.get_path("purelib")
    errors_py = os.path.join(os.path.dirname(roargit.__file__), "errors.py")
    if not errors_py.startswith(os.path.dirname(os.path.dirname(roargit.__file__))) or (
        "site-packages" in errors_py
    ):
        pytest.skip("roargit is not installed in editable mode here")
    found, _ = packages_for_paths([errors_py], site_dirs=[site])
    assert found == {"roargit": importlib.metadata.version("roargit")}
    repo = os.path.dirname(os.path.dirname(roargit.__file__))
    assert packages_for_paths([errors_py], site_dirs=[site], code_roots=[repo]) == ({}, set())


# --- capture_environment --------------------------------------------------------------------


def _plain(value: Any) -> bool:
    """str/int/list/dict only, all the way down: what the canonical codec takes."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (str, int)):
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def test_capture_on_this_machine(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "USER": "alice"}  # no nvidia-smi on this PATH
    e = capture_environment(env, {"msgpack": "1.0.0"})
    assert e.python == PythonInfo(
        implementation="CPython"
        if sys.implementation.name == "cpython"
        else e.python.implementation,
        version=platform.python_version(),
        executable=sys.executable,
    )
    assert e.os.system == platform.system()
    assert e.os.release == platform.release()
    if os.path.exists("/etc/os-release"):
        assert e.os.distro
    assert e.arch == platform.machine()
    assert e.cpu.cores == os.cpu_count()
    assert e.cpu.model  # every Linux /proc/cpuinfo names the CPU somehow
    assert e.gpus == ()
    assert e.hostname == socket.gethostname()
    assert e.user == "alice"
    assert e.packages == {"msgpack": "1.0.0"}
    d = e.to_dict()
    assert _plain(d)
    assert set(d) == {
        "python", "os", "arch", "cpu", "gpus", "hostname", "user", "env_vars", "packages",
    }  # fmt: skip
    assert Environment.from_dict(d) == e


def test_user_falls_back_to_the_passwd_entry() -> None:
    import pwd

    e = capture_environment({}, {})
    assert e.user == pwd.getpwuid(os.getuid()).pw_name


def test_env_vars_selected_and_redacted() -> None:
    env = {
        "CUDA_VISIBLE_DEVICES": "0,1",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "4",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_TOKEN": "looks-harmless",  # selected by HF_*, redacted by name
        "HF_ENDPOINT": "https://bob:hunter2@hub.internal",  # redacted by value
        "ROAR_SCOPE": "team/proj",
        "ROAR_API_KEY": "abc",
        "MYAPP_BATCH": "32",
        "MYAPP_TOKEN": "xyz",
        "EDITOR": "vim",
        "AWS_SECRET_ACCESS_KEY": "zzz",
        "PATH": "/nowhere",
    }
    plain = capture_environment(env, {}).env_vars
    assert plain == {
        "CUDA_VISIBLE_DEVICES": "0,1",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "4",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_TOKEN": MARK,
        "HF_ENDPOINT": f"https://bob:{MARK}@hub.internal",
        "ROAR_SCOPE": "team/proj",
        "ROAR_API_KEY": MARK,
    }
    included = capture_environment(env, {}, include=["MYAPP_*"]).env_vars
    assert included["MYAPP_BATCH"] == "32"
    assert included["MYAPP_TOKEN"] == MARK
    assert "EDITOR" not in included and "AWS_SECRET_ACCESS_KEY" not in included


def test_include_globs_of_every_shape_match_like_fnmatch() -> None:
    names = ["EDITOR", "EDIT", "XEDITOR", "RUN_ID", "MY_RUN_ID", "A1C", "ABC", "AC", "K[1]", "K1"]
    env = {n: "v" for n in names}
    globs = ["EDITOR", "*_ID", "A?C", "K[0-9]"]
    chosen = set(select_env(env, globs))
    assert chosen == {n for n in names if any(fnmatch.fnmatchcase(n, g) for g in globs)}
    assert chosen == {"EDITOR", "RUN_ID", "MY_RUN_ID", "A1C", "ABC", "K1"}


def test_python_info_for_a_venv_of_this_interpreter(venv: dict[str, Path]) -> None:
    exe = str(venv["root"] / "bin" / "python")
    info = python_info(exe)
    assert info.version == platform.python_version()
    assert info.executable == exe


def test_python_info_from_pyvenv_cfg_without_running_it(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    exe = tmp_path / "bin" / "python3"
    exe.write_text("#!/bin/false\n")
    (tmp_path / "pyvenv.cfg").write_text("home = /opt/py39/bin\nversion = 3.9.18\n")
    assert python_info(str(exe)) == PythonInfo("CPython", "3.9.18", str(exe))

    other = tmp_path / "pp"
    (other / "bin").mkdir(parents=True)
    (other / "bin" / "python").write_text("")
    (other / "pyvenv.cfg").write_text("implementation = PyPy\nversion_info = 3.10.14.final.0\n")
    assert python_info(str(other / "bin" / "python")) == PythonInfo(
        "PyPy", "3.10.14", str(other / "bin" / "python")
    )


def test_python_info_from_the_name_alone() -> None:
    assert python_info("/nonexistent/bin/pypy3.10") == PythonInfo(
        "PyPy", "3.10", "/nonexistent/bin/pypy3.10"
    )
    assert python_info("/nonexistent/bin/ruby") == PythonInfo("", "", "/nonexistent/bin/ruby")


# --- GPUs -----------------------------------------------------------------------------------


def _fake_nvidia_smi(bin_dir: Path, script: str) -> str:
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(bin_dir)


def test_no_gpus_without_nvidia_smi(tmp_path: Path) -> None:
    assert detect_gpus(str(tmp_path)) == ()
    assert detect_gpus(None) == ()


def test_gpus_from_a_fake_nvidia_smi(tmp_path: Path) -> None:
    path = _fake_nvidia_smi(
        tmp_path / "bin",
        'case "$*" in *--query-gpu=name,driver_version,memory.total*--format=csv,noheader*)\n'
        "  echo 'NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB'\n"
        "  echo 'NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB';;\n"
        "*) exit 2;;\nesac\n",
    )
    e = capture_environment({"PATH": f"/nonexistent:{path}"}, {})
    h100 = GpuInfo("NVIDIA H100 80GB HBM3", "550.54.15", 81559)
    assert e.gpus == (h100, h100)
    assert e.to_dict()["gpus"][0] == {
        "name": "NVIDIA H100 80GB HBM3",
        "driver": "550.54.15",
        "memory_mib": 81559,
    }


def test_failing_nvidia_smi_means_no_gpus(tmp_path: Path) -> None:
    path = _fake_nvidia_smi(tmp_path / "bin", "echo 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert detect_gpus(path) == ()


def test_hanging_nvidia_smi_is_cut_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "_NVIDIA_SMI_TIMEOUT_S", 0.2)
    path = _fake_nvidia_smi(tmp_path / "bin", "exec sleep 30\n")
    assert detect_gpus(path) == ()


def test_parse_nvidia_smi() -> None:
    text = "Tesla T4, 535.104.05, 15360 MiB\n\nA100-SXM4-40GB, 535.104.05, [N/A]\n"
    assert parse_nvidia_smi(text) == (
        GpuInfo("Tesla T4", "535.104.05", 15360),
        GpuInfo("A100-SXM4-40GB", "535.104.05", 0),
    )
    assert parse_nvidia_smi("garbage\n") == ()


# --- parsers ----------------------------------------------------------------------------------


def test_parse_os_release() -> None:
    text = '# comment\nNAME="Ubuntu"\nVERSION="22.04.4 LTS (Jammy Jellyfish)"\n'
    assert parse_os_release(text + 'PRETTY_NAME="Ubuntu 22.04.4 LTS"\n') == "Ubuntu 22.04.4 LTS"
    assert parse_os_release(text) == "Ubuntu 22.04.4 LTS (Jammy Jellyfish)"
    assert parse_os_release("PRETTY_NAME=Alpine\n") == "Alpine"
    assert parse_os_release("") == ""


def test_parse_cpuinfo_x86_and_arm64() -> None:
    x86 = (
        "processor\t: 0\nvendor_id\t: GenuineIntel\n"
        "model name\t: Intel(R) Xeon(R) Platinum 8480+\n\nprocessor\t: 1\n"
        "model name\t: something else\n"
    )
    assert parse_cpuinfo(x86) == "Intel(R) Xeon(R) Platinum 8480+"
    arm = "processor\t: 0\nBogoMIPS\t: 2000.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd4f\n"
    assert parse_cpuinfo(arm) == "CPU implementer 0x41 part 0xd4f"
    assert parse_cpuinfo("") == ""


# --- the record codec -----------------------------------------------------------------------


def _sample() -> Environment:
    return Environment(
        python=PythonInfo("CPython", "3.11.7", "/v/bin/python"),
        os=OsInfo("Linux", "6.8.0", "Debian GNU/Linux 12 (bookworm)"),
        arch="aarch64",
        cpu=CpuInfo("Neoverse-V2", 72),
        gpus=(GpuInfo("NVIDIA GH200 480GB", "550.90.07", 97871),),
        hostname="node1",
        user="alice",
        env_vars={"SEED": "1", "CUDA_VISIBLE_DEVICES": "0"},
        packages={"torch": "2.4.0", "numpy": "2.0.1"},
    )


def test_round_trip_and_canonical_order() -> None:
    e = _sample()
    d = e.to_dict()
    assert _plain(d)
    assert list(d["packages"]) == ["numpy", "torch"]  # sorted: same record, same bytes
    assert list(d["env_vars"]) == ["CUDA_VISIBLE_DEVICES", "SEED"]
    assert Environment.from_dict(d) == e


def test_through_the_record_codec() -> None:
    from roargit import codec

    e = _sample()
    data = codec.encode({"environment": e.to_dict()})
    assert data == codec.encode({"environment": Environment.from_dict(e.to_dict()).to_dict()})
    assert Environment.from_dict(codec.decode(data, "run")["environment"]) == e


def test_from_dict_tolerates_missing_fields() -> None:
    e = Environment.from_dict({"arch": "x86_64"})
    assert e.arch == "x86_64" and e.gpus == () and e.packages == {} and e.cpu.cores == 0


@pytest.mark.parametrize(
    "damage",
    [
        {"python": "3.11"},
        {"cpu": {"model": "x", "count": "8"}},
        {"cpu": {"model": "x", "count": True}},
        {"gpus": {"name": "x"}},
        {"gpus": ["x"]},
        {"packages": {"numpy": 2}},
        {"hostname": 7},
    ],
)
def test_from_dict_rejects_wrong_types(damage: dict[str, Any]) -> None:
    with pytest.raises(RecordCorrupt):
        Environment.from_dict({**_sample().to_dict(), **damage})


# --- noise ------------------------------------------------------------------------------------

HOME = "/home/alice"


@pytest.mark.parametrize(
    "path",
    [
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib64/libm.so",
        "/usr/libexec/git-core/git-remote-https",
        "/usr/share/locale/de/LC_MESSAGES/libc.mo",
        "/usr/share/terminfo/x/xterm",
        "/usr/include/stdio.h",
        "/usr/bin/env",
        "/bin/sh",
        "/usr/local/bin/python3.11",
        "/usr/local/lib/libfoo.so",
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/lib64/ld-linux-x86-64.so.2",
        "/etc/ld.so.cache",
        "/etc/localtime",
        "/proc/self/status",
        "/sys/devices/system/cpu/online",
        "/dev/null",
        "/dev/shm/torch_123",
        "/run/user/1000/bus",
        "/var/cache/fontconfig/x.cache-8",
        "/nix/store/abc-python3/lib/libpython3.so",
        "/usr/lib/python3.11/os.py",
        "/opt/conda/lib/python3.12/json/__init__.py",
        "/opt/conda/lib/python312.zip",
        "/root/.pyenv/versions/3.11.7/lib/python3.11/encodings/utf_8.py",
        "/work/proj/.venv/bin/python",
        "/work/proj/.venv/bin/python3.11",
        "/work/proj/.venv/pyvenv.cfg",
        "/work/proj/src/__pycache__/model.cpython-311.pyc",
        "/work/proj/src/old.pyc",
        "/work/proj/.git/HEAD",
        "/work/proj/.git/objects/ab/cdef",
        f"{HOME}/.cache/pip/http/x",
        f"{HOME}/.cache/matplotlib/fontlist.json",
        f"{HOME}/.pyenv/shims/python",
        f"{HOME}/.nv/ComputeCache/index",
        f"{HOME}/.triton/cache/abc/kernel.so",
        f"{HOME}/.python_history",
    ],
)
def test_system_paths(path: str) -> None:
    assert is_system_path(path, home=HOME)


@pytest.mark.parametrize(
    "path",
    [
        "/tmp/data.csv",  # /tmp can hold real data
        "/var/tmp/big.bin",
        "/mnt/datasets/imagenet/train/0001.jpg",
        "/data/x.parquet",
        "/opt/models/bert/config.json",
        "/library/shelf.txt",  # starts with /lib, is not /lib
        "/binary/blob",
        "/work/proj/train.py",
        "/work/proj/lib/helpers.py",
        "/work/proj/.gitignore",  # a file that starts with .git, not the .git dir
        "/work/proj/bin/run.sh",
        "/work/proj/bin/pythonic_tool.py",
        f"{HOME}/datasets/mnist.npz",
        f"{HOME}/.cache/huggingface/hub/models--gpt2/blobs/abc",  # a model the run consumed
        f"{HOME}/.cache/torch/hub/checkpoints/resnet50.pth",
        "/work/proj/.venv/lib/python3.11/site-packages/numpy/__init__.py",  # packages' business
        "/usr/lib/python3/dist-packages/yaml/__init__.py",
    ],
)
def test_not_system_paths(path: str) -> None:
    assert not is_system_path(path, home=HOME)


def test_home_rules_need_a_home_and_extra_globs_apply() -> None:
    assert not is_system_path(f"{HOME}/.cache/pip/x", home="")
    assert is_system_path("/data/run/tmp/scratch.bin", home=HOME, extra_ignore=["*/scratch.*"])
    assert not is_system_path("/data/run/tmp/keep.bin", home=HOME, extra_ignore=["*/scratch.*"])


# The rules of roargit/rules.py's docstring as one regex, written here independently of the
# prefix tables rules.py tests with: the oracle the cheap tests are held to.
_SYSTEM_TREES = (
    r"/usr/lib(?:32|64|x32|exec)?/", r"/usr/(?:share|include|bin|sbin)/",
    r"/usr/local/lib(?:32|64)?/", r"/usr/local/(?:share|include|bin|sbin)/",
    r"/lib(?:32|64|x32)?/", r"/s?bin/", r"/etc/", r"/proc/", r"/sys/", r"/dev/", r"/run/",
    r"/var/run/", r"/var/cache/", r"/var/lib/(?:dpkg|apt)/", r"/nix/store/", r"/snap/",
)  # fmt: skip
_HOME_TREES = (
    r"\.cache/",
    r"\.pyenv/",
    r"\.nv/",
    r"\.triton/",
    r"\.terminfo/",
    r"\.python_history",
)
_HOME_KEPT = (r"\.cache/huggingface/", r"\.cache/torch/hub/", r"\.cache/roargit/")


def _noise_by_regexes(path: str, home: str, extra: tuple[str, ...]) -> bool:
    """is_system_path as the rules' regexes alone say it, without the cheap first test."""
    if rules.SITE_ROOT.match(path):
        return False
    if rules._ALWAYS_NOISE.search(path):
        return True
    parts = list(_SYSTEM_TREES)
    if home.rstrip("/"):
        kept, trees = "|".join(_HOME_KEPT), "|".join(_HOME_TREES)
        parts.append(rf"{re.escape(home.rstrip('/'))}/(?!{kept})(?:{trees})")
    globs = "|".join(fnmatch.translate(g) for g in extra)
    rule = re.compile(f"(?:{'|'.join(parts)})" + (f"|(?:{globs})" if globs else ""))
    return rule.match(path) is not None


_SEGMENTS = [
    "usr", "local", "lib", "lib64", "libx32", "libexec", "share", "bin", "sbin", "etc", "var",
    "run", "cache", "dpkg", "nix", "store", "snap", "proc", "dev", "home", "u", ".cache",
    "huggingface", "torch", "hub", "pip", ".pyenv", ".python_history", "python3.11",
    "python311.zip", "python", "pypy3", "python3-config", "site-packages", "dist-packages",
    "__pycache__", "x.pyc", ".git", ".gitignore", "roar", "worktrees", "pyvenv.cfg", "data",
    "scratch.bin", "library", "binary", "",
]  # fmt: skip


@given(
    st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=7),
    st.sampled_from(["", "/home/u", "/home/u/"]),
    st.sampled_from([(), ("*/scratch.*",), ("/data/*", "*.bin")]),
)
def test_cheap_first_test_agrees_with_the_rules(
    segments: list[str], home: str, extra: tuple[str, ...]
) -> None:
    path = "/" + "/".join(segments)
    assert is_system_path(path, home, extra) == _noise_by_regexes(path, home, extra)
