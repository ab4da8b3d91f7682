import numpy as np
import pytest

from seer.imaging.views import VIEW_SIZE, normalize_slice, slice_indices, take_views


@pytest.mark.parametrize("depth", [8, 20, 30, 112, 181])
def test_slice_indices_follow_the_contract(depth):
    expected = np.round(np.linspace(round(0.10 * (depth - 1)), round(0.90 * (depth - 1)), 8)).astype(int)
    assert slice_indices(depth) == expected.tolist()


def test_181_slices():
    assert slice_indices(181) == [18, 39, 59, 80, 100, 121, 141, 162]


def test_normalization_clips_percentiles_and_applies_gamma_1_4():
    sl = np.linspace(0, 1000, 100 * 100, dtype=np.float32).reshape(100, 100)
    out = normalize_slice(sl)
    lo, hi = np.percentile(sl, (0.5, 99.5))
    x = np.clip((sl - lo) / (hi - lo), 0, 1)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, (x**1.4 * 255).astype(np.uint8))
    assert out.min() == 0 and out.max() == 255


def test_constant_slice_is_black():
    assert normalize_slice(np.full((5, 5), 7.0)).max() == 0


def test_views_are_eight_448_rgb_images_in_slice_order():
    volume = np.random.default_rng(0).normal(size=(40, 50, 30)).astype(np.float32)
    volume[:, :, :] += np.arange(30)[None, None, :]
    views = take_views(volume)
    images = views.images()
    assert len(images) == 8
    assert all(im.size == (VIEW_SIZE, VIEW_SIZE) and im.mode == "RGB" for im in images)
    assert views.indices == slice_indices(30)
    np.testing.assert_array_equal(views.slices[0], volume[:, :, views.indices[0]])
