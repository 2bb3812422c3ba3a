"""Pipelines by name, for `python beam_runner.py NAME` and `python -m pipelines.NAME`.

Entries name a module and a builder function, imported only when asked for: the registry
imports no pipeline module itself, so `python -m pipelines.curate` (whose module is already
loaded as `__main__`) is not loaded a second time under its own name, and a pipeline module
may use the launcher without an import circle.
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable

PIPELINES = {
    "curate": "pipelines.curate:build_curate",
    "build_mixture": "pipelines.build_mixture:build_mixture",
}


def builder(name: str) -> Callable:
    """The builder function of pipeline `name` (KeyError for an unknown name)."""
    module_name, attr = PIPELINES[name].split(":")
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) == module_name:
        module = sys.modules.setdefault(module_name, main)   # run with -m: that module is __main__
    else:
        module = importlib.import_module(module_name)
    return getattr(module, attr)
