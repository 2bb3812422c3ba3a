"""The layering README promises, checked on the source: Beam-free layers never import
`pipelines/` (nor Beam beyond its FileSystems, the file access of every runner), and lower
layers never import upper ones. Every import counts, those inside functions too."""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
BEAM_FREE = ("schemas", "keye", "filters", "media", "captioners", "ingest", "shards", "mixture", "trainer")
# what each lower layer must never import (besides pipelines/, which no Beam-free layer imports)
NEVER = {
    "schemas": ("keye", "filters", "media", "captioners", "ingest", "shards", "mixture", "trainer"),
    "keye": ("filters", "media", "captioners", "ingest", "shards", "mixture", "trainer"),
    "media": ("filters", "captioners", "ingest", "shards", "mixture", "trainer"),
    "filters": ("captioners", "ingest", "shards", "mixture", "trainer"),
}
BEAM_ALLOWED = ("apache_beam.io.filesystem", "apache_beam.io.filesystems")


def imports_of(path: pathlib.Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def violations() -> set[tuple[str, str]]:
    found = set()
    for layer in BEAM_FREE:
        for path in sorted((ROOT / layer).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for name in imports_of(path):
                top = name.split(".")[0]
                if top == "pipelines" or top in NEVER.get(layer, ()):
                    found.add((rel, name))
                elif top == "apache_beam" and name not in BEAM_ALLOWED:
                    found.add((rel, name))
    return found


def test_lower_layers_never_import_upper_ones():
    assert violations() == set()

