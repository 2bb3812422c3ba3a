"""`python -m bench.sandbox`: what confinement costs per think-with-image snippet.

The same snippets, interleaved round by round (so load from other processes hits both alike):

  sandbox   `Sandbox.run`: bwrap namespaces + read-only view + rlimits + seccomp + import hook,
            inputs copied in through memfds, /output files read back through the status pipe
  plain     `python -c CODE` in a subprocess, inputs in a temp folder, cwd a temp output folder
            (what running the code without a sandbox would cost: interpreter start-up included)
  plain_isolated  the same with the sandbox's interpreter flags (`python -I -S`, the same
            site-packages on sys.path): the difference to `sandbox` is the confinement alone

Snippets: `noop` (print: the fixed cost), `pil_crop_zoom`, `pil_contrast`, `cv2_rotate`,
`cv2_clahe` on a 640x480 PNG. Prints one JSON report: per snippet the best-of-repeat seconds
of each, their ratio and the sandbox's overhead in ms; over all snippets the snippets/s of
each, the ratio and the mean overhead per snippet; and the one-off `setup` (probe) time.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from bench.common import emit, ratio
from mixture.sandbox import Sandbox, SandboxLimits

SNIPPETS = {
    "noop": "print('ok')",
    "pil_crop_zoom": "from PIL import Image\nim = Image.open('/input/image.png')\n"
                     "im.crop((160, 120, 480, 360)).resize((640, 480), Image.BICUBIC).save('out.png')",
    "pil_contrast": "from PIL import Image, ImageOps\nim = Image.open('/input/image.png')\n"
                    "ImageOps.autocontrast(im, cutoff=2).save('out.png')",
    "cv2_rotate": "import cv2\nim = cv2.imread('/input/image.png')\n"
                  "cv2.imwrite('out.png', cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE))",
    "cv2_clahe": "import cv2\nim = cv2.imread('/input/image.png', cv2.IMREAD_GRAYSCALE)\n"
                 "cv2.imwrite('out.png', cv2.createCLAHE(clipLimit=3.0).apply(im))",
}


def _image() -> bytes:
    rng = np.random.default_rng(0)
    arr = (rng.random((480, 640, 3)) * 60 + 90).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _plain(code: str, inputs: dict[str, bytes], root: str, isolated_path: list[str] | None = None) -> bytes:
    """The snippet unconfined: `python -c` with /input rewritten to a temp folder; with
    `isolated_path`, `python -I -S` with those folders put on sys.path first."""
    indir, outdir = os.path.join(root, "input"), os.path.join(root, "output")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(indir)
    os.makedirs(outdir)
    for name, blob in inputs.items():
        with open(os.path.join(indir, name), "wb") as f:
            f.write(blob)
    env = {"PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    code = code.replace("/input/", indir + "/")
    cmd = [sys.executable, "-c", code]
    if isolated_path is not None:
        cmd = [sys.executable, "-I", "-S", "-c", f"import sys\nsys.path.extend({isolated_path!r})\n{code}"]
    subprocess.run(cmd, cwd=outdir, env=env, check=True, capture_output=True, timeout=60)
    out = os.path.join(outdir, "out.png")
    return open(out, "rb").read() if os.path.exists(out) else b""


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="runs per snippet and method; the best counts")
    args = ap.parse_args(argv)
    box = Sandbox(SandboxLimits(cpu_s=30, wall_s=60))
    t0 = time.perf_counter()
    box.setup()
    setup_s = time.perf_counter() - t0
    inputs = {"image.png": _image()}
    times = {name: {"sandbox": [], "plain": [], "plain_isolated": []} for name in SNIPPETS}
    site_dirs = list(box._runtime.site_dirs)
    root = tempfile.mkdtemp(prefix="bench-sandbox-")
    try:
        for _ in range(max(1, args.repeat)):
            for name, code in SNIPPETS.items():
                t = time.perf_counter()
                res = box.run(code, inputs)
                times[name]["sandbox"].append(time.perf_counter() - t)
                assert res.ok, (name, res)
                t = time.perf_counter()
                plain_out = _plain(code, inputs, os.path.join(root, "run"))
                times[name]["plain"].append(time.perf_counter() - t)
                assert plain_out == res.files.get("out.png", b""), f"{name}: sandbox and plain outputs differ"
                t = time.perf_counter()
                isolated_out = _plain(code, inputs, os.path.join(root, "run"), site_dirs)
                times[name]["plain_isolated"].append(time.perf_counter() - t)
                assert isolated_out == plain_out, f"{name}: plain and isolated outputs differ"
    finally:
        shutil.rmtree(root, ignore_errors=True)
    per = {}
    for name, t in times.items():
        s, p, q = min(t["sandbox"]), min(t["plain"]), min(t["plain_isolated"])
        per[name] = {"sandbox_s": round(s, 4), "plain_s": round(p, 4), "plain_isolated_s": round(q, 4),
                     "ratio": ratio(s, p), "ratio_to_isolated": ratio(s, q), "overhead_ms": round((s - p) * 1000, 1),
                     "confinement_ms": round((s - q) * 1000, 1)}
    total_s = sum(v["sandbox_s"] for v in per.values())
    total_p = sum(v["plain_s"] for v in per.values())
    total_q = sum(v["plain_isolated_s"] for v in per.values())
    n = len(per)
    return emit("sandbox", {
        "repeat": args.repeat, "setup_probe_s": round(setup_s, 3), "snippets": per,
        "sandbox_snippets_per_s": round(n / total_s, 2), "plain_snippets_per_s": round(n / total_p, 2),
        "ratio_sandbox_to_plain": ratio(total_s, total_p),
        "overhead_ms_per_snippet": round((total_s - total_p) / n * 1000, 1),
        "overhead_ms_median": round(statistics.median(v["overhead_ms"] for v in per.values()), 1),
        "plain_isolated_snippets_per_s": round(n / total_q, 2),
        "ratio_sandbox_to_plain_isolated": ratio(total_s, total_q),
        "confinement_ms_per_snippet": round((total_s - total_q) / n * 1000, 1),
        "outputs_identical": True,
    })


if __name__ == "__main__":
    main()
