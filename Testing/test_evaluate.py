"""The evaluation harness: metric maths on hand-made cases, perturbation direction on real slices, the CLI."""

import csv
import json

import numpy as np
import pytest

from brainxai.cli import main
from brainxai.lab.datasets import block_split, figshare_samples, load_split, no_tumor_samples
from brainxai.lab.evaluate import (classification_metrics, deletion_insertion, load_folder, pointing_hit,
                                   random_maps, reliability, slice_dices)


def test_classification_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 2, 3])
    pred = np.array([0, 1, 1, 1, 2, 2])
    probs = np.full((6, 4), 0.1)
    probs[np.arange(6), pred] = 0.7
    m = classification_metrics(y, probs)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"][0] == [1, 1, 0, 0] and m["confusion_matrix"][3] == [0, 0, 1, 0]
    assert m["per_class"]["meningioma"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["meningioma"]["recall"] == 1.0
    assert m["per_class"]["pituitary"]["f1"] == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert m["per_class"]["no_tumor"]["f1"] == 0.0
    # all confidences 0.7 with 4/6 correct: one bin, |0.667 - 0.7|
    assert m["ece"] == pytest.approx(abs(4 / 6 - 0.7))


def test_ece_zero_when_confidence_matches_accuracy_and_large_when_overconfident():
    y = np.zeros(10, int)
    calibrated = np.tile([0.8, 0.2 / 3, 0.2 / 3, 0.2 / 3], (10, 1))
    calibrated[:2] = [0.1, 0.8, 0.05, 0.05]  # 2 of 10 wrong at confidence 0.8
    assert reliability(calibrated, y)["ece"] == pytest.approx(0.0, abs=1e-9)
    over = np.tile([0.97, 0.01, 0.01, 0.01], (10, 1))
    over[:5] = [0.01, 0.97, 0.01, 0.01]
    assert reliability(over, y)["ece"] == pytest.approx(0.47)


def test_slice_dices():
    a = np.zeros((3, 8, 8), bool)
    b = np.zeros((3, 8, 8), bool)
    a[0, :4], b[0, :2] = True, True  # 16 vs 32 px, 16 shared: 2*16/48
    b[1, 0, 0] = True  # prediction empty, truth not: 0
    np.testing.assert_allclose(slice_dices(a, b), [2 / 3, 0.0, 1.0])


def test_pointing_game_tolerance():
    truth = np.zeros((64, 64), bool)
    truth[30:34, 30:34] = True
    cam = np.zeros((64, 64))
    cam[31, 31] = 1
    assert pointing_hit(cam, truth, 0)
    cam[:] = 0
    cam[31, 43] = 1  # 10 px right of the tumour's edge
    assert not pointing_hit(cam, truth, 5) and pointing_hit(cam, truth, 10)


def test_random_maps_are_smooth_and_seeded():
    a, b = random_maps(2, 96, 3), random_maps(2, 96, 3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 96, 96) and 0 <= a.min() and a.max() <= 1
    assert np.abs(np.diff(a, axis=-1)).max() < 0.1  # upsampled coarse noise, not pixel noise


def test_deletion_insertion_direction_with_oracle_maps(data_dir, model):
    """Removing the tumour first must hurt the true-class probability more than removing everything else first:
    a sign error in the perturbation plumbing flips this. (Insertion has no such guarantee: restoring the tumour
    alone into a blurred slice does not restore the class for this model, which needs the surrounding anatomy.)"""
    _, _, _, val = load_split(data_dir, model.cfg.input_size)
    tumour = np.nonzero(val["masks"].sum((1, 2)) > 150)[0][::12][:16]
    x, y = val["images"][tumour].astype(np.float32), val["labels"][tumour]
    oracle = val["masks"][tumour].astype(np.float32)
    oracle += random_maps(len(tumour), x.shape[-1], 0) * 0.01  # break ties inside/outside
    deletion_on, insertion_on = deletion_insertion(model, x, oracle, y)
    deletion_off, insertion_off = deletion_insertion(model, x, 1.0 - oracle, y)
    assert deletion_on.shape == (len(tumour),) and ((deletion_on >= 0) & (deletion_on <= 1)).all()
    assert deletion_on.mean() < deletion_off.mean()
    assert ((insertion_on >= 0) & (insertion_on <= 1)).all() and not np.allclose(insertion_on, insertion_off)


def test_val_split_matches_training_split(data_dir):
    samples, t = load_folder(data_dir / "figshare", data_dir / "br35h_no_tumor", "val", 64, None)
    expected = block_split(figshare_samples(data_dir / "figshare"))[1] + block_split(
        no_tumor_samples(data_dir / "br35h_no_tumor"))[1]
    assert [s.key for s in samples] == [s.key for s in expected]
    assert len(t["labels"]) == len(samples) and (t["px_per_model_px"] >= 1).all()


@pytest.fixture(scope="module")
def mini_folder(data_dir, tmp_path_factory):
    """A dozen figshare slices (all three classes) and four no-tumour images, in the shared layout."""
    root = tmp_path_factory.mktemp("mini")
    src = data_dir / "figshare"
    with open(src / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    picked = [r for label in ("glioma", "meningioma", "pituitary") for r in [x for x in rows if x["label"] == label][40:44]]
    fig = root / "fig"
    (fig / "images").mkdir(parents=True)
    (fig / "masks").mkdir()
    for r in picked:
        (fig / r["image"]).symlink_to(src / r["image"])
        (fig / r["mask"]).symlink_to(src / r["mask"])
    with open(fig / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(picked)
    no = root / "no"
    no.mkdir()
    for p in sorted((data_dir / "br35h_no_tumor").iterdir())[:4]:
        (no / p.name).symlink_to(p)
    return fig, no


def test_evaluate_cli_writes_the_metrics(mini_folder, tmp_path, capsys):
    fig, no = mini_folder
    out = tmp_path / "metrics.json"
    args = ["evaluate", "--data", str(fig), "--no-tumor", str(no), "--out", str(out), "--scorecam-slices", "2",
            "--perturbation-slices", "4", "--cache", str(tmp_path / "cache")]
    assert main(args) == 0
    m = json.loads(out.read_text(encoding="utf-8"))
    assert m["n"] == 16 and m["n_tumour_slices"] == 12
    for key in ("accuracy", "macro_f1", "per_class", "confusion_matrix", "ece", "segmentation_dice"):
        assert key in m
    assert set(m["per_class"]) == {"glioma", "meningioma", "pituitary", "no_tumor"}
    assert np.array(m["confusion_matrix"]).sum() == 16
    for method in ("gradcam", "gradcam++", "scorecam"):
        entry = m["cam"][method]
        for key in ("dice", "iou", "pointing_game", "kept_prediction", "removal_changes_call"):
            assert 0 <= entry[key] <= 1, (method, key)
        assert 0 < entry["area_percent"] < 100 and entry["seconds_per_slice"] > 0
        # Grad-CAM(++) always cover the perturbation sample; Score-CAM's own subsample may miss it (then None).
        for key in ("deletion_auc", "insertion_auc"):
            assert (entry[key] is None and method == "scorecam" and entry["n_perturbation"] == 0) or 0 <= entry[key] <= 1
    assert m["cam"]["scorecam"]["n"] == 2 and m["cam"]["gradcam"]["n"] == 12
    assert set(m["cam_random_baseline"]) == {"deletion_auc", "insertion_auc", "n_perturbation"}
    assert m["settings"]["scorecam_slices"] == 2  # the subsampling is stated in the output
    rates = m["shortcut_check"]["tumour_slices_called_no_tumor"]
    assert {"as is", "gamma 0.6", "gamma 1.6", "low contrast", "blurred"} == set(rates)
    assert m["shortcut_check"]["n"] == 12 and all(0 <= r <= 1 for r in rates.values())
    for suffix in (".md", "_confusion.png", "_reliability.png"):
        assert out.with_name("metrics" + suffix).is_file()
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| Grad-CAM++ |" in md and "| kept | removal changes call | area (% of head) | s per slice |" in md
    before = out.read_bytes()
    capsys.readouterr()
    assert main(args) == 2  # never overwrites without --overwrite
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before


def test_evaluate_cli_needs_data(tmp_path, capsys):
    assert main(["evaluate", "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--data" in err


def test_healthy_volume_check_on_ixi(ixi_path, model):
    """The shortcut guard on a real healthy head reports the pipeline's own brain slices, by file name only."""
    from brainxai.lab.evaluate import healthy_volume_check

    row = healthy_volume_check(model, ixi_path)
    assert row["volume"] == ixi_path.name and row["registration_converged"]
    assert 40 <= row["brain_slices"] <= 120  # 2 mm axial slices through a dilated MNI brain
    assert 0 <= row["no_tumor_rate"] <= 1 and row["diagnosis"] in ("glioma", "meningioma", "pituitary", "no_tumor")
