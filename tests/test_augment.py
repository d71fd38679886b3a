"""Augmenter views and the plain tensor augmentations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lnlclean.data.augment import Augmenter, color_jitter, cutout, random_flip, random_translate

MEAN = torch.tensor([0.2, 0.4, 0.6])
STD = torch.tensor([0.5, 0.25, 0.1])


def raw_batch(batch: int = 6, size: int = 8, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, size=(batch, size, size, 3), dtype=np.uint8))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_views_keep_shape_and_are_float():
    aug = Augmenter(MEAN, STD, flip=True)
    raw = raw_batch(5, 8)
    for view in (aug.clean(raw), aug.weak(raw, gen(0)), aug.strong(raw, gen(0))):
        assert view.shape == (5, 3, 8, 8)
        assert view.dtype == torch.float32
        assert view.is_contiguous(memory_format=torch.channels_last)
        assert torch.isfinite(view).all()


def test_clean_is_normalised_and_deterministic():
    aug = Augmenter(MEAN, STD)
    raw = raw_batch()
    out = aug.clean(raw)
    expected = (raw.permute(0, 3, 1, 2).double() / 255.0 - MEAN.double().view(1, 3, 1, 1)) / STD.double().view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(aug.clean(raw), out, rtol=0, atol=0)
    # the input is not modified
    np.testing.assert_array_equal(raw.numpy(), raw_batch().numpy())


def test_to_unit_range():
    aug = Augmenter(MEAN, STD)
    raw = torch.tensor([[[[0, 255, 51]]]], dtype=torch.uint8)  # 1×1×1×3
    unit = aug.to_unit(raw)
    assert unit.shape == (1, 3, 1, 1)
    torch.testing.assert_close(unit.flatten(), torch.tensor([0.0, 1.0, 0.2]))


@pytest.mark.parametrize("flip", [True, False])
def test_weak_reproducible_and_differs_from_clean(flip):
    aug = Augmenter(MEAN, STD, flip=flip)
    raw = raw_batch(16, 8)
    a = aug.weak(raw, gen(42))
    b = aug.weak(raw, gen(42))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, aug.clean(raw))
    assert not torch.equal(a, aug.weak(raw, gen(43)))


def test_weak_values_come_from_the_image():
    # translation (and flip) move pixels around but never invent values
    aug = Augmenter(MEAN, STD, flip=True)
    raw = raw_batch(8, 8)
    clean, weak = aug.clean(raw), aug.weak(raw, gen(1))
    for i in range(len(raw)):
        for c in range(3):
            allowed = set(np.round(clean[i, c].numpy().ravel(), 5))
            assert set(np.round(weak[i, c].numpy().ravel(), 5)) <= allowed


def test_strong_reproducible():
    aug = Augmenter(MEAN, STD)
    raw = raw_batch(8, 16)
    torch.testing.assert_close(aug.strong(raw, gen(5)), aug.strong(raw, gen(5)), rtol=0, atol=0)
    assert not torch.equal(aug.strong(raw, gen(5)), aug.weak(raw, gen(5)))


def test_fit_measures_channel_statistics():
    images = np.zeros((4, 2, 2, 3), dtype=np.uint8)
    images[..., 0] = 255
    images[:2, :, :, 1] = 255  # half the pixels on
    aug = Augmenter.fit(images, torch.device("cpu"), flip=False)
    torch.testing.assert_close(aug.mean.flatten(), torch.tensor([1.0, 0.5, 0.0]))
    expected_std = torch.tensor(images[..., 1].astype(np.float32) / 255.0).flatten().std()
    torch.testing.assert_close(aug.std.flatten(), torch.tensor([1e-3, float(expected_std), 1e-3]))
    assert aug.flip is False
    assert aug.clean(torch.from_numpy(images)).shape == (4, 3, 2, 2)


# ---------------------------------------------------------------- translation


def test_translate_constant_image_stays_constant():
    unit = torch.full((4, 3, 8, 8), 0.25)
    unit[:, 1] = 0.5
    out = random_translate(unit, 2, gen(0))
    assert out.shape == unit.shape
    torch.testing.assert_close(out, unit, rtol=0, atol=0)


def test_translate_is_window_of_reflect_padded_input():
    pad = 2
    unit = torch.rand(12, 3, 8, 8, generator=gen(3))
    out = random_translate(unit, pad, gen(4))
    padded = F.pad(unit, (pad, pad, pad, pad), mode="reflect")
    shifts = set()
    for i in range(len(unit)):
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])
        ]
        assert matches, f"image {i} is not a window of the padded input"
        shifts.add(matches[0])
    assert len(shifts) > 1  # offsets differ per image
    torch.testing.assert_close(out, random_translate(unit, pad, gen(4)), rtol=0, atol=0)


def test_flip_mirrors_some_images():
    unit = torch.rand(16, 3, 4, 4, generator=gen(0))
    out = random_flip(unit, gen(1))
    mirrored = [torch.equal(out[i], unit[i].flip(2)) for i in range(16)]
    kept = [torch.equal(out[i], unit[i]) for i in range(16)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert any(mirrored) and any(kept)


def test_color_jitter_range_and_shape():
    unit = torch.rand(8, 3, 6, 6, generator=gen(0))
    out = color_jitter(unit.clone(), gen(1))
    assert out.shape == unit.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.equal(out, unit)
    gray = color_jitter(torch.rand(2, 1, 4, 4, generator=gen(0)), gen(1))
    assert gray.shape == (2, 1, 4, 4)


# ---------------------------------------------------------------- cutout


def filled_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return rows[0], rows[-1], cols[0], cols[-1]


def test_cutout_sets_a_square_region_to_fill():
    unit = torch.rand(32, 3, 16, 16, generator=gen(0)) * 0.5 + 0.25  # in [0.25, 0.75]
    fill = torch.tensor([-1.0, -2.0, -3.0]).view(1, 3, 1, 1)
    out = cutout(unit, gen(1), fill=fill)
    assert out.shape == unit.shape
    for i in range(len(unit)):
        mask = (out[i, 0] == -1.0).numpy()
        assert mask.any()
        # same region in every channel, with each channel's fill value
        for c in range(3):
            assert ((out[i, c] == fill.flatten()[c]).numpy() == mask).all()
        # everything else is untouched
        keep = torch.from_numpy(~mask)
        assert torch.equal(out[i][:, keep], unit[i][:, keep])
        # the region is a full axis-aligned rectangle, square unless clipped at the border
        top, bottom, left, right = filled_box(mask)
        assert mask[top : bottom + 1, left : right + 1].all() and mask.sum() == (bottom - top + 1) * (right - left + 1)
        h, w = bottom - top + 1, right - left + 1
        if 0 < top and bottom < 15 and 0 < left and right < 15:
            assert h == w
        assert max(h, w) <= 16 // 2 + 1


def test_cutout_square_side_is_half_the_image():
    unit = torch.zeros(64, 1, 16, 16)
    out = cutout(unit, gen(2), fill=torch.ones(1, 1, 1, 1))
    sides = set()
    for i in range(len(unit)):
        top, bottom, left, right = filled_box(out[i, 0].numpy() == 1.0)
        if 0 < top and bottom < 15 and 0 < left and right < 15:  # not clipped at the border
            sides.add((bottom - top + 1, right - left + 1))
    assert sides, "no unclipped square drawn"
    assert sides == {(8, 8)}


def test_cutout_reproducible():
    unit = torch.rand(4, 3, 8, 8, generator=gen(0))
    fill = torch.zeros(1, 3, 1, 1)
    torch.testing.assert_close(cutout(unit, gen(9), fill), cutout(unit, gen(9), fill), rtol=0, atol=0)
