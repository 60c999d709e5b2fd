"""fastmix.compat.torchvision against the real torchvision.transforms.v2 MixUp / CutMix (0.29.1).

Injected parameters: torchvision draws with the global torch RNG; its `make_params` result is
recorded and given to fastmix (`params=`, CutMix's box converted to (y1, y2, x1, x2)). Outputs must
then be equal: float32/float64 images, uint8 CutMix images and all labels exactly; float16 and
bfloat16 MixUp images within one unit of their last place (torchvision computes in the half type,
fastmix in float32 with one rounding). Also checked: which leaves are mixed or passed through (the
very same object), output types, the errors (same type; torchvision's message is contained in
fastmix's), empty batches, NumPy num_classes, the conditions of torchvision's own TestCutMixMixUp
(written here from its test file, not copied) and, on free draws with fixed seeds, the
distributions of lam and of the CutMix box (two-sample KS tests, p > 1e-3).
"""
import numpy as np
import pytest
import torch
from torch.utils._pytree import tree_flatten

v2 = pytest.importorskip("torchvision.transforms.v2")
tv_tensors = pytest.importorskip("torchvision.tv_tensors")
stats = pytest.importorskip("scipy.stats")
from torch.utils.data import DataLoader, default_collate  # noqa: E402
from torchvision.transforms.v2 import functional as F  # noqa: E402
from torchvision.transforms.v2._utils import _find_labels_default_heuristic  # noqa: E402

from fastmix.compat import torchvision as compat  # noqa: E402

PAIRS = [(v2.MixUp, compat.MixUp), (v2.CutMix, compat.CutMix)]
IDS = ["MixUp", "CutMix"]
P_MIN = 1e-3


def record(transform):
    """Make `transform` (torchvision's) log the parameters of each call."""
    log = []
    original = transform.make_params

    def make_params(flat_inputs):
        params = original(flat_inputs)
        log.append(params)
        return params

    transform.make_params = make_params
    return log


def as_fastmix_params(params):
    if "box" in params:
        x1, y1, x2, y2 = params["box"]
        return {"box": (y1, y2, x1, x2)}
    return {"lam": params["lam"]}


def run_both(their_cls, our_cls, *inputs, seed=0, **kwargs):
    """(torchvision's output, fastmix's output on torchvision's parameters) for the same inputs."""
    theirs_t = their_cls(**kwargs)
    log = record(theirs_t)
    torch.manual_seed(seed)
    theirs = theirs_t(*inputs)
    ours = our_cls(**kwargs)(*inputs, params=as_fastmix_params(log[-1]))
    return theirs, ours


def assert_same_output(theirs, ours, inputs, **tolerance):
    """Same structure; passed-through leaves are the input objects; mixed ones equal and same type."""
    flat_t, spec_t = tree_flatten(theirs)
    flat_o, spec_o = tree_flatten(ours)
    flat_in, _ = tree_flatten(inputs if len(inputs) > 1 else inputs[0])
    assert spec_t == spec_o
    for leaf_t, leaf_o, leaf_in in zip(flat_t, flat_o, flat_in):
        if leaf_t is leaf_in:
            assert leaf_o is leaf_in
            continue
        assert leaf_o is not leaf_in and type(leaf_o) is type(leaf_t)
        if isinstance(leaf_t, torch.Tensor):
            assert leaf_o.dtype == leaf_t.dtype and leaf_o.shape == leaf_t.shape
            assert leaf_o.stride() == leaf_t.stride()
            if tolerance:
                torch.testing.assert_close(leaf_o.as_subclass(torch.Tensor), leaf_t.as_subclass(torch.Tensor), **tolerance)
            else:
                assert torch.equal(leaf_o.as_subclass(torch.Tensor), leaf_t.as_subclass(torch.Tensor))
        else:
            assert leaf_o == leaf_t


def images(batch=6, dtype=torch.float32, size=(3, 10, 14), seed=0):
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        return torch.randint(0, 256, (batch, *size), generator=gen, dtype=torch.uint8)
    return torch.rand(batch, *size, generator=gen).to(dtype)


# ---- injected parameters ----------------------------------------------------------------------

@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8])
def test_images_and_labels_equal_on_torchvisions_draws(pair, dtype):
    their_cls, our_cls = pair
    x, y = images(dtype=dtype), torch.tensor([3, 0, 7, 1, 9, 4])
    if dtype == torch.uint8 and their_cls is v2.MixUp:
        with pytest.raises(RuntimeError):
            their_cls(num_classes=10)(x, y)  # torchvision cannot blend uint8; fastmix rounds (tested in tests/)
        return
    tolerance = {}
    if their_cls is v2.MixUp and dtype in (torch.float16, torch.bfloat16):
        eps = torch.finfo(dtype).eps
        tolerance = dict(rtol=eps, atol=eps)
    for seed in range(8):
        theirs, ours = run_both(their_cls, our_cls, x, y, seed=seed, num_classes=10, alpha=0.7)
        assert_same_output(theirs, ours, (x, y), **tolerance)


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_label_forms_tv_tensor_types_and_layouts(pair):
    their_cls, our_cls = pair
    x = images(8).contiguous(memory_format=torch.channels_last)
    probabilities = torch.softmax(torch.randn(8, 5, generator=torch.Generator().manual_seed(1)), 1)
    one_hot_int = torch.eye(5, dtype=torch.long)[torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])]  # 2-D integer labels
    for labels in (probabilities, probabilities.double(), probabilities.half(), one_hot_int):
        theirs, ours = run_both(their_cls, our_cls, x, labels, seed=2)
        assert_same_output(theirs, ours, (x, labels))
    image, video = tv_tensors.Image(images(4)), tv_tensors.Video(torch.rand(4, 2, 3, 10, 14))
    y = torch.tensor([1, 2, 3, 0])
    for sample in ((image, y), (video, y), {"image": image, "video": video, "labels": y}):
        theirs, ours = run_both(their_cls, our_cls, sample, seed=3, num_classes=4)
        assert_same_output(theirs, ours, (sample,))


def leaf_rule_samples():
    x, aux, y = images(4), images(4, seed=1), torch.tensor([0, 1, 2, 3])
    image, image2 = tv_tensors.Image(images(4, seed=2)), tv_tensors.Image(images(4, seed=3))
    video = tv_tensors.Video(torch.rand(4, 2, 3, 10, 14))
    return {
        "tuple": (x, y),
        "aux after": (x, y, aux),
        "aux before image": (aux, image, y),
        "two images": {"a": aux, "img": image, "img2": image2, "labels": y, "s": "text", "n": 3, "none": None},
        "image and video": [image, video, y],
        "nested": (x, {"labels": y, "extra": aux, "boxes_count": 2}),
        "labels first": {"labels": y, "image": x},
        "pure tensors only": [x, aux, y, aux],
        "custom TVTensor": {"image": image, "other": torch.rand(4, 2).as_subclass(tv_tensors.TVTensor), "labels": y},
    }


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
@pytest.mark.parametrize("name", list(leaf_rule_samples()))
def test_leaf_selection_rule_is_torchvisions(pair, name):
    their_cls, our_cls = pair
    sample = leaf_rule_samples()[name]
    third = lambda s: s[2]  # noqa: E731
    getter = {"aux before image": third, "image and video": third, "pure tensors only": third}.get(name, "default")
    try:
        theirs, ours = run_both(their_cls, our_cls, sample, seed=4, num_classes=4, labels_getter=getter)
    except Exception as error:  # a sample torchvision rejects must be rejected alike
        with pytest.raises(type(error)):
            our_cls(num_classes=4, labels_getter=getter)(sample)
        assert (name, their_cls) == ("labels first", v2.CutMix)  # the only rejected sample here
        return
    assert_same_output(theirs, ours, (sample,))


def test_numpy_num_classes_and_empty_batches():
    for their_cls, our_cls in PAIRS:
        x, y = images(5), torch.tensor([1, 0, 2, 2, 1])
        theirs, ours = run_both(their_cls, our_cls, x, y, seed=5, num_classes=np.int64(3))
        assert_same_output(theirs, ours, (x, y))
        for labels in (torch.zeros(0, dtype=torch.long), torch.zeros(0, 3)):
            empty = torch.zeros(0, 3, 8, 8)
            theirs, ours = run_both(their_cls, our_cls, empty, labels, seed=6, num_classes=3)
            assert_same_output(theirs, ours, (empty, labels))


# ---- errors ---------------------------------------------------------------------------------------

def error_cases():
    x, y = images(9, size=(3, 12, 12)), torch.arange(9)
    return {
        "PIL": lambda: (F.to_pil_image(x[0]),),
        "mask": lambda: (tv_tensors.Mask(torch.rand(12, 12)),),
        "boxes": lambda: (tv_tensors.BoundingBoxes(torch.rand(2, 4), format="XYXY", canvas_size=12),),
        "keypoints": lambda: (x, y, tv_tensors.KeyPoints(torch.rand(2, 2), canvas_size=(12, 12))),
        "mask beside labels": lambda: (x, y, tv_tensors.Mask(torch.rand(9, 12, 12))),
        "no label key": lambda: ({"img": x, "Nothing_else": 3},),
        "images as labels": lambda: (x,),
        "labels not a tensor": lambda: (x, "not_a_tensor"),
        "2-D labels, other num_classes": lambda: (x, torch.randint(0, 2, size=(2, 3))),
        "3-D labels": lambda: (x, torch.zeros(9, 2, 2)),
        "6-D images": lambda: (x[None, None], torch.arange(9)),
        "batch mismatch": lambda: (x, torch.arange(10)),
        "video with 4 dims": lambda: (tv_tensors.Video(x), y),
        "labels out of range": lambda: (x, torch.arange(9) + 5),
        "int32 labels": lambda: (x, y.int()),
        "labels first (CutMix: 1-D size)": lambda: ({"labels": y, "image": x},),
        "two H x W": lambda: ({"a": tv_tensors.Image(x), "b": tv_tensors.Image(images(9, size=(3, 8, 12))),
                               "labels": y},),
        "labels tuple too short": lambda: ((x,),),
    }


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
@pytest.mark.parametrize("case", list(error_cases()))
def test_errors_match_torchvisions(pair, case):
    their_cls, our_cls = pair
    inputs = error_cases()[case]()
    torch.manual_seed(0)
    try:
        their_cls(alpha=0.5, num_classes=10)(*inputs)
    except Exception as error:
        theirs = error
    else:
        theirs = None
    if theirs is None:
        our_cls(alpha=0.5, num_classes=10)(*inputs)  # accepted by both
        return
    with pytest.raises(type(theirs)) as ours:
        our_cls(alpha=0.5, num_classes=10)(*inputs)
    assert isinstance(ours.value, type(theirs))
    if isinstance(theirs, IndexError):  # torchvision's bare "tuple index out of range"; fastmix explains
        assert "labels_getter" in str(ours.value)
        return
    head = str(theirs).split(" but got ")[0].split(" instead")[0][:60]
    assert head in str(ours.value), (str(theirs), str(ours.value))


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_constructor_errors_and_labels_getter_none(pair):
    their_cls, our_cls = pair
    for kwargs in (dict(alpha=0.0), dict(alpha=-1.0), dict(alpha=float("nan")), dict(labels_getter="first")):
        with pytest.raises(ValueError):
            their_cls(**kwargs)
        with pytest.raises(ValueError):
            our_cls(**kwargs)
    x = images(4)
    with pytest.raises(ValueError, match="The labels must be a tensor") as theirs:
        their_cls(num_classes=3, labels_getter=None)(x, torch.arange(4))
    with pytest.raises(ValueError, match="The labels must be a tensor"):
        our_cls(num_classes=3, labels_getter=None)(x, torch.arange(4))
    assert "NoneType" in str(theirs.value)


def test_compose_twice_behaves_as_torchvisions():
    x, y = images(9, size=(3, 12, 12)), torch.arange(9) % 10
    for their_cls, our_cls in PAIRS:
        torch.manual_seed(0)
        theirs = v2.Compose([their_cls(num_classes=10), their_cls(num_classes=10)])(x, y)
        ours = v2.Compose([our_cls(num_classes=10), our_cls(num_classes=10)])(x, y)
        assert [t.shape for t in theirs] == [o.shape for o in ours]
        torch.testing.assert_close(ours[1].sum(1), torch.ones(9))


# ---- torchvision's TestCutMixMixUp conditions ------------------------------------------------------

class DistinctLabels(torch.utils.data.Dataset):
    """Labels 0..size-1 (size < num_classes), so each mixed row has exactly two non-zero classes."""

    def __init__(self, size):
        self.size = size

    def __getitem__(self, index):
        return torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(index)), index

    def __len__(self):
        return self.size


@pytest.mark.parametrize("cls", [compat.MixUp, compat.CutMix], ids=IDS)
def test_supported_input_structures(cls):
    batch, num_classes = 16, 50
    transform = cls(num_classes=num_classes, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(DistinctLabels(batch), batch_size=batch)

    def check(output):
        img, target = output
        assert img.shape == (batch, 3, 20, 20) and target.shape == (batch, num_classes)
        torch.testing.assert_close(target.sum(-1), torch.ones(batch))
        assert bool(((target != 0).sum(-1) == 2).all())

    img, target = next(iter(loader))
    check(transform(img, target))  # unpacked
    packed = next(iter(loader))
    assert isinstance(packed, list)
    check(transform(packed))  # packed as the DataLoader returns it
    for collate_fn in (lambda b: transform(default_collate(b)), lambda b: transform(*default_collate(b))):
        check(next(iter(DataLoader(DistinctLabels(batch), batch_size=batch, collate_fn=collate_fn))))


@pytest.mark.parametrize("key", ["labels", "LABELS", "LaBeL", "SOME_WEIRD_KEY_THAT_HAS_LABeL_IN_IT"])
@pytest.mark.parametrize("container", [tuple, list, dict])
def test_labels_getter_default_heuristic(key, container):
    labels = torch.arange(10)
    sample = {key: labels, "another_key": "whatever"}
    if container is not dict:
        sample = container((None, sample, "whatever_again"))
    assert compat.default_labels_getter(sample) is labels is _find_labels_default_heuristic(sample)
    if key.lower() != "labels":
        both = {key: "something_else", "labels": labels}
        assert compat.default_labels_getter(both) is labels is _find_labels_default_heuristic(both)


# ---- free draws: distributions ------------------------------------------------------------------

def test_mixup_lam_distribution_matches_torchvisions():
    torch.manual_seed(0)
    theirs_t = v2.MixUp(alpha=0.4)
    theirs = [theirs_t.make_params([])["lam"] for _ in range(4000)]
    ours_t = compat.MixUp(alpha=0.4, generator=torch.Generator().manual_seed(0))
    ours = [ours_t.make_params()["lam"] for _ in range(4000)]
    assert stats.ks_2samp(theirs, ours).pvalue > P_MIN


def test_cutmix_box_distribution_matches_torchvisions():
    x = torch.zeros(2, 1, 24, 30)
    torch.manual_seed(0)
    theirs_t = v2.CutMix(alpha=1.0)
    theirs = [theirs_t.make_params([x]) for _ in range(5000)]
    ours_t = compat.CutMix(alpha=1.0, generator=torch.Generator().manual_seed(0))
    ours = [ours_t.make_params(x) for _ in range(5000)]
    features_t = {"lam": [p["lam_adjusted"] for p in theirs], "x1": [p["box"][0] for p in theirs],
                  "y1": [p["box"][1] for p in theirs], "width": [p["box"][2] - p["box"][0] for p in theirs],
                  "height": [p["box"][3] - p["box"][1] for p in theirs]}
    features_o = {"lam": [p["lam"] for p in ours], "x1": [p["box"][2] for p in ours], "y1": [p["box"][0] for p in ours],
                  "width": [p["box"][3] - p["box"][2] for p in ours], "height": [p["box"][1] - p["box"][0] for p in ours]}
    for name in features_t:
        assert stats.ks_2samp(features_t[name], features_o[name]).pvalue > P_MIN, name
