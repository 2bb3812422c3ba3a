"""`python -m mixture.sandbox [--config RECIPE] [--set mixture.sandbox.KEY=VALUE]`: check this worker.

Builds the sandbox the recipe describes, probes it (namespaces, seccomp, no privileges) and runs
one benign image snippet; prints a JSON line saying what confines it, or why it cannot run
(exit status 1: the mixture stage would fail closed here).
"""
from __future__ import annotations

import argparse
import io
import json
import sys


def main(argv=None) -> int:
    from schemas.config import load_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="recipe YAML (default: configs/base.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one recipe key")
    args = ap.parse_args(argv)
    from mixture.sandbox import Sandbox, SandboxUnavailable

    box = Sandbox.from_config(load_config(args.config, args.set).mixture.sandbox)
    try:
        box.setup()
    except SandboxUnavailable as e:
        print(json.dumps({"available": False, "why": str(e)}))
        return 1
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "PNG")
    res = box.run("from PIL import Image\nImage.open('/input/image.png').rotate(90, expand=True).save('out.png')",
                  {"image.png": buf.getvalue()})
    print(json.dumps({"available": True, "host_uid": box.host_uid, "interpreter": box._runtime.python,
                      "binds": list(box._runtime.binds), "limits": vars(box.limits),
                      "benign_snippet": {"ok": res.ok, "reason": res.reason, "files": sorted(res.files),
                                         "wall_s": round(res.wall_s, 3)}}))
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
