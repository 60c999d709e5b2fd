"""torch.library custom ops in the `fastmix` namespace, with fake (meta) kernels and autograd.

    fastmix::mixup_blend(images, perm, lam, out_dtype=None, backend="auto") -> mixed
    fastmix::box_paste(images, perm, boxes, out_dtype=None, backend="auto") -> mixed
    fastmix::box_fill(images, boxes, value, out_dtype=None, backend="auto") -> filled
    fastmix::sage_saliency(grad, perm, mass, kernel_size=5, sigma=1.0, backend="auto") -> (g1, g2)
    fastmix::sage_scores(g1, g2, shifts, chunk_elements=2**20, backend="auto") -> (scores, best_index)
    fastmix::sage_mask_blend(images, perm, g1, g2, shifts, backend="auto") -> (mixed, mask, lam)

The mixing ops are differentiable with respect to `images` (the sample and, through perm and
the shift, its partner), so they also mix features inside a network (Manifold Mixup style).
Saliency, scores and masks are not differentiable: gradients do not flow into grad, g1, g2,
mass or lam. Every op runs its Triton kernel for `backend="triton"` and the PyTorch path for
`backend="pytorch"`; "auto" picks Triton for CUDA tensors, the numba CPU kernels
(fastmix/backends/numba: mixup_blend, box_paste, box_fill, sage_mask_blend on uint8 / float32 /
float64) for CPU tensors when numba is installed, and PyTorch otherwise; `backend="numba"`
forces them (ops without a numba kernel run the PyTorch path). The ops are
opaque to torch.compile, which traces them through their fake kernels without a graph break.
`call(op, *args)` runs an op's implementation without the dispatcher when nothing needs it
(plain CPU tensors, no gradient to record, no compile, mode or functorch transform): the
operators go through it, so a CIFAR-sized CPU blend does not pay the dispatcher's ~0.1 ms.
`mixup_blend_into(out, ...)`, `box_paste_into` and `box_fill_into` write the same mixes into a
given tensor, which may be the images themselves (in place; no gradient recorded): the
operators' `out=`.
"""
from ._backend import BACKENDS, call, resolve, runs_directly
from .blend import box_fill, box_fill_into, box_paste, box_paste_into, mixup_blend, mixup_blend_into
from .sage import sage_mask_blend, sage_saliency, sage_scores

__all__ = ["BACKENDS", "call", "resolve", "runs_directly", "mixup_blend", "box_paste", "box_fill", "sage_saliency",
           "sage_scores", "sage_mask_blend", "mixup_blend_into", "box_paste_into", "box_fill_into"]
