"""Small shared test utilities."""
import torch
from torch.utils._python_dispatch import TorchDispatchMode

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def random_images(batch, channels, height, width, dtype=torch.float32, seed=0, memory_format=torch.contiguous_format):
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        x = torch.randint(0, 256, (batch, channels, height, width), generator=gen, dtype=torch.uint8)
    else:
        x = torch.randn(batch, channels, height, width, generator=gen).to(dtype)
    return x.contiguous(memory_format=memory_format)


def tolerance(dtype):
    return {torch.float64: 1e-12, torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 2e-2}.get(dtype, 0)


class RecordingMode(TorchDispatchMode):
    """A dispatch mode that records the name of every op it sees (and runs it unchanged)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))
