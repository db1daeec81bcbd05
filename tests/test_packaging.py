"""The wheel carries every public module, and they import from it in a fresh environment."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

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
    "sansflow/bench/__main__.py",
}

# Walks the installed package and imports every module (running the bench is not importing it).
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
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(ROOT)],
        check=True, cwd=out,
    )
    (built,) = out.glob("sansflow-*.whl")
    return built


def test_wheel_contains_every_package(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = EXPECTED - names
    assert not missing, f"missing from the wheel: {sorted(missing)}"
    assert not any(name.startswith(("tests/", "adapters/", "examples/")) for name in names)


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
