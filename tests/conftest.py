"""Shared fixtures. Tests never reach a model hub: HF_HUB_OFFLINE is forced on."""
from __future__ import annotations

import json
import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture
def cfg():
    from schemas.config import load_config

    return load_config()


def make_cfg(*overrides: str):
    from schemas.config import load_config

    return load_config(None, list(overrides))


def row_context(base_dir: str = "/m", source_ref: str = "r:1", **kw):
    """A validation context with generous limits, for building Samples by hand."""
    from schemas.input import RowContext

    base = dict(source="s", source_ref=source_ref, base_dir=base_dir, max_field_chars=10**6,
                max_media_per_row=8, max_messages=8)
    return RowContext(**{**base, **kw})


def free_port() -> int:
    """A loopback port nothing listens on (until somebody binds it)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    """A tiny Qwen2-VL with random weights and the real Qwen BPE tokenizer, built once per session."""
    from captioners.tiny_vlm import build

    return build(str(tmp_path_factory.mktemp("tiny_vlm") / "tiny-vlm"))


@pytest.fixture(scope="session")
def trainer_data(tmp_path_factory):
    """A demo-like curated output (the synthetic corpus through `curate` with configs/demo.yaml: the
    pre-training data of stages 1-3) for the trainer's tests: (output folder, corpus folder)."""
    from pipelines.curate import build_curate
    from pipelines.launch import run
    from schemas.config import CONFIG_DIR
    from synthetic.corpus import corpus_media_root, generate

    corpus = tmp_path_factory.mktemp("trainer_corpus")
    generate(str(corpus))
    out = tmp_path_factory.mktemp("trainer_data")
    bench = f"decontaminate.benchmarks=[{{name: synthbench, path: {corpus / 'benchmark' / 'bench.jsonl'}}}]"
    media = f"ingest.media_roots={json.dumps([corpus_media_root(str(corpus))])}"   # manifests name ../media/...
    run("curate", build_curate, ["--config", os.path.join(CONFIG_DIR, "demo.yaml"), "--input",
                                 str(corpus / "manifests"), "--output", str(out), "--progress_s", "0",
                                 "--set", bench, "--set", media])
    return out, corpus
