"""The wheel carries every public module, and they import from it in a fresh environment; the
editable install of the README serves a user's program to Python and to type checkers alike."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parent.parent

EXPECTED = {
    "sansflow/__init__.py",
    "sansflow/py.typed",
    "sansflow/testing/__init__.py",
    "sansflow/adapters/__init__.py",
    "sansflow/adapters/asyncio.py",
    "sansflow/adapters/trio.py",
    "sansflow/adapters/socket.py",
}

# Walks the installed package and imports every module (a __main__ would run a program).
IMPORT_ALL = """
import importlib, json, pkgutil, sansflow
names = ["sansflow"]
for info in pkgutil.walk_packages(sansflow.__path__, "sansflow."):
    if not info.name.endswith("__main__"):
        names.append(info.name)
for name in names:
    importlib.import_module(name)
print(json.dumps({"file": sansflow.__file__, "modules": names}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy, as from a fresh clone: setuptools ships whatever an earlier build left
    # in build/lib, modules that have since left the package included.
    source = tmp_path_factory.mktemp("source") / "sansflow"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", ".*cache", ".hypothesis", ".venv*", "__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(source)],
        check=True, cwd=out,
    )
    (built,) = out.glob("sansflow-*.whl")
    return built


def test_wheel_contains_every_package(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = EXPECTED - names
    assert not missing, f"missing from the wheel: {sorted(missing)}"
    assert not any(name.startswith(("tests/", "adapters/", "examples/")) for name in names)


def test_wheel_ships_no_benchmark(wheel: Path) -> None:
    # The benchmark runs from a clone (python -m bench); in the wheel it was a third of the size.
    shipped = [name for name in zipfile.ZipFile(wheel).namelist()
               if {"bench", "bench.py"} & set(PurePosixPath(name).parts)]
    assert shipped == []


def test_wheel_carries_every_module_of_the_source_tree(wheel: Path) -> None:
    # The package list in pyproject.toml is explicit: a new subpackage must be added to it.
    # os.walk follows sansflow/adapters, the symlink, as the build does.
    source = {
        str((Path(folder) / name).relative_to(ROOT))
        for folder, _, files in os.walk(ROOT / "sansflow", followlinks=True)
        for name in files if name.endswith(".py")
    }
    packaged = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    assert source - packaged == set()


def test_every_public_module_imports_from_the_wheel(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", str(wheel)],
        check=True,
    )
    # Third-party extras (trio, hypothesis, anyio) come from this environment's
    # site-packages; sansflow itself must come from the wheel, so run outside the checkout.
    third_party = sysconfig.get_paths()["purelib"]
    result = subprocess.run(
        [str(python), "-c", IMPORT_ALL],
        check=True, capture_output=True, text=True, cwd=tmp_path,
        env={"PYTHONPATH": third_party, "PATH": "/usr/bin:/bin"},
    )
    report = json.loads(result.stdout)
    assert Path(report["file"]).is_relative_to(env_dir), report["file"]
    for name in ("sansflow.testing", "sansflow.adapters.asyncio", "sansflow.adapters.trio",
                 "sansflow.adapters.socket"):
        assert name in report["modules"]


# A user's program, type-checked against the editable install as a user's editor would.
USER_PROGRAM = """
from sansflow import Eof, Error, Ok, error_message
from sansflow.adapters import asyncio as sf


async def fetch(port: int) -> bytes:
    flow = await sf.connect("127.0.0.1", port)
    match await flow.read():
        case Ok(data):
            return data
        case Eof():
            return b""
        case Error(err):
            raise ConnectionError(error_message(err))
"""

# Where the editable install's sansflow comes from, and what else it put on sys.path.
IMPORT_EDITABLE = """
import importlib.util, json
import sansflow, sansflow.adapters.asyncio
print(json.dumps({
    "sansflow": sansflow.__file__,
    "adapter": sansflow.adapters.asyncio.__file__,
    "stray": [name for name in ("adapters", "tests", "examples")
              if importlib.util.find_spec(name) is not None],
}))
"""


@pytest.fixture(scope="module")
def editable_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment holding only the editable install of this checkout.

    The editable wheel is built by setuptools' PEP 660 hook here, which is what ``pip install
    -e`` runs; pip installs it into the fresh environment (no dependencies: sansflow has none).
    """
    out = tmp_path_factory.mktemp("editable")
    subprocess.run(
        [sys.executable, "-c",
         "import sys; from setuptools import build_meta; build_meta.build_editable(sys.argv[1])",
         str(out)],
        check=True, cwd=ROOT, capture_output=True,
    )
    (built,) = out.glob("sansflow-*.whl")
    env_dir = out / "env"
    venv.create(env_dir, with_pip=False)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install",
         "--quiet", "--no-deps", str(built)],
        check=True,
    )
    return env_dir / "bin" / "python"


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """A user's working directory holding an unrelated, empty folder named ``sansflow``."""
    (tmp_path / "sansflow").mkdir()
    (tmp_path / "program.py").write_text(USER_PROGRAM)
    return tmp_path


def test_editable_install_imports_from_any_directory(editable_env: Path, user_dir: Path) -> None:
    result = subprocess.run(
        [str(editable_env), "-c", IMPORT_EDITABLE],
        capture_output=True, text=True, cwd=user_dir, env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert Path(report["sansflow"]).resolve() == ROOT / "sansflow" / "__init__.py"
    assert Path(report["adapter"]).resolve() == ROOT / "adapters" / "asyncio.py"
    # Only sansflow: the checkout's other top-level directories stay off sys.path.
    assert report["stray"] == []


def test_editable_install_type_checks_a_users_program(editable_env: Path, user_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--python-executable", str(editable_env),
         "--cache-dir", str(user_dir / ".mypy_cache"), "program.py"],
        capture_output=True, text=True, cwd=user_dir, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
