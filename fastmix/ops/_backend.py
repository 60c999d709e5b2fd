"""Backend selection and the metadata checks the ops share (no host sync: they also run on
fake tensors under torch.compile)."""
from __future__ import annotations

import torch

from .._checks import indices_in_range
from ..backends import numba as numba_backend
from ..backends import triton as triton_backend

BACKENDS = ("auto", "pytorch", "triton", "numba")

_IMPLEMENTATIONS: dict = {}  # custom op -> the Python function it was defined from


def custom_op(name: str):
    """torch.library.custom_op(name, mutates_args=()) that also remembers the function, so that
    `call` can run it without the dispatcher where nothing needs the dispatcher."""
    def define(fn):
        op = torch.library.custom_op(name, mutates_args=())(fn)
        _IMPLEMENTATIONS[op] = fn
        return op
    return define


def runs_directly(tensors) -> bool:
    """True when an op on these tensors may skip the dispatcher: plain CPU tensors, no gradient
    to record, and nothing that intercepts ops (torch.compile, torch.jit.trace, torch function
    or dispatch modes such as FakeTensorMode, functorch transforms such as vmap). The
    dispatcher's custom-op path (autograd wrapper, redispatch, the dynamo-disabled impl) costs
    about 0.1 ms a call, more than the whole numba blend of a CIFAR batch; this check, a few us."""
    grad_mode = torch.is_grad_enabled()
    for t in tensors:
        if type(t) is not torch.Tensor or t.device.type != "cpu" or (grad_mode and t.requires_grad):
            return False
    return not (torch.compiler.is_compiling() or torch._C._is_torch_function_mode_enabled()
                or torch._C._len_torch_dispatch_stack() or torch._C._functorch.maybe_current_level() is not None
                or torch._C._get_tracing_state() is not None)  # torch.jit.trace records ops it sees


def call(op, *args):
    """op(*args), through the dispatcher only where it is needed (see `runs_directly`): the same
    implementation runs either way, with the same checks."""
    implementation = _IMPLEMENTATIONS.get(op)
    if implementation is not None and runs_directly([a for a in args if isinstance(a, torch.Tensor)]):
        return implementation(*args)
    return op(*args)


def resolve(backend: str, tensor: torch.Tensor, numba_dtypes: tuple | None = None) -> str:
    """"auto": Triton for CUDA tensors when triton is installed; for CPU tensors the numba
    kernels when numba is installed and the op has one for these dtypes (`numba_dtypes`: the
    images' and output's dtypes; None for an op without a numba kernel), else PyTorch.
    "triton" on CPU tensors runs the kernels under the Triton interpreter (TRITON_INTERPRET=1).
    "numba" forces the numba kernels on CPU tensors; an op without one runs the PyTorch path."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if tensor.device.type == "cuda":
            return "triton" if triton_backend.available() else "pytorch"
        if (tensor.device.type == "cpu" and numba_dtypes is not None and numba_backend.supports(*numba_dtypes)
                and numba_backend.available()):
            return "numba"
        return "pytorch"
    if backend == "triton" and not triton_backend.available():
        raise RuntimeError("backend='triton' needs the triton package (Linux); use backend='pytorch'")
    if backend == "numba":
        if not numba_backend.available():
            raise RuntimeError("backend='numba' needs the numba package (pip install numba); use backend='pytorch'")
        if tensor.device.type != "cpu":
            raise ValueError(f"backend='numba' runs on CPU tensors, got a tensor on {tensor.device}")
        if numba_dtypes is None:
            return "pytorch"
        if not numba_backend.supports(*numba_dtypes):
            raise TypeError(f"backend='numba' handles {numba_backend.DTYPES} images and outputs, got "
                            f"{tuple(str(d) for d in numba_dtypes)}; use backend='pytorch'")
    return backend


def check_tensor(tensor: torch.Tensor, name: str, shape: tuple, dtypes: tuple, device: torch.device) -> None:
    """`shape` entries of None match any size."""
    if tensor.dim() != len(shape) or any(want is not None and got != want for got, want in zip(tensor.shape, shape)):
        wanted = ", ".join("*" if s is None else str(s) for s in shape)
        raise ValueError(f"{name} must have shape [{wanted}], got {tuple(tensor.shape)}")
    if tensor.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {dtypes}, got {tensor.dtype}")
    if tensor.device != device:
        raise ValueError(f"{name} is on {tensor.device} but the images are on {device}")


def check_perm_meta(perm: torch.Tensor, batch: int, device: torch.device) -> None:
    """perm: int64 [B] on the images' device or on the CPU (metadata only: fake kernels too)."""
    check_tensor(perm, "perm", (batch,), INDICES, perm.device)
    if perm.device != device and perm.device.type != "cpu":
        raise ValueError(f"perm is on {perm.device}; it must be on the images' device ({device}) or the CPU")


def perm_to(perm: torch.Tensor, device: torch.device) -> torch.Tensor:
    """perm on `device` (a copy that does not wait for the device when it is on the CPU)."""
    return perm if perm.device == device else perm.to(device, non_blocking=True)


def perm_on_device(perm: torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """Range-check perm without a device synchronisation and return it on `device`.

    A CPU perm (the operators draw it there) is checked on the host, which costs nothing, and
    copied to the device without waiting. A device perm is checked by an asynchronous device-side
    assert: a bad value fails at the next synchronisation instead of now; meanwhile the Triton
    kernels clamp partner indices into the batch, so nothing is ever read outside the images."""
    if perm.device.type == "cpu":
        if perm.numel():
            values = perm.detach().numpy()  # NumPy: about 1 us, where four torch ops cost ~20
            if not indices_in_range(values, batch):
                bad = values[(values < 0) | (values >= batch)][:5].tolist()
                raise ValueError(f"perm holds indices outside [0, {batch}): {bad}")
        return perm_to(perm, device)
    if perm.numel():
        torch._assert_async(((perm >= 0) & (perm < batch)).all(),
                            f"fastmix: perm holds indices outside [0, {batch})")
    return perm


FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAP_FLOATS = (torch.float32, torch.float64)
INDICES = (torch.int64,)


def check_images(images: torch.Tensor, *, allow_uint8: bool) -> None:
    allowed = FLOATS + ((torch.uint8,) if allow_uint8 else ())
    check_tensor(images, "images", (None, None, None, None), allowed, images.device)


def output_dtype(images: torch.Tensor, out_dtype: torch.dtype | None) -> torch.dtype:
    """The images' dtype, or a float dtype for uint8 images (uint8 in, float out)."""
    if out_dtype is None or out_dtype == images.dtype:
        return images.dtype
    if images.dtype == torch.uint8 and out_dtype in FLOATS:
        return out_dtype
    raise TypeError(f"out_dtype must be the images' dtype ({images.dtype}) or, for uint8 images, "
                    f"a float dtype; got {out_dtype}")
