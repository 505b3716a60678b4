"""Builds the C programs as part of the ordinary install (`pip install .` or `-e .`).

The tracer is a standalone executable, not a Python extension, so it is compiled by a
`build_py` step: into the build tree for a regular install, and next to the sources for an
editable one (setuptools sets `editable_mode` there). The `roar` command itself is the C
front end (roargit/launcher/roar.c): a script, compiled by the `build_scripts` step into the
folder pip installs scripts from (it copies text scripts only, so that step is replaced).
`git-roar` is the Python program the front end hands everything else to (pyproject.toml).
"""

import os
import subprocess
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

# The class setuptools itself runs (from its own copy of distutils: Python 3.12 has none).
build_scripts = Distribution().get_command_class("build_scripts")

HERE = Path(__file__).resolve().parent
SOURCE = Path("roargit") / "tracer" / "roar-trace.c"
SHIM = Path("roargit") / "tracer" / "roar-shim.c"
LAUNCHER = Path("roargit") / "launcher" / "roar.c"
FLAGS = ["-O2", "-Wall", "-Wextra", "-std=gnu11"]


def compile_tracer(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    flags = FLAGS
    subprocess.run([cc, *flags, "-o", str(out_dir / "roar-trace"), str(HERE / SOURCE)], check=True)
    if (HERE / SHIM).exists():
        subprocess.run(
            [
                cc,
                *flags,
                "-shared",
                "-fPIC",
                "-o",
                str(out_dir / "roar-shim.so"),
                str(HERE / SHIM),
                "-ldl",
            ],
            check=True,
        )


class BuildWithTracer(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            compile_tracer(HERE / "roargit" / "_bin")
        else:
            compile_tracer(Path(self.build_lib) / "roargit" / "_bin")


class BuildLauncher(build_scripts):
    def run(self) -> None:
        out = Path(self.build_dir)
        out.mkdir(parents=True, exist_ok=True)
        cc = os.environ.get("CC", "cc")
        subprocess.run([cc, *FLAGS, "-o", str(out / "roar"), str(HERE / LAUNCHER)], check=True)


setup(
    scripts=[str(LAUNCHER)],
    cmdclass={"build_py": BuildWithTracer, "build_scripts": BuildLauncher},
)
