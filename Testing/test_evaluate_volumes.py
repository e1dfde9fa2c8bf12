"""Volume-level evaluation: the manifest, the per-volume measures on hand-made cases, and one real run."""

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from brainxai.cli import main
from brainxai.errors import BrainXAIError
from brainxai.lab.evaluate_volumes import dice, input_check_rates, read_manifest, reference_mask, score_case, summarise


def write_manifest(path, rows, columns=("id", "path", "label", "mask")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)
    return path


def test_manifest_paths_labels_and_one_line_errors(tmp_path):
    (tmp_path / "scans").mkdir()
    for name in ("a.nii.gz", "a_mask.nii.gz", "b.nii.gz"):
        (tmp_path / "scans" / name).write_bytes(b"x")
    m = write_manifest(tmp_path / "m.csv", [["", "scans/a.nii.gz", "glioma", "scans/a_mask.nii.gz"],
                                            ["healthy 1", "scans/b.nii.gz", "no_tumor", ""]])
    rows = read_manifest(m)
    assert [r["id"] for r in rows] == ["a", "healthy 1"] and rows[1]["mask"] is None
    assert rows[0]["path"] == tmp_path / "scans" / "a.nii.gz"
    assert read_manifest(write_manifest(tmp_path / "n.csv", [["", "a.nii.gz", "glioma", ""]]),
                         data_root=tmp_path / "scans")[0]["path"] == tmp_path / "scans" / "a.nii.gz"
    for rows_, columns, match in (
            ([["x", "scans/a.nii.gz", "tumour", ""]], ("id", "path", "label", "mask"), "'tumour' is not one of"),
            ([["x", "scans/c.nii.gz", "glioma", ""]], ("id", "path", "label", "mask"), "c.nii.gz does not exist"),
            ([["scans/a.nii.gz"]], ("file",), "needs the columns path,label"),
            ([], ("path", "label"), "lists no volumes"),
            ([["x", "scans/a.nii.gz", "glioma", "", "T1c"]], ("id", "path", "label", "mask", "contrast"),
             "contrast 'T1c' is not one of enhanced, plain")):
        with pytest.raises(BrainXAIError, match=match) as info:
            read_manifest(write_manifest(tmp_path / "bad.csv", rows_, columns))
        assert "\n" not in str(info.value)


def _image(a: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(a)
    img.SetSpacing(spacing)
    return img


def _findings(label="glioma", lesion_ml=1.0, regions=()):
    return {"diagnosis": {"label": label, "probabilities": {"glioma": 0.7, "meningioma": 0.1, "pituitary": 0.1,
                                                            "no_tumor": 0.1}},
            "lesion": {"volume_ml": lesion_ml}, "regions": [{"name": n} for n in regions],
            "registration": {"converged": True}, "warnings": []}


def test_per_volume_measures_by_hand():
    truth = np.zeros((20, 20, 20), bool)
    truth[5:10, 5:10, 5:10] = True  # 125 voxels
    seg = np.zeros_like(truth)
    seg[5:10, 5:10, 7:12] = True  # 75 shared of 125 + 125
    heat = np.zeros(truth.shape, np.float32)
    heat[7, 7, 12] = 1.0  # 3 voxels beyond the tumour's edge (i = 9): inside with the 3-voxel tolerance
    cam = np.zeros_like(truth)
    cam[14:16, 14:16, 14:16] = True  # far away
    images = {"tumor_segmentation": _image(seg.astype(np.uint8)), "heatmap_gradcam++": _image(heat),
              "mask_gradcam++": _image(cam.astype(np.uint8))}
    row = score_case(_findings(), images, "glioma", truth, "gradcam++", voxel_ml=0.001)
    assert row["lesion_dice"] == pytest.approx(2 * 75 / 250) and row["correct"]
    assert row["cam_peak_in_tumour"] and not row["cam_centroid_in_tumour"] and row["reference_ml"] == 0.12
    heat[:] = 0
    heat[7, 7, 13] = 1.0  # 4 voxels out
    assert not score_case(_findings(), images | {"heatmap_gradcam++": _image(heat)}, "glioma", truth, "gradcam++",
                          0.001)["cam_peak_in_tumour"]
    healthy = score_case(_findings("meningioma", 12.5, ["Brain-Stem"]), images, "no_tumor", None, "gradcam++", 0.001)
    assert healthy["false_lesion_ml"] == 12.5 and not healthy["correct"] and "lesion_dice" not in healthy
    assert healthy["confidently_wrong"] and not healthy["indeterminate"]  # p 0.7: the report favours it
    unsure = _findings("meningioma")
    unsure["diagnosis"]["probabilities"] = {"glioma": 0.3, "meningioma": 0.4, "pituitary": 0.1, "no_tumor": 0.2}
    row = score_case(unsure, images, "no_tumor", None, "gradcam++", 0.001)
    assert row["indeterminate"] and not row["confidently_wrong"] and not row["correct"]
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_summary_by_hand():
    ok, unsure, wrong = ({"indeterminate": False, "confidently_wrong": False},
                         {"indeterminate": True, "confidently_wrong": False},
                         {"indeterminate": False, "confidently_wrong": True})
    rows = [
        {"label": "glioma", "diagnosis": "glioma", "correct": True, "lesion_dice": 0.6, "cam_peak_in_tumour": True,
         "cam_centroid_in_tumour": False, "regions": ["x"], **ok},
        {"label": "glioma", "diagnosis": "no_tumor", "correct": False, "regions": [], **unsure},  # no reference mask
        {"label": "no_tumor", "diagnosis": "no_tumor", "correct": True, "false_lesion_ml": 0.0, "regions": [], **ok},
        {"label": "no_tumor", "diagnosis": "meningioma", "correct": False, "false_lesion_ml": 30.0,
         "regions": ["Brain-Stem", "Left Temporal Pole"], **wrong},
        {"label": "no_tumor", "diagnosis": "no_tumor", "correct": True, "false_lesion_ml": 1.0,
         "regions": ["Brain-Stem"], **unsure},
    ]
    s = summarise(rows)
    assert s["glioma"]["called_correctly"] == 0.5 and s["glioma"]["lesion_dice"] == 0.6
    assert s["glioma"]["with_reference_mask"] == 1 and s["glioma"]["calls"]["no_tumor"] == 1
    assert s["no_tumor"]["called_correctly"] == pytest.approx(2 / 3)
    assert s["no_tumor"]["confidently_wrong"] == pytest.approx(1 / 3) and s["glioma"]["indeterminate"] == 0.5
    assert s["no_tumor"]["false_lesion_ml_median"] == 1.0 and s["no_tumor"]["false_lesion_ml_max"] == 30.0
    assert s["no_tumor"]["without_regions"] == pytest.approx(1 / 3)
    assert s["no_tumor"]["regions_reported"] == {"Brain-Stem": 2, "Left Temporal Pole": 1}


def test_reference_mask_is_resampled_onto_the_scan_grid():
    scan = _image(np.zeros((10, 20, 20), np.float32), (1.0, 1.0, 2.0))
    scan.SetOrigin((5.0, -3.0, 10.0))
    mask = np.zeros((20, 40, 40), np.uint8)  # half the spacing, same physical box
    mask[4:8, 10:20, 10:20] = 1
    m = sitk.GetImageFromArray(mask)
    m.SetSpacing((0.5, 0.5, 1.0))
    m.SetOrigin((4.75, -3.25, 9.5))
    on_grid = reference_mask_from_image(m, scan)
    assert on_grid.shape == (10, 20, 20)
    np.testing.assert_array_equal(np.argwhere(on_grid).min(0), [2, 5, 5])
    np.testing.assert_array_equal(np.argwhere(on_grid).max(0), [3, 9, 9])


def reference_mask_from_image(mask: sitk.Image, scan: sitk.Image):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "mask.nii.gz"
        sitk.WriteImage(mask, str(path))
        return reference_mask(path, scan)


def test_cli_volumes_on_real_scans(tmp_path, data_dir):
    """PGBM-02 (glioma, radiologist mask) and the IXI head, as a user runs it; a broken scan is a refused row."""
    tiny = tmp_path / "tiny.nii.gz"
    sitk.WriteImage(_image(np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)), str(tiny))
    m = write_manifest(tmp_path / "m.csv", [
        ["PGBM-02 pre", str(data_dir / "volumes/tcia_progression/PGBM-02/Pre_Scan_T1.nii.gz"), "glioma",
         str(data_dir / "volumes/tcia_progression/PGBM-02/Pre_Mask.nii.gz")],
        ["IXI012", str(data_dir / "volumes/ixi/IXI012-HH-1211_T1.nii.gz"), "no_tumor", ""],
        ["broken", str(tiny), "no_tumor", ""]])
    out = tmp_path / "metrics" / "volumes.json"
    assert main(["evaluate", "--volumes", str(m), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text(encoding="utf-8"))
    rows = {r["id"]: r for r in metrics["volumes"]}
    assert 0.0 <= rows["PGBM-02 pre"]["lesion_dice"] <= 1.0 and "cam_peak_in_tumour" in rows["PGBM-02 pre"]
    assert rows["IXI012"]["false_lesion_ml"] == rows["IXI012"]["lesion_ml"]
    assert "too small" in rows["broken"]["error"] and metrics["refused"][0]["id"] == "broken"
    assert set(metrics["summary"]) == {"glioma", "no_tumor"} and metrics["summary"]["no_tumor"]["volumes"] == 1
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| PGBM-02 pre | glioma |" in md and "refused: " in md
    assert main(["evaluate", "--volumes", str(m), "--out", str(out)]) == 2  # never over existing metrics
    assert main(["evaluate", "--volumes", str(m), "--data", str(data_dir / "figshare"),
                 "--out", str(tmp_path / "x.json")]) == 2


def test_the_shared_manifest_holds_no_training_head(data_dir):
    """docs/metrics/volumes.csv measures heads the model may not have seen: never one `--healthy-heads` trains on."""
    from pathlib import Path

    from brainxai.lab.datasets import healthy_split

    manifest = Path(__file__).resolve().parents[1] / "docs" / "metrics" / "volumes.csv"
    listed = {r["path"].name for r in read_manifest(manifest, data_dir)}
    train, held = healthy_split(sorted((data_dir / "volumes" / "healthy").glob("*.nii*")))
    assert listed.isdisjoint(p.name for p in train) and {p.name for p in held} <= listed


def test_input_check_rates_by_contrast():
    rows = [{"contrast": "plain", "input_flags": ["not_contrast_enhanced"]},
            {"contrast": "plain", "input_flags": []},
            {"contrast": "enhanced", "input_flags": ["partial_brain"]},
            {"contrast": "enhanced", "input_flags": []},
            {"contrast": None, "input_flags": ["not_brain_mri"]}]
    r = input_check_rates(rows)
    assert r["plain"] == {"volumes": 2, "not_contrast_enhanced": 0.5, "not_brain_mri": 0.0, "partial_brain": 0.0}
    assert r["enhanced"]["not_contrast_enhanced"] == 0.0 and r["enhanced"]["partial_brain"] == 0.5
    assert r["unknown"]["not_brain_mri"] == 1.0


def test_derived_inputs_keep_the_scans_geometry():
    from brainxai.lab.evaluate_volumes import SLAB_MM, derived_inputs

    scan = _image(np.ones((50, 40, 120), np.float32), (1.0, 2.0, 3.0))  # (x, y, z) = 120 x 40 x 50 voxels
    scan.SetDirection((0, 0, 1, 1, 0, 0, 0, 1, 0))
    scan.SetOrigin((5.0, -3.0, 7.0))
    d = derived_inputs(scan)
    slab, noise = d["slab"], d["noise"]
    # longest physical axis: z (50 x 3 mm = 150 mm); 30 mm of it = 10 slices around the middle
    assert slab.GetSize() == (120, 40, round(SLAB_MM / 3.0)) and slab.GetSpacing() == scan.GetSpacing()
    first = scan.TransformIndexToPhysicalPoint((0, 0, 20))
    assert np.allclose(slab.GetOrigin(), first) and slab.GetDirection() == scan.GetDirection()
    assert noise.GetSize() == scan.GetSize() and noise.GetOrigin() == scan.GetOrigin()
    assert noise.GetDirection() == scan.GetDirection() and sitk.GetArrayViewFromImage(noise).std() > 0.2
    smooth = d["smooth_noise"]
    assert smooth.GetSize() == scan.GetSize() and smooth.GetDirection() == scan.GetDirection()
    assert 0 < sitk.GetArrayViewFromImage(smooth).std() < sitk.GetArrayViewFromImage(noise).std()
