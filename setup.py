"""Builds the C tracer as part of the ordinary install (`pip install .` or `-e .`).

The tracer is a standalone executable, not a Python extension, so it is compiled by a
`build_py` step: into the build tree for a regular install, and next to the sources for an
editable one (setuptools sets `editable_mode` there).
"""

import os
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SOURCE = Path("roargit") / "tracer" / "roar-trace.c"
SHIM = Path("roargit") / "tracer" / "roar-shim.c"


def compile_tracer(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    flags = ["-O2", "-Wall", "-Wextra", "-std=gnu11"]
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


setup(cmdclass={"build_py": BuildWithTracer})
