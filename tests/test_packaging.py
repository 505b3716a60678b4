"""What the package declares is what it uses: every dependency is imported by roargit, and
`roar --help` loads none of the heavy ones."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "roargit"

# Distribution name → the module roargit imports it as, where the two differ.
IMPORT_NAME: dict[str, str] = {}
# Dependencies reached through fsspec's protocol registry rather than an import statement:
# distribution → the URL protocol fsspec loads it for.
FSSPEC_PLUGIN = {"s3fs": "s3"}


def dependencies() -> list[str]:
    """[project] dependencies of pyproject.toml, as the installed package's metadata has them
    (extras excluded)."""
    specs = [s for s in requires("roargit") or [] if "extra ==" not in s]
    return [re.split(r"[<>=!~;\[ (]", spec, maxsplit=1)[0] for spec in specs]


def imported_modules() -> set[str]:
    """The top-level name of every module imported anywhere in the package, at any depth."""
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_every_dependency_is_imported_by_the_package() -> None:
    imported = imported_modules()
    unused = [
        dist
        for dist in dependencies()
        if dist not in FSSPEC_PLUGIN
        and IMPORT_NAME.get(dist, dist.replace("-", "_").lower()) not in imported
    ]
    assert unused == [], f"declared in pyproject.toml, never imported by roargit: {unused}"


def test_fsspec_plugins_are_the_ones_fsspec_loads_for_their_protocol() -> None:
    from fsspec.registry import known_implementations

    for dist, protocol in FSSPEC_PLUGIN.items():
        assert dist in dependencies()
        assert known_implementations[protocol]["class"].split(".")[0] == dist


HEAVY = ("pygit2", "dulwich", "fsspec", "s3fs", "msgpack", "waitress", "boto", "tqdm")


def test_building_the_parser_loads_no_heavy_module() -> None:
    """Start-up time: `roar --help` builds every command's parser and nothing else."""
    script = (
        "import contextlib, io, sys\n"
        "import roargit.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    roargit.cli.build_parser().format_help()\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    loaded = sorted(m for m in out if m.split(".")[0].startswith(HEAVY))
    assert loaded == [], f"`roar --help` imports {loaded}"


def test_help_as_a_process_loads_no_heavy_module() -> None:
    """The same through `main`, as the installed `roar --help` runs it."""
    script = (
        "import sys\n"
        "import roargit.cli\n"
        "try:\n"
        "    roargit.cli.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stderr.write('\\n'.join(sorted(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert "usage: roar" in proc.stdout
    loaded = sorted(m for m in proc.stderr.split() if m.split(".")[0].startswith(HEAVY))
    assert loaded == [], f"`roar --help` imports {loaded}"


def test_the_readme_layout_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "_bin" in path.parts or "tracer" in path.parts:
            continue
        name = path.stem if path.parent == PACKAGE else f"{path.parent.name}/"
        if path.parent != PACKAGE:
            # A subpackage's row names its folder and, in words, its modules.
            if name not in layout or (path.stem != "__init__" and path.stem not in layout):
                missing.append(str(path.relative_to(ROOT)))
        elif f"{name}.py" not in layout:
            missing.append(str(path.relative_to(ROOT)))
    assert missing == [], f"README's layout table does not name {missing}"
