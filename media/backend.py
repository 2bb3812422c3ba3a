"""Choosing the frame sampler (`media.decode.backend`) and sampling with a fallback.

`auto` picks decord on a GPU and PyAV otherwise (PyAV's exact sampler is the faster CPU
path: python -m bench.decode); a file decord fails on is sampled again by PyAV.
"""
from __future__ import annotations

from typing import Optional, Sequence

from media.decord_sampler import DecordSampler
from media.errors import MediaError
from media.gpu import decord_gpu_available
from media.probe import VideoInfo
from media.pyav_sampler import PyAVSampler
from media.sampled import Sampled
from schemas.reasons import Reason


def make_sampler(backend: str, threads: int):
    """The sampler for media.decode.backend (auto: decord on a GPU, else PyAV)."""
    if backend == "pyav":
        return PyAVSampler(threads)
    if backend == "decord":
        return DecordSampler(threads, gpu=decord_gpu_available())
    if decord_gpu_available():
        return DecordSampler(threads, gpu=True)
    return PyAVSampler(threads)


def sample_video(data: bytes, info: VideoInfo, targets: Sequence[float], size_hw: tuple[int, int],
                 sampler, access: str, similarity_hw: Optional[tuple[int, int]] = None) -> Sampled:
    """Sample with the chosen sampler; decord failures fall back to PyAV (exact access).
    similarity_hw: PyAV also returns the frames slow-fast typing compares (`Sampled.similarity`);
    decord does not (the caller scales the sampled frames instead)."""
    import av

    try:
        if isinstance(sampler, PyAVSampler):
            return sampler.sample(data, info, targets, size_hw, access, similarity_hw=similarity_hw)
        return sampler.sample(data, info, targets, size_hw, access)
    except MediaError:
        raise
    except Exception as e:  # noqa: BLE001 - decord raises its own error types; PyAV FFmpegError
        if isinstance(sampler, DecordSampler):
            out = PyAVSampler(sampler.threads).sample(data, info, targets, size_hw, access,
                                                      similarity_hw=similarity_hw)
            out.notes.append(f"decord failed ({type(e).__name__}: {str(e)[:120]}); PyAV used")
            return out
        if isinstance(e, av.FFmpegError):
            raise MediaError(Reason.UNDECODABLE, f"{info.container}/{info.codec}: {e}") from None
        raise
