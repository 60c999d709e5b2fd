"""Copy-Paste property tests on random layouts: fastmix against the per-image NumPy reference
(benchmarks/reference_copy_paste.py) on the same drawn parameters, plus the invariants of the
rules (alpha, occlusion, boxes, the drop rule)."""
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.reference_copy_paste import reference_copy_paste
from fastmix.copy_paste import InstanceBatch, copy_paste, masks_to_boxes


@st.composite
def layouts(draw):
    """A batch of 1-3 images (sizes may differ) with 0-5 rectangle or ellipse objects each."""
    batch = draw(st.integers(1, 3))
    same_size = draw(st.booleans())
    base = (draw(st.integers(8, 40)), draw(st.integers(8, 40)))
    images, masks, labels = [], [], []
    seed = draw(st.integers(0, 2**31 - 1))
    gen = np.random.default_rng(seed)
    for _ in range(batch):
        h, w = base if same_size else (draw(st.integers(8, 40)), draw(st.integers(8, 40)))
        count = draw(st.integers(0, 5))
        image_masks = np.zeros((count, h, w), dtype=bool)
        yy, xx = np.mgrid[:h, :w]
        for n in range(count):
            y1, x1 = gen.integers(0, h), gen.integers(0, w)
            y2, x2 = gen.integers(y1 + 1, h + 1), gen.integers(x1 + 1, w + 1)
            if gen.random() < 0.5:
                image_masks[n, y1:y2, x1:x2] = True
            else:  # an ellipse inscribed in the box (may be one pixel)
                cy, cx, ry, rx = (y1 + y2 - 1) / 2, (x1 + x2 - 1) / 2, (y2 - y1) / 2, (x2 - x1) / 2
                image_masks[n] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        images.append(torch.from_numpy(gen.integers(0, 256, (3, h, w), dtype=np.uint8)))
        masks.append(torch.from_numpy(image_masks))
        labels.append(torch.from_numpy(gen.integers(0, 80, count)))
    output_size = base if same_size and draw(st.booleans()) else (draw(st.integers(8, 40)), draw(st.integers(8, 40)))
    return images, masks, labels, output_size


options = st.fixed_dictionaries({
    "scale_range": st.sampled_from([(0.1, 2.0), (1.0, 1.0), (0.5, 0.8), (1.2, 2.0)]),
    "flip_prob": st.sampled_from([0.0, 0.5, 1.0]),
    "bbox_occluded_thr": st.sampled_from([0, 2, 10]),
    "mask_occluded_thr": st.sampled_from([0, 20, 300]),
    "blend": st.sampled_from(["hard", "gaussian"]),
    "paste_fraction": st.sampled_from([None, 0.5, 1.0]),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=layouts(), opts=options, seed=st.integers(0, 2**31 - 1))
def test_matches_the_per_image_reference_and_keeps_the_invariants(layout, opts, seed):
    images, masks, labels, output_size = layout
    batch = InstanceBatch.from_lists(images, masks, labels=labels)
    out = copy_paste(batch, output_size=output_size, generator=torch.Generator().manual_seed(seed),
                     blend_kernel_size=3, backend="pytorch", **opts)

    samples = [{"image": im.permute(1, 2, 0).numpy(), "masks": m.numpy(), "labels": lab.numpy()}
               for im, m, lab in zip(images, masks, labels)]
    ref_options = {k: opts[k] for k in ("bbox_occluded_thr", "mask_occluded_thr", "blend")}
    reference = reference_copy_paste(samples, out.params, output_size, blend_kernel_size=3, **ref_options)

    height, width = output_size
    hard_alpha = out.alpha > 0 if opts["blend"] == "hard" else None
    for i, ref in enumerate(reference):
        assert np.array_equal(out.masks[i].numpy(), ref["masks"])
        assert np.array_equal(out.boxes[i].numpy(), ref["boxes"])
        assert np.array_equal(out.labels[i].numpy(), ref["labels"])
        diff = np.abs(out.images[i].permute(1, 2, 0).numpy().astype(int) - ref["image"].astype(int))
        assert diff.max(initial=0) <= 1  # uint8 rounding of float32 values computed in another order

        # invariants of the rules
        m = out.masks[i]
        assert m.shape[1:] == (height, width)
        assert bool(m.flatten(1).any(1).all()), "every output object has pixels"
        assert torch.equal(out.boxes[i], masks_to_boxes(m))
        kept = int(out.kept[i].sum())
        pasted_masks = m[kept:]
        union = pasted_masks.any(0) if len(pasted_masks) else torch.zeros(height, width, dtype=torch.bool)
        if hard_alpha is not None:
            assert torch.equal(union, hard_alpha[i]), "alpha is the union of the pasted masks"
            assert not bool((m[:kept] & hard_alpha[i]).any()), "receiving masks lose the pasted pixels"
        assert kept + int(out.pasted[i].sum()) == m.shape[0]
        assert out.pasted[i].sum() <= out.params.selected[i].sum()
