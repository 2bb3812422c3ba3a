"""Is there a GPU decord can decode on? (NVIDIA driver via libcuda; no torch needed.)

PyPI's decord wheel is CPU-only. NVDEC decoding needs decord built from source with CUDA
(`cmake .. -DUSE_CUDA=ON`, against FFmpeg 4.x development headers, the CUDA toolkit and the
NVIDIA Video Codec SDK headers; at run time libnvcuvid from the driver, i.e.
NVIDIA_DRIVER_CAPABILITIES including `video` in containers). `decord_gpu_available()`
checks a device through libcuda and opens a tiny clip with `decord.gpu(0)`; anything short
of that falls back to PyAV on the CPU.
"""
from __future__ import annotations

import ctypes
import io
from typing import Optional

import numpy as np


_GPU_DECORD: Optional[bool] = None


def cuda_device_count() -> int:
    """NVIDIA devices the driver reports (0 without a driver); no torch needed."""
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    return 0


def decord_gpu_available() -> bool:
    """True when decord imports, a CUDA device exists and decord was built with CUDA."""
    global _GPU_DECORD
    if _GPU_DECORD is None:
        _GPU_DECORD = False
        if cuda_device_count() > 0:
            try:
                import decord

                decord.VideoReader(io.BytesIO(_tiny_h264()), ctx=decord.gpu(0))
                _GPU_DECORD = True
            except Exception:  # noqa: BLE001 - a CPU-only build raises DECORDError
                _GPU_DECORD = False
    return _GPU_DECORD


def _tiny_h264() -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 100, np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()
