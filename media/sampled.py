"""What a frame sampler returns: the frames for the times asked, and how it got them."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Sampled:
    """Frames for the sample times asked, in that order (a frame may repeat)."""

    frames: list                      # RGB uint8 (h, w, 3), display orientation
    times: list                       # seconds from the first frame, of the frames delivered
    targets: list                     # seconds asked for
    rotation: int = 0                 # display rotation applied, degrees counter-clockwise
    decode_errors: int = 0
    decode_s: float = 0.0             # demux + decode + sample, conversion excluded
    convert_s: float = 0.0            # scaling + RGB conversion + rotation
    backend: str = ""
    access: str = "exact"
    notes: list = field(default_factory=list)
    similarity: list = field(default_factory=list)   # the frames as slow-fast typing compares them, when asked

    @property
    def timestamp_error_s(self) -> float:
        return float(max((abs(a - b) for a, b in zip(self.times, self.targets)), default=0.0))
