"""The wheel built from pyproject.toml holds every module the pipelines import and the data files
they read (recipes, prompts, the bundled CLIP): what Dataflow workers get from --setup_file and
what the worker images install."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
with open(os.path.join(ROOT, "pyproject.toml"), "rb") as _f:
    PACKAGES = tuple(p.rstrip("*") for p in tomllib.load(_f)["tool"]["setuptools"]["packages"]["find"]["include"])
TOP_LEVEL = {d for d in os.listdir(ROOT) if os.path.isfile(os.path.join(ROOT, d, "__init__.py"))}


def project_imports(path: str) -> set[str]:
    """Dotted names of project modules a file imports (absolute imports of the project's packages)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in found if n.split(".")[0] in TOP_LEVEL}


def test_wheel_has_every_module_the_pipelines_import(tmp_path):
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        if os.path.isfile(os.path.join(ROOT, rel)):
            os.makedirs(src / os.path.dirname(rel), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, rel), src / rel)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = os.listdir(tmp_path / "dist")
    names = set(zipfile.ZipFile(tmp_path / "dist" / wheel).namelist())

    # every module reachable from the pipelines, following imports through the project
    todo = [os.path.join("pipelines", f) for f in os.listdir(os.path.join(ROOT, "pipelines")) if f.endswith(".py")]
    seen: set[str] = set()
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        assert rel in names, f"{rel} is imported by the pipelines but missing from {wheel} (pyproject.toml include?)"
        for dotted in project_imports(os.path.join(ROOT, rel)):
            base = dotted.replace(".", "/")
            for cand in (base + ".py", base + "/__init__.py"):
                if os.path.exists(os.path.join(ROOT, cand)):
                    todo.append(cand)
    assert {"pipelines/launch.py", "pipelines/resume.py", "pipelines/report.py", "shards/writer.py",
            "media/worker.py", "schemas/config/loader.py", "schemas/config/mixture.py"} <= seen
    # every tracked module of the packages, and the data files read at run time
    tracked = {f for f in files if f.split("/")[0] in PACKAGES and f.endswith(".py")}
    assert not tracked - names, sorted(tracked - names)[:5]
    for data in ("configs/base.yaml", "configs/demo.yaml", "captioners/prompts/SHA256SUMS"):
        assert data in names, data
    assert any(n.startswith("captioners/models/") for n in names), "the bundled tiny CLIP is not packaged"


@pytest.mark.parametrize("dockerfile", ["docker/worker.Dockerfile", "docker/gpu.Dockerfile"])
def test_worker_images_install_the_debian_packages_workers_run(dockerfile):
    """The engine shells out to ffmpeg (media) and bwrap (the think-with-image sandbox, which fails
    closed without it): a worker image that lacks either rejects rows no local run rejects."""
    text = open(os.path.join(ROOT, dockerfile), encoding="utf-8").read().replace("\\\n", " ")
    installs = " ".join(line for line in text.splitlines() if "apt-get install" in line).split()
    for package in ("ffmpeg", "bubblewrap"):
        assert package in installs, f"{dockerfile} does not apt-get install {package}"
