"""The layout (and element type) of a DataNode, found when the pipeline graph is built.

DALI's graph mode gives a DataNode no layout before the pipeline runs, but fastmix needs it
earlier: CutMix pastes HWC images with ``fn.multi_paste`` and CHW images as frames, CutOut and
the box operators need H and W, and the python-function operators must declare the layout of
their outputs (``output_layouts``) so that they chain with each other and with DALI's
operators. So the layout is read off the graph: from the operator that produced the images
(``external_source(layout=...)``, a decoder, ``crop_mirror_normalize(output_layout=...)``,
``transpose``, ``reshape(layout=...)``, a fastmix operator ...) or, through operators that keep
their input's layout (resize, flip, cast, arithmetic ...), from further up. When the graph does
not tell, the caller passes ``layout=`` and fastmix raises at graph construction otherwise.

Only DALI's recorded operator arguments are read (the DataNode's producing operator instance);
any surprise in them makes the inference answer "unknown", never a wrong layout, and the
python-function operators check the declared layout against the real one at run time.
"""
from __future__ import annotations

import weakref

from nvidia.dali import types
from nvidia.dali.data_node import DataNode
from nvidia.dali.pipeline import do_not_convert

LAYOUTS = ("HWC", "CHW")

# Operators whose images output has the layout of their first input.
_KEEPS_LAYOUT = {
    "resize", "flip", "rotate", "warp_affine", "crop", "slice", "cast", "cast_like", "copy", "erase",
    "brightness", "contrast", "brightness_contrast", "hsv", "hue", "saturation", "color_twist",
    "color_space_conversion", "gaussian_blur", "jitter", "water", "sphere", "jpeg_compression_distortion",
    "random_resized_crop", "resize_crop_mirror", "fast_resize_crop_mirror", "paste", "pad", "permute_batch",
    "multi_paste", "equalize", "median_blur", "filter", "laplacian", "grid_mask", "clahe", "tensor_resize",
    "dilate", "erode", "remap", "warp_perspective", "debayer", "gaussian", "salt_and_pepper", "shot",
    "make_contiguous", "_conditional.split", "_conditional.merge", "split", "merge",
}
_DECODERS = {"image", "image_crop", "image_random_crop", "image_slice", "image_decoder",
             "image_decoder_crop", "image_decoder_random_crop", "image_decoder_slice"}
_ARITHMETIC_MODULE = "nvidia.dali.math"


# What fastmix knows of the outputs it built: id(node) -> (weak reference, layout, dtype). Not an
# attribute of the DataNode: DALI's conditionals identify nodes by repr(), which shows the layout.
_DECLARED: dict[int, tuple] = {}


def _declared(node: DataNode):
    entry = _DECLARED.get(id(node))
    if entry is not None and entry[0]() is node:
        return entry
    return None


def _record(node: DataNode, layout=None, dtype=None) -> DataNode:
    previous = _declared(node)
    if previous is not None:
        layout = layout or previous[1]
        dtype = dtype if dtype is not None else previous[2]
    for key in [k for k, entry in _DECLARED.items() if entry[0]() is None]:  # nodes of finished graphs
        del _DECLARED[key]
    _DECLARED[id(node)] = (weakref.ref(node), layout, dtype)
    return node


@do_not_convert
def declare(node: DataNode, layout: str) -> DataNode:
    """Record the layout of an output fastmix built, for the fastmix operators after it."""
    return _record(node, layout=layout)


def _transposed(layout: str | None, args: dict) -> str | None:
    if args.get("output_layout"):
        return args["output_layout"]
    perm = args.get("perm")
    if layout is None or perm is None or not args.get("transpose_layout", True):
        return None
    perm = list(perm)
    return "".join(layout[i] for i in perm) if sorted(perm) == list(range(len(layout))) else None


def _producer(node: DataNode):
    """(operator, its recorded arguments, name, module, DataNode inputs) of the operator that made
    `node`, or None for a DALI version that records operators differently (then: unknown)."""
    try:
        source = node.source
        operator = source._op
        args = dict(operator._init_args)
        inputs = [i for i in source._inputs if isinstance(i, DataNode)]
    except AttributeError:
        return None
    return operator, args, args.get("_display_name") or type(operator).__name__, args.get("_module", ""), inputs


@do_not_convert  # it only reads the graph; AutoGraph's rewriting would split the nodes it visits
def infer_layout(node: DataNode, depth: int = 0) -> str | None:
    """The layout string of `node` from the graph, or None when the graph does not say."""
    declared = _declared(node)
    if declared is not None and declared[1]:
        return declared[1]
    if getattr(node, "layout", None):  # where DALI infers layouts itself
        return node.layout
    producer = _producer(node) if depth <= 64 else None
    if producer is None:
        return None
    operator, args, name, module, inputs = producer
    layout_arg = args.get("layout") or getattr(operator, "_layout", None)
    if name == "external_source" or name in ("zeros", "ones", "full", "constant"):
        return layout_arg or None
    if name in ("python_function", "dl_tensor_python_function", "torch_python_function"):
        layouts = args.get("output_layouts")
        if isinstance(layouts, str):
            return layouts or None
        if layouts and node.index < len(layouts):
            return layouts[node.index] or None
        return None
    first = infer_layout(inputs[0], depth + 1) if inputs else None
    if name in _DECODERS or module.endswith(".decoders"):
        return "HWC"
    if name == "crop_mirror_normalize":
        return args.get("output_layout", "CHW")
    if name == "transpose":
        return _transposed(first, args)
    if name in ("reshape", "reinterpret"):
        if layout_arg:
            return layout_arg
        return first if not args.get("shape") and not args.get("rel_shape") else None
    if module == _ARITHMETIC_MODULE:  # DALI arithmetic keeps the layout of its tensor inputs
        layouts = {infer_layout(i, depth + 1) for i in inputs} - {None, ""}
        return layouts.pop() if len(layouts) == 1 else None
    if name in _KEEPS_LAYOUT:
        return first
    return None


def resolve_layout(images: DataNode, layout: str | None, operator: str, allowed=LAYOUTS) -> str:
    """The images' layout at graph construction: `layout` if given (checked against what the graph
    says), else the inferred one; a ValueError naming `operator` when neither is known."""
    inferred = infer_layout(images)
    if layout is not None:
        if layout not in allowed:
            raise ValueError(f"{operator}: layout must be one of {allowed}, got {layout!r}")
        if inferred and inferred != layout:
            raise ValueError(f"{operator}: layout={layout!r} but the images were produced with layout {inferred!r}")
        return layout
    if inferred is None:
        producer = _producer_name(images)
        raise ValueError(f"{operator}: cannot tell the layout of the images from the pipeline graph (they come from "
                         f"{producer}); give it with layout='HWC' or layout='CHW', or label them, e.g. "
                         "fn.reshape(images, layout='HWC')")
    if inferred not in allowed:
        raise ValueError(f"{operator} supports images with layout {' or '.join(allowed)} (e.g. HWC from "
                         f"fn.decoders.image, CHW from fn.crop_mirror_normalize); these images have layout {inferred!r}")
    return inferred


def _producer_name(node: DataNode) -> str:
    producer = _producer(node)
    if producer is None:
        return "an operator fastmix does not know"
    return f"{producer[3] or 'nvidia.dali.fn'}.{producer[2]}"


# ----------------------------------------------------------------------------------------------
# The element type, for operators compiled for one type (numba_function): the same walk.

_KEEPS_DTYPE = {
    "flip", "rotate", "warp_affine", "crop", "slice", "copy", "erase", "permute_batch", "transpose", "reshape",
    "reinterpret", "squeeze", "expand_dims", "jitter", "water", "sphere", "paste", "pad", "random_resized_crop",
    "resize_crop_mirror", "fast_resize_crop_mirror", "make_contiguous", "_conditional.split", "_conditional.merge",
    "split", "merge", "resize", "multi_paste", "brightness_contrast", "brightness", "contrast", "hsv", "hue",
    "saturation", "color_twist", "gaussian_blur",
}


@do_not_convert
def declare_dtype(node: DataNode, dtype) -> DataNode:
    return _record(node, dtype=dtype)


@do_not_convert
def infer_dtype(node: DataNode, depth: int = 0):
    """The DALIDataType of `node` from the graph, or None when the graph does not say."""
    declared = _declared(node)
    if declared is not None and declared[2] is not None:
        return declared[2]
    if getattr(node, "dtype", None) is not None:
        return node.dtype
    producer = _producer(node) if depth <= 64 else None
    if producer is None:
        return None
    operator, args, name, module, inputs = producer
    explicit = args.get("dtype")
    if module.endswith(".readers") and name in ("file", "File", "coco", "COCO"):
        labels_index = 1 if name.lower() == "file" else 2
        return types.INT32 if node.index == labels_index else None
    if name == "external_source":
        return explicit or getattr(operator, "_dtype", None)
    if name in _DECODERS or module.endswith(".decoders"):
        return explicit or types.UINT8
    if name == "crop_mirror_normalize":
        return explicit or types.FLOAT
    if name == "cast":
        return explicit
    if name in _KEEPS_DTYPE:
        return explicit or (infer_dtype(inputs[0], depth + 1) if inputs else None)
    return None
