"""Imports point one way: tools -> (demo, export) -> engine -> visualization -> (models, datasets) ->
config -> utils."""
import ast
import os

import pytest

from tests.conftest import REPO_ROOT

# What each room of the package may import from vov3d.
ALLOWED = {
    "config": {"config", "utils"},
    "utils": {"utils"},
    "models": {"models", "config", "utils"},
    "datasets": {"datasets", "config", "utils"},
    "visualization": {"visualization", "models", "datasets", "config", "utils"},
    "engine": {"engine", "visualization", "models", "datasets", "config", "utils"},
    # Applications of a trained model, beside each other: neither imports the other.
    "demo": {"demo", "engine", "visualization", "models", "datasets", "config", "utils"},
    "export": {"export", "engine", "models", "config", "utils"},
}


def vov3d_imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "vov3d" and len(parts) > 1:
                yield parts[1]


def package_files():
    root = os.path.join(REPO_ROOT, "vov3d")
    for room in sorted(ALLOWED):
        for dirpath, _, files in os.walk(os.path.join(root, room)):
            for name in files:
                if name.endswith(".py"):
                    yield room, os.path.join(dirpath, name)


@pytest.mark.parametrize("room,path", list(package_files()),
                         ids=lambda x: os.path.relpath(x, REPO_ROOT) if os.sep in str(x) else x)
def test_imports_point_one_way(room, path):
    bad = sorted(set(vov3d_imports(path)) - ALLOWED[room])
    assert not bad, f"{os.path.relpath(path, REPO_ROOT)} ({room}) imports vov3d.{bad}"
