"""The decord frame sampler: `VideoReader.get_batch` on the frames nearest the sample times
(by decord's own timestamps); on a GPU (`decord.gpu(0)`) when decord was built with CUDA
(NVDEC, see media/gpu.py). media/backend.py falls back to PyAV on a file decord cannot read.
"""
from __future__ import annotations

import io
import time
from typing import Sequence

import numpy as np

from media.errors import MediaError
from media.images import resize_rgb
from media.probe import VideoInfo
from media.sampled import Sampled
from media.sampling import nearest_frames
from schemas.reasons import Reason


class DecordSampler:
    """decord's VideoReader; on a GPU when decord has CUDA (NVDEC)."""

    name = "decord"

    def __init__(self, threads: int = 2, gpu: bool = False) -> None:
        self.threads = threads
        self.gpu = gpu

    def sample(self, data: bytes, info: VideoInfo, targets: Sequence[float], size_hw: tuple[int, int],
               access: str = "exact") -> Sampled:
        import decord

        t0 = time.perf_counter()
        ctx = decord.gpu(0) if self.gpu else decord.cpu(0)
        vr = decord.VideoReader(io.BytesIO(data), ctx=ctx, num_threads=self.threads)
        n = len(vr)
        if n == 0:
            raise MediaError(Reason.UNDECODABLE, "decord found no frames")
        stamps = np.asarray(vr.get_frame_timestamp(np.arange(n)))[:, 0].astype(np.float64)
        order = np.argsort(stamps, kind="stable")
        times = stamps[order] - stamps[order[0]]
        idx = order[nearest_frames(times, targets)]
        batch = vr.get_batch([int(i) for i in idx]).asnumpy()
        decode_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        h, w = size_hw
        ch, cw = info.coded_height, info.coded_width
        rotation = 0
        if batch.shape[1:3] == (cw, ch) and cw != ch:     # decord applied a 90/270 display rotation
            h, w = w, h
            rotation = 90
        frames = [resize_rgb(fr, (h, w)) for fr in batch]
        del vr
        return Sampled(frames=frames, times=[float(stamps[i] - stamps[order[0]]) for i in idx],
                       targets=[float(t) for t in targets], rotation=rotation,
                       decode_s=decode_s, convert_s=time.perf_counter() - t1, backend=self.name, access=access)
