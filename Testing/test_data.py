"""The validation split must keep patients apart: contiguous blocks, a gap of GAP indices to training."""

import numpy as np
import pytest

from brainxai.lab.datasets import GAP, block_split, figshare_samples, no_tumor_samples


def test_figshare_split_is_block_separated(data_dir):
    samples = figshare_samples(data_dir / "figshare")
    train, val = block_split(samples)
    assert {s.label for s in val} == {"glioma", "meningioma", "pituitary"}
    assert 0.15 < len(val) / len(samples) < 0.25
    train_idx = sorted(s.index for s in train)
    for v in val:
        assert all(abs(v.index - t) > GAP for t in train_idx), v.key


def test_no_tumor_split_disjoint(data_dir):
    train, val = block_split(no_tumor_samples(data_dir / "br35h_no_tumor"))
    assert val and not {s.key for s in train} & {s.key for s in val}
    assert min(abs(v.index - t.index) for v in val for t in train) > GAP


@pytest.fixture(scope="module")
def template_slices():
    from brainxai.lab.datasets import healthy_template_slices

    return healthy_template_slices(64)


def test_healthy_template_slices_are_training_only_no_tumor(data_dir, tmp_path, template_slices):
    """Template slices: no_tumor, empty masks, prepared like any training image; they join the training
    tensors and never the validation or calibration ones."""
    from brainxai import CLASSES
    from brainxai.lab.datasets import load_split

    t = template_slices
    n = len(t["labels"])
    assert 120 < n < 220  # three templates, axial every 4 mm + coronal/sagittal every 12 mm
    assert set(t["labels"]) == {CLASSES.index("no_tumor")} and not t["masks"].any()
    assert t["images"].shape == (n, 64, 64) and 0 <= t["images"].min() and t["images"].max() <= 1
    # Each slice is framed on its brain: the head mask covers a substantial part of the square.
    assert (t["heads"].mean((1, 2)) > 0.15).all()
    plain = load_split(data_dir, 64, tmp_path, calibration=True)
    with_t = load_split(data_dir, 64, tmp_path, calibration=True, templates=True)  # data slices from the cache
    assert len(with_t[2]["labels"]) == len(plain[2]["labels"]) + n
    np.testing.assert_array_equal(with_t[3]["labels"], plain[3]["labels"])
    np.testing.assert_array_equal(with_t[5]["labels"], plain[5]["labels"])


def test_template_axial_slices_follow_the_model_convention(template_slices):
    """Axial template slices are in the display convention of volume slices at inference (anterior at the top):
    on the lowest kept axial slice the cerebellum, the bulk of the section, lies in the lower (posterior) half."""
    low = template_slices["images"][0].astype(np.float32)  # first kept axial slice of the first template
    rows = np.nonzero(low.sum(1) > 0.5)[0]
    centre_of_mass = (low.sum(1) * np.arange(64)).sum() / low.sum()
    assert centre_of_mass > (rows[0] + rows[-1]) / 2  # mass (cerebellum) in the posterior, lower half


def test_no_tumor_folder_with_any_file_names(tmp_path):
    """`brainxai evaluate --no-tumor DIR` failed with int() on names that are not numbers."""
    from PIL import Image

    from brainxai.errors import BrainXAIError

    for name in ("b_scan.png", "a scan.JPG", "Y12.jpeg"):
        Image.new("L", (64, 64), 40).save(tmp_path / name, format="PNG" if name.endswith("png") else "JPEG")
    (tmp_path / "notes.txt").write_text("not an image", encoding="utf-8")
    samples = no_tumor_samples(tmp_path)
    assert [s.image.name for s in samples] == ["Y12.jpeg", "a scan.JPG", "b_scan.png"]
    assert [s.index for s in samples] == [0, 1, 2] and {s.label for s in samples} == {"no_tumor"}
    assert len({s.key for s in samples}) == 3
    with pytest.raises(BrainXAIError, match="not a folder"):
        no_tumor_samples(tmp_path / "missing")


def test_lgg_stacks_split_by_patient_and_leave_flair_out(data_dir):
    import csv
    import random

    from brainxai.lab.datasets import patient_split, split

    samples = figshare_samples(data_dir / "lgg")
    with open(data_dir / "lgg" / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    flair = {r["patient"] for r in rows if r["post_is_flair"] == "1"}
    assert flair and not flair & {s.patient for s in samples}  # FLAIR in place of post-contrast: not our input
    assert all((s.mask is None) == (s.label == "no_tumor") for s in samples)
    train, val = split(samples)
    assert not {s.patient for s in train} & {s.patient for s in val}
    patients = {s.patient for s in samples}
    assert 0.1 < len({s.patient for s in val}) / len(patients) < 0.3
    assert {"glioma", "no_tumor"} == {s.label for s in val}
    shuffled = samples[:]
    random.Random(1).shuffle(shuffled)
    assert {s.key for s in patient_split(shuffled)[1]} == {s.key for s in val}  # order does not move the split
    assert {s.key for s in samples}.isdisjoint({s.key for s in figshare_samples(data_dir / "figshare")})


def test_lgg_stacks_become_volumes_with_their_masks(data_dir, tmp_path):
    import csv

    import SimpleITK as sitk

    from brainxai.cli import main
    from brainxai.lab.datasets import LGG_HEAD_EXTENT_MM, patient_split

    assert main(["stack-lgg", "--data", str(data_dir / "lgg"), "--out", str(tmp_path / "v")]) == 0
    with open(tmp_path / "v" / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    held = patient_split(figshare_samples(data_dir / "lgg"))[1]
    assert {r["id"] for r in rows} == {s.patient for s in held}
    first = next(r for r in rows if r["mask"])
    slices = [s for s in held if s.patient == first["id"]]
    image = sitk.ReadImage(str(tmp_path / "v" / first["path"]))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "v" / first["mask"])))
    assert image.GetSize() == (256, 256, len(slices))
    assert image.GetSpacing()[2] == pytest.approx(LGG_HEAD_EXTENT_MM / len(slices), abs=1e-3)
    assert mask.any(1).any(1).sum() == sum(s.mask is not None for s in slices)  # the tumour slices, in order
    assert main(["stack-lgg", "--data", str(data_dir / "lgg"), "--out", str(tmp_path / "v")]) == 2  # not over it


def test_lgg_pre_contrast_stacks_hold_the_same_slices_before_contrast(data_dir, tmp_path):
    import csv

    import SimpleITK as sitk

    from brainxai.cli import main
    from brainxai.lab.datasets import load_gray

    assert main(["stack-lgg", "--data", str(data_dir / "lgg"), "--out", str(tmp_path / "pre"), "--series", "pre"]) == 0
    with open(tmp_path / "pre" / "manifest.csv", newline="", encoding="utf-8") as f:
        first = next(csv.DictReader(f))
    with open(data_dir / "lgg" / "labels.csv", newline="", encoding="utf-8") as f:
        rows = sorted((r for r in csv.DictReader(f) if r["patient"] == first["id"]), key=lambda r: int(r["slice"]))
    stack = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pre" / first["path"])))
    assert len(stack) == len(rows)
    for k in (0, len(rows) // 2):  # slice order kept, and the pre-contrast image, not the post-contrast one
        np.testing.assert_array_equal(stack[k], load_gray(data_dir / "lgg" / rows[k]["pre_contrast"]))
        assert not np.array_equal(stack[k], load_gray(data_dir / "lgg" / rows[k]["image"]))
