import numpy as np
import pytest

from brainxai.threshold import (confirmed_components, dice, percentile_threshold, significant_components,
                                threshold_heatmap)


def test_percentile_threshold_counts_only_the_region():
    heat = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    region = np.zeros_like(heat, bool)
    region[:5] = True  # values 0..499
    assert percentile_threshold(heat, region, 90) == pytest.approx(np.percentile(np.arange(500), 90))
    with pytest.raises(ValueError):
        percentile_threshold(heat, region, 100)


def test_speckle_dropped_and_second_focus_kept():
    m = np.zeros((30, 60, 60), bool)
    m[5:15, 5:25, 5:25] = True  # 4.0 mL at 1 mm
    m[5:12, 40:55, 40:52] = True  # 1.26 mL, > 10% of the largest: a genuine second focus
    m[25, 50, 50] = True  # single-voxel speckle
    kept = significant_components(m, (1.0, 1.0, 1.0))
    assert kept[10, 10, 10] and kept[8, 45, 45] and not kept[25, 50, 50]


def test_only_components_on_a_tumour_slice_are_kept():
    m = np.zeros((20, 30, 30), bool)
    m[2:9, 5:10, 5:10] = True  # crosses slices 2-8: slice 6 is classified a tumour
    m[12:18, 20:25, 20:25] = True  # slices 12-17: none is
    confirmed = np.zeros(20, bool)
    confirmed[6] = True
    kept = confirmed_components(m, confirmed)
    assert kept[2:9, 5:10, 5:10].all()  # the whole blob, also its slices the classifier missed
    assert not kept[12:].any()
    assert not confirmed_components(m, np.zeros(20, bool)).any()
    assert not confirmed_components(np.zeros_like(m), np.ones(20, bool)).any()


def test_threshold_never_leaves_region_and_marks_top_decile():
    rng = np.random.default_rng(1)
    heat = rng.random((20, 40, 40)).astype(np.float32) * 0.2
    heat[8:12, 10:20, 10:20] = 1.0
    region = np.ones_like(heat, bool)
    region[:, :, 30:] = False
    mask, thr = threshold_heatmap(heat, region, (1.0, 1.0, 1.0), 90)
    assert not mask[:, :, 30:].any()
    assert mask[10, 15, 15] and 0.1 < thr <= 1.0


def test_dice():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    assert dice(a, b) is None
    a[:2], b[1:3] = True, True
    assert dice(a, b) == pytest.approx(0.5)
