"""fine_grained_saliency must equal OpenCV's StaticSaliencyFineGrained bit for bit on uint8 input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2, "saliency"):
    pytest.skip("needs opencv-contrib (cv2.saliency)", allow_module_level=True)

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fastmix.backends.pytorch import fine_grained_saliency as fgs  # noqa: E402
from fastmix.backends.pytorch.fine_grained_saliency import (  # noqa: E402
    MAX_WIDTH,
    fine_grained_saliency,
    rgb_to_grey_uint8,
)

_SALIENCY = cv2.saliency.StaticSaliencyFineGrained_create()


def opencv_saliency(image: np.ndarray) -> np.ndarray:
    """OpenCV on one uint8 image: HxWx3 RGB (passed to OpenCV as BGR) or HxW grey."""
    if image.ndim == 3:
        image = np.ascontiguousarray(image[..., ::-1])
    ok, sal = _SALIENCY.computeSaliency(image)
    assert ok
    assert sal.dtype == np.float32 and sal.shape == image.shape[:2]
    return sal


def to_nchw(images_bhwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images_bhwc)).permute(0, 3, 1, 2)


def check_against_opencv(images_bhwc: np.ndarray) -> None:
    """Batch call in torch == one OpenCV call per image, exactly; input left untouched."""
    x = to_nchw(images_bhwc)
    before = x.clone()
    out = fine_grained_saliency(x)
    assert torch.equal(x, before)
    assert out.dtype == torch.float32 and out.shape == (x.shape[0], x.shape[2], x.shape[3])
    ref = np.stack([opencv_saliency(img) for img in images_bhwc])
    np.testing.assert_array_equal(out.numpy(), ref)


def random_images(rng: np.random.Generator, b: int, h: int, w: int, kind: str = "noise") -> np.ndarray:
    if kind == "noise":
        return rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8)
    if kind == "bright":  # integral image above 2^24 sooner: float32 rounding in OpenCV's integral
        return np.clip(rng.integers(0, 256, (b, h, w, 3)) + 150, 0, 255).astype(np.uint8)
    if kind == "blocky":  # smooth-ish structure at several scales
        small = rng.integers(0, 256, (b, max(1, h // 7), max(1, w // 5), 3), dtype=np.uint8)
        big = np.stack([cv2.resize(s, (w, h), interpolation=cv2.INTER_NEAREST).reshape(h, w, 3) for s in small])
        return np.clip(big.astype(np.int64) + rng.integers(-8, 9, big.shape), 0, 255).astype(np.uint8)
    if kind == "lowcontrast":
        return rng.integers(100, 104, (b, h, w, 3), dtype=np.uint8)
    raise AssertionError(kind)


# --- colour conversion ---------------------------------------------------------------------------


def test_rgb_to_grey_matches_cvtcolor_on_all_colours():
    v = torch.arange(1 << 24, dtype=torch.int32)
    rgb = torch.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255]).to(torch.uint8).reshape(1, 3, 4096, 4096)
    grey = rgb_to_grey_uint8(rgb)
    assert grey.dtype == torch.uint8 and grey.shape == (1, 4096, 4096)
    bgr = np.ascontiguousarray(rgb[0].permute(1, 2, 0).numpy()[..., ::-1])
    np.testing.assert_array_equal(grey[0].numpy(), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))


def test_rgb_to_grey_accepts_grey_and_copies():
    g = torch.randint(0, 256, (2, 1, 5, 6), dtype=torch.uint8)
    out = rgb_to_grey_uint8(g)
    assert torch.equal(out, g[:, 0])
    out[0, 0, 0] ^= 1
    assert not torch.equal(out, g[:, 0])  # a copy, not a view


# --- against OpenCV ------------------------------------------------------------------------------

TINY = [(1, 1), (1, 2), (2, 1), (1, 5), (5, 1), (2, 2), (2, 3), (3, 2), (3, 3), (4, 4), (5, 7), (7, 5)]


@pytest.mark.parametrize("h,w", TINY)
def test_tiny_images_match_opencv(h, w):
    rng = np.random.default_rng(h * 100 + w)
    check_against_opencv(random_images(rng, 4, h, w))


def test_one_pixel_image_is_zero():
    # OpenCV: the only box is the pixel itself, (sum - centre) / (1 - 1) = 0/0 = NaN -> on = off = 0.
    x = torch.tensor([[[[7]], [[200]], [[99]]]], dtype=torch.uint8)
    assert fine_grained_saliency(x).tolist() == [[[0.0]]]


@pytest.mark.parametrize(
    "h,w,kind",
    [
        (32, 32, "noise"),
        (64, 48, "noise"),
        (48, 64, "blocky"),
        (33, 97, "noise"),
        (97, 33, "blocky"),
        (130, 70, "lowcontrast"),
        (31, 250, "blocky"),
        (300, 301, "bright"),  # beyond 2^24 in the float32 integral image
        (150, 900, "bright"),
    ],
)
def test_batch_matches_per_image_opencv(h, w, kind):
    rng = np.random.default_rng(h * 1000 + w)
    check_against_opencv(random_images(rng, 3, h, w, kind))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 100),
    w=st.integers(1, 100),
    kind=st.sampled_from(["noise", "blocky", "lowcontrast"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_shapes_match_opencv(b, h, w, kind, seed):
    check_against_opencv(random_images(np.random.default_rng(seed), b, h, w, kind))


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_natural_photos_match_opencv(name):
    data = pytest.importorskip("skimage.data")
    photo = getattr(data, name)()  # 512x512 and 400x600: also exercises float32 integral rounding
    half = cv2.resize(photo, (photo.shape[1] // 2, photo.shape[0] // 2), interpolation=cv2.INTER_AREA)
    check_against_opencv(photo[None])
    check_against_opencv(np.stack([half, half[::-1, ::-1], 255 - half]))


def test_grey_inputs_match_opencv():
    rng = np.random.default_rng(3)
    grey = random_images(rng, 3, 41, 29, "blocky")[..., 0]
    ref = np.stack([opencv_saliency(g) for g in grey])
    t = torch.from_numpy(grey)
    np.testing.assert_array_equal(fine_grained_saliency(t).numpy(), ref)
    np.testing.assert_array_equal(fine_grained_saliency(t[:, None]).numpy(), ref)


def test_rgb_equals_grey_of_it():
    rng = np.random.default_rng(4)
    x = to_nchw(random_images(rng, 2, 23, 37))
    assert torch.equal(fine_grained_saliency(x), fine_grained_saliency(rgb_to_grey_uint8(x)))


def test_constant_images_give_zero_like_opencv():
    imgs = np.stack([np.full((20, 30, 3), v, np.uint8) for v in (0, 77, 255)])
    check_against_opencv(imgs)
    assert not fine_grained_saliency(to_nchw(imgs)).any()


def _rings(size, cy, cx, background, rings):
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - cy, xx - cx)
    img = np.full((size, size), background, np.uint8)
    for r0, r1, v in rings:
        img[(r >= r0) & (r < r1)] = v
    return img


def test_on_plus_off_wraps_modulo_256_like_opencv():
    # On this image some pixel has rescaled on + off = 264 > 255. OpenCV's (uchar) cast of the
    # double keeps the low byte (8); it does not saturate.
    img = _rings(49, 18, 44, 92, [(36.0, 44.1, 86), (44.6, 51.8, 76)])
    x = torch.from_numpy(img)[None, None]
    grey = fgs._gaussian_blur_3x3(fgs._gaussian_blur_3x3(fgs._grey_int32(x)))
    integral, grey_f = fgs._integral_float32(grey), grey.to(torch.float32)
    sums = [torch.zeros_like(grey), torch.zeros_like(grey)]
    for n in fgs.NEIGHBOURHOODS:
        for acc, part in zip(sums, fgs._on_off_scale(integral, grey_f, n)):
            acc += part
    assert int((fgs._rescale_to_255(sums[0]) + fgs._rescale_to_255(sums[1])).max()) > 255
    np.testing.assert_array_equal(fine_grained_saliency(x)[0].numpy(), opencv_saliency(img))


def test_integer_rescale_equals_float32_divide_double_truncate():
    # mixScales computes (uchar)(255. * (float)(v / (float)m)) for 0 <= v <= m <= 6*255.
    # The integer form used by the implementation must agree on every pair.
    m = torch.arange(1, 6 * 255 + 1)
    v = torch.arange(0, 6 * 255 + 1)
    vv, mm = torch.meshgrid(v, m, indexing="ij")
    keep = vv <= mm
    vv, mm = vv[keep], mm[keep]
    reference = (255.0 * (vv.to(torch.float32) / mm.to(torch.float32)).to(torch.float64)).trunc().to(torch.int64)
    assert torch.equal(torch.div(255 * vv, mm, rounding_mode="floor"), reference)


def test_output_scale_is_opencv_multiply_by_float32_reciprocal():
    # OpenCV returns uint8 * float32(1/255); that differs from uint8 / 255 for 126 of 256 values.
    x = torch.zeros((1, 1, 16, 16), dtype=torch.uint8)
    x[0, 0, 6:10, 6:10] = 255
    out = fine_grained_saliency(x)
    values = torch.unique(out)
    levels = torch.arange(256, dtype=torch.float32) * torch.tensor(1 / 255, dtype=torch.float32)
    assert torch.isin(values, levels).all()
    np.testing.assert_array_equal(out[0].numpy(), opencv_saliency(x[0, 0].numpy()))


def test_non_contiguous_input():
    rng = np.random.default_rng(5)
    imgs = random_images(rng, 2, 19, 26)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2)  # channels-last view, not contiguous
    assert not x.is_contiguous()
    ref = np.stack([opencv_saliency(i) for i in imgs])
    np.testing.assert_array_equal(fine_grained_saliency(x).numpy(), ref)
    np.testing.assert_array_equal(fine_grained_saliency(x[:, :, ::2, ::3]).numpy(),
                                  np.stack([opencv_saliency(np.ascontiguousarray(i[::2, ::3])) for i in imgs]))


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int32, torch.int8, torch.bool])
def test_non_uint8_is_a_type_error(dtype):
    with pytest.raises(TypeError, match="uint8"):
        fine_grained_saliency(torch.zeros((1, 3, 8, 8), dtype=dtype))
    with pytest.raises(TypeError, match="uint8"):
        rgb_to_grey_uint8(torch.zeros((1, 3, 8, 8), dtype=dtype))


def test_non_tensor_is_a_type_error():
    with pytest.raises(TypeError):
        fine_grained_saliency(np.zeros((1, 3, 8, 8), np.uint8))


@pytest.mark.parametrize("shape", [(8, 8), (3, 8, 8, 1, 1), (1, 2, 8, 8), (1, 4, 8, 8), (8,)])
def test_bad_shapes_are_value_errors(shape):
    with pytest.raises(ValueError):
        fine_grained_saliency(torch.zeros(shape, dtype=torch.uint8))


@pytest.mark.parametrize("shape", [(0, 3, 8, 8), (0, 8, 8), (2, 3, 0, 8), (2, 1, 8, 0), (2, 8, 0)])
def test_empty_inputs_are_value_errors(shape):
    with pytest.raises(ValueError):
        fine_grained_saliency(torch.zeros(shape, dtype=torch.uint8))


def test_grey_conversion_rejects_grey_3d_and_bad_channels():
    with pytest.raises(ValueError):
        rgb_to_grey_uint8(torch.zeros((2, 8, 8), dtype=torch.uint8))
    with pytest.raises(ValueError):
        rgb_to_grey_uint8(torch.zeros((2, 4, 8, 8), dtype=torch.uint8))
    with pytest.raises(ValueError):
        rgb_to_grey_uint8(torch.zeros((0, 3, 8, 8), dtype=torch.uint8))


def test_too_wide_is_a_value_error():
    with pytest.raises(ValueError, match="width"):
        fine_grained_saliency(torch.zeros((1, 1, 1, MAX_WIDTH + 1), dtype=torch.uint8))


# --- device --------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_matches_cpu_bit_exactly():
    rng = np.random.default_rng(6)
    x = to_nchw(np.concatenate([random_images(rng, 3, 300, 301, "bright"), random_images(rng, 3, 300, 301)]))
    out = fine_grained_saliency(x.cuda())
    assert out.device.type == "cuda"
    assert torch.equal(out.cpu(), fine_grained_saliency(x))
