"""The memory-bandwidth floor of a row: the fewest bytes the operation must move, over the copy
bandwidth measured in the same run.

The bandwidth is that of a large `dst.copy_(src)` on the device (bytes read plus bytes
written, median of several copies), the ceiling METHOD.md asks for; datasheet figures are not
used. A row's floor is `floor_bytes / bandwidth`, and fastmix's fraction of it is
`floor / measured`: 1.0 would mean the operator runs at copy speed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .timing import time_calls

COPY_BYTES = {"cuda": 1 << 30, "cpu": 1 << 28}  # 1 GiB on a GPU, 256 MiB on a CPU: well past any cache


@dataclass
class CopyBandwidth:
    bytes_per_s: float
    buffer_bytes: int
    median_ms: float
    iqr_ms: float

    def floor_ms(self, floor_bytes: int) -> float:
        return 1e3 * floor_bytes / self.bytes_per_s

    def as_dict(self) -> dict:
        return {"GB_per_s": self.bytes_per_s / 1e9, "buffer_bytes": self.buffer_bytes,
                "median_ms": self.median_ms, "iqr_ms": self.iqr_ms,
                "counts": "bytes read + bytes written by dst.copy_(src)"}


def measure_copy_bandwidth(device: torch.device, buffer_bytes: int | None = None, repeats: int = 20) -> CopyBandwidth:
    """Device-to-device (or RAM-to-RAM) copy bandwidth, counting bytes read plus bytes written."""
    if buffer_bytes is None:
        buffer_bytes = COPY_BYTES["cuda" if device.type == "cuda" else "cpu"]
    elements = buffer_bytes // 4
    gen = torch.Generator(device=device).manual_seed(0)
    # Two sources alternate so that the second copy does not find the first one's data cached.
    sources = [torch.rand(elements, generator=gen, device=device) for _ in range(2)]
    destination = torch.empty(elements, device=device)
    timing = time_calls(lambda src: destination.copy_(src), sources, device, warmup=2, repeats=repeats,
                        min_repeats=5, budget_s=5.0)
    stats = timing.as_dict()
    return CopyBandwidth(bytes_per_s=2 * elements * 4 / (timing.median_ms / 1e3), buffer_bytes=elements * 4,
                         median_ms=timing.median_ms, iqr_ms=stats["iqr_ms"])


def image_op_floor_bytes(image_bytes: int, extra_inputs_bytes: int = 0, extra_outputs_bytes: int = 0) -> int:
    """Read the batch once, write the mixed batch once, plus any other inputs/outputs once."""
    return 2 * image_bytes + extra_inputs_bytes + extra_outputs_bytes
