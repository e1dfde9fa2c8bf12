"""End to end on real volumes: BraTS glioma, IXI healthy, and flipped / oblique copies of BraTS."""

import gc
import json

import numpy as np
import pytest
import SimpleITK as sitk

from brainxai import CLASSES, cli, pipeline, runtime
from brainxai.errors import BrainXAIError
from brainxai.reporting.findings import validate
from brainxai.load import read_input
from brainxai.mni.register import load_mni_template
from helpers import flipped_copy, oblique_copy

# A CAM, the minimal-evidence mask and a prototype map: the flipped / oblique checks cover each kind of map.
FAST = pipeline.Options(methods=("gradcam++", "mincam", "proto-late"), max_cam_slices=6)


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
            and np.allclose(a.GetSpacing(), b.GetSpacing()) and np.allclose(a.GetDirection(), b.GetDirection()))


@pytest.fixture(scope="module")
def brats(brats_path):
    return read_input(brats_path)


@pytest.fixture(scope="module")
def brats_fast(brats):
    return pipeline.analyse(*brats, FAST)


@pytest.fixture(scope="module")
def brats_cli(brats_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("brats") / "out"
    code = cli.main(["explain", str(brats_path), "--out", str(out), "--max-cam-slices", "6"])
    return code, out


def test_cli_writes_every_output_on_the_input_grid(brats_cli, brats):
    code, out = brats_cli
    assert code == 0
    image, _ = brats
    names = ["tumor_segmentation"] + [f"{k}_{m}" for k in ("heatmap", "mask") for m in ("gradcam", "gradcam++", "scorecam")]
    template = load_mni_template()
    for name in names:
        img = sitk.ReadImage(str(out / f"{name}.nii.gz"))
        assert same_grid(img, image), name
        mni = sitk.ReadImage(str(out / "mni" / f"{name}.nii.gz"))
        assert same_grid(mni, template), name
        if name.startswith(("mask", "tumor")):
            assert img.GetPixelID() == sitk.sitkUInt8 and set(np.unique(sitk.GetArrayViewFromImage(img))) <= {0, 1}
        else:
            assert img.GetPixelID() == sitk.sitkFloat32
    region = sitk.ReadImage(str(out / "analysis_region.nii.gz"))
    assert same_grid(region, image) and region.GetPixelID() == sitk.sitkUInt8
    atlas_regions = sitk.ReadImage(str(out / "mni" / "atlas_regions.nii.gz"))
    assert same_grid(atlas_regions, template) and atlas_regions.GetPixelID() == sitk.sitkUInt8
    for name in ("findings.json", "report.md", "report.html", "overview.png", "transform_to_mni.tfm"):
        assert (out / name).stat().st_size > 0, name
    sitk.ReadTransform(str(out / "transform_to_mni.tfm"))
    assert not list(out.parent.glob(".out.*")), "temporary folder left behind"


def test_findings_are_valid_and_consistent(brats_cli):
    _, out = brats_cli
    f = json.loads((out / "findings.json").read_text(encoding="utf-8"))
    validate(f)
    assert f["input"]["phantom"] is False and f["input"]["shape"] == [240, 240, 155]
    assert abs(sum(f["diagnosis"]["probabilities"].values()) - 1) < 0.01
    assert f["diagnosis"]["label"] == max(f["diagnosis"]["probabilities"], key=f["diagnosis"]["probabilities"].get)
    assert f["lesion"]["volume_ml"] > 1.0, "the BraTS glioma must be segmented"
    seg = sitk.ReadImage(str(out / "tumor_segmentation.nii.gz"))
    ml = sitk.GetArrayViewFromImage(seg).sum() * np.prod(seg.GetSpacing()) / 1000
    assert f["lesion"]["volume_ml"] == pytest.approx(ml, abs=0.01)
    assert f["regions"] and sum(r["percent_of_lesion"] for r in f["regions"]) <= 100.5
    assert {e["method"] for e in f["explanations"]} == {"gradcam", "gradcam++", "scorecam"}
    for e in f["explanations"]:  # every method's region removed and the call asked again, at the mask's threshold
        cf = e["counterfactual"]
        assert cf["threshold_percentile"] == e["threshold_percentile"] and cf["edit"] == "inpainted"
        assert abs(sum(cf["probabilities"].values()) - 1) < 0.01
        assert cf["label"] == max(cf["probabilities"], key=cf["probabilities"].get)
    assert f["registration"]["converged"]
    assert f["lesion"]["hemisphere"] in ("left", "right", "bilateral")
    md = (out / "report.md").read_text(encoding="utf-8")
    assert f["diagnosis"]["label"].split("_")[0] in md.lower() or "indeterminate" in md.lower()
    assert md.count("inpainted from the surrounding tissue") == 3


def _compare(a: pipeline.Result, b: pipeline.Result, centroid_mm: float, region_pp: float):
    pa, pb = a.findings["diagnosis"]["probabilities"], b.findings["diagnosis"]["probabilities"]
    assert a.findings["diagnosis"]["label"] == b.findings["diagnosis"]["label"]
    assert all(abs(pa[c] - pb[c]) < 1e-3 for c in CLASSES)
    assert [e["counterfactual"]["label"] for e in a.findings["explanations"]] == \
        [e["counterfactual"]["label"] for e in b.findings["explanations"]]
    assert b.findings["lesion"]["volume_ml"] == pytest.approx(a.findings["lesion"]["volume_ml"], rel=0.01)
    ca, cb = np.array(a.findings["lesion"]["centroid_mni"]), np.array(b.findings["lesion"]["centroid_mni"])
    assert np.linalg.norm(ca - cb) < centroid_mm
    top = a.findings["regions"][0]
    other = {r["name"]: r["percent_of_lesion"] for r in b.findings["regions"]}
    assert abs(other.get(top["name"], 0) - top["percent_of_lesion"]) < region_pp


def test_flipped_copy_gives_same_findings_and_voxels(brats, brats_fast):
    image, info = brats
    flip = flipped_copy(image, 0)
    res = pipeline.analyse(flip, info, FAST)
    _compare(brats_fast, res, centroid_mm=2.0, region_pp=2.0)
    for name, img in res.images.items():
        assert same_grid(img, flip)
        back = sitk.Resample(img, image, sitk.Transform(), sitk.sitkNearestNeighbor)
        np.testing.assert_allclose(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(brats_fast.images[name]), atol=1e-5)


def test_oblique_copy_gives_same_findings(brats, brats_fast):
    image, info = brats
    obl = oblique_copy(image, 15)
    res = pipeline.analyse(obl, info, FAST)
    _compare(brats_fast, res, centroid_mm=4.0, region_pp=5.0)
    seg = res.images["tumor_segmentation"]
    assert same_grid(seg, obl)
    # Same voxels, rotated geometry: each output voxel carries its input voxel's value.
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(seg),
                                  sitk.GetArrayViewFromImage(brats_fast.images["tumor_segmentation"]))


@pytest.fixture(scope="module")
def ixi_result(ixi_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("ixi") / "out"
    return pipeline.explain(ixi_path, out, FAST), out


def test_healthy_ixi_volume_runs_end_to_end(ixi_result):
    result, out = ixi_result
    validate(result.findings)
    assert result.findings["registration"]["converged"]
    # IXI is a plain (non-contrast) T1: the input check says so, in the findings and in the report
    assert result.findings["input_check"]["flags"] == ["not_contrast_enhanced"]
    assert "does not look contrast-enhanced" in (out / "report.md").read_text(encoding="utf-8")
    assert (out / "report.html").is_file() and (out / "mni" / "tumor_segmentation.nii.gz").is_file()


def test_a_contrast_enhanced_brain_passes_the_input_check(brats_fast):
    check = brats_fast.findings["input_check"]
    assert check["flags"] == [] and check["contrast_enhanced"] and check["brain_coverage"] > 0.95


def test_builtin_reports_of_real_scans_pass_the_grounding_check(brats_cli, ixi_result):
    """On real outputs (2 mm IXI: the template's name '..._1mm_...' must not read as a size claim)."""
    from brainxai.reporting.verify import verify

    # a tumour-free head's report is short (no lesion, no region table), yet it still makes checkable claims
    for out, least in ((brats_cli[1], 50), (ixi_result[1], 25)):
        findings = json.loads((out / "findings.json").read_text(encoding="utf-8"))
        result = verify(findings, (out / "report.md").read_text(encoding="utf-8"))
        assert result.ok and len(result.claims) > least, [c.line() for c in result.unsupported]


def test_healthy_ixi_is_called_no_tumor(ixi_result):
    result, _ = ixi_result
    assert result.findings["diagnosis"]["label"] == "no_tumor"


def test_healthy_ixi_slices_are_called_no_tumor(ixi_result):
    # Slice level (Br35H shortcut guard): the brain slices of a healthy head are called no_tumor.
    result, _ = ixi_result
    no_tumor_rate = (result.slice_probabilities.argmax(1) == CLASSES.index("no_tumor")).mean()
    assert no_tumor_rate >= 0.8, no_tumor_rate


def test_healthy_ixi_has_no_lesion_and_no_region(ixi_result):
    # Its segmentation head alone marks ~20 mL at the skull base: only blobs a tumour-classified slice confirms
    # count, and a scan called no_tumor reports no lesion (what was dropped is said in a warning).
    result, out = ixi_result
    f = result.findings
    assert f["lesion"]["volume_ml"] == 0 and f["regions"] == [] and f["lesion"]["centroid_mni"] is None
    assert not sitk.GetArrayViewFromImage(result.images["tumor_segmentation"]).any()
    assert "involv" not in (out / "report.md").read_text(encoding="utf-8").lower()


def test_brats_is_called_glioma(brats_fast):
    assert brats_fast.findings["diagnosis"]["label"] == "glioma"


@pytest.mark.parametrize("patient", ["PGBM-01", "PGBM-02"])
def test_tcia_glioblastoma_is_called_glioma(data_dir, patient):
    path = data_dir / "volumes" / "tcia_progression" / patient / "Pre_Scan_T1.nii.gz"
    image, info = read_input(path)
    result = pipeline.analyse(image, info, FAST)
    assert result.findings["diagnosis"]["label"] == "glioma"
    # placeholder 1 mm affine on 24 slices: cannot match MNI, so no brain mask and a warning
    assert not result.findings["registration"]["converged"] and result.findings["warnings"]


def test_existing_output_is_refused_and_kept(brats_path, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("user data", encoding="utf-8")
    code = cli.main(["explain", str(brats_path), "--out", str(out)])
    assert code == 2 and (out / "mine.txt").read_text(encoding="utf-8") == "user data" and len(list(out.iterdir())) == 1


def test_failure_while_writing_leaves_nothing(brats_fast, tmp_path, monkeypatch):
    import brainxai.overview

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(brainxai.overview, "save_overview", boom)
    with pytest.raises(BrainXAIError, match="cannot write to .*disk full.*nothing was written") as exc:
        pipeline.write_outputs(brats_fast, tmp_path / "out")
    assert isinstance(exc.value.__cause__, OSError)  # one line for the user, the cause kept for a traceback
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_whole_folder(brats_fast, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old", encoding="utf-8")
    pipeline.write_outputs(brats_fast, out, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "findings.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_cli_bad_input_one_line_nothing_written(tmp_path, capsys):
    bad = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.Image(64, 64, 40, sitk.sitkFloat32), str(bad))
    code = cli.main(["explain", str(bad), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "constant" in err
    assert not (tmp_path / "out").exists()


def test_2d_slice_input(data_dir, tmp_path):
    res = pipeline.explain(data_dir / "figshare" / "images" / "1.jpg", tmp_path / "slice", FAST)
    assert res.findings["input"]["kind"] == "slice" and res.findings["registration"] is None
    img = sitk.ReadImage(str(tmp_path / "slice" / "heatmap_gradcam++.nii.gz"))
    assert img.GetSize() == (512, 512, 1)
    assert not (tmp_path / "slice" / "mni").exists()


def test_cancel_stops_and_writes_nothing(brats_path, tmp_path):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(BrainXAIError, match="cancelled"):
        pipeline.explain(brats_path, tmp_path / "out", FAST, cancel=cancel)
    assert not (tmp_path / "out").exists()


def test_demo_phantom_is_labelled_everywhere(tmp_path, capsys):
    from brainxai.app.panel import describe

    out = tmp_path / "demo"
    code = cli.main(["explain", "--out", str(out), "--methods", "gradcam++", "--max-cam-slices", "4"])
    assert code == 0
    f = json.loads((out / "findings.json").read_text(encoding="utf-8"))
    # the console line words the call as the panel and the report do ("indeterminate" under p 0.6)
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"PHANTOM - diagnosis: {describe(f)}; outputs in ")
    assert f["input"]["phantom"] is True and f["input"]["format"] == "synthetic"
    assert any("phantom" in w.lower() for w in f["warnings"])
    assert "PHANTOM" in (out / "report.md").read_text(encoding="utf-8")
    assert "PHANTOM" in (out / "report.html").read_text(encoding="utf-8")


def test_preload_pauses_the_cyclic_collector_and_freezes_only_in_brainxais_own_process(monkeypatch):
    monkeypatch.setattr(runtime, "_freeze_imports", False)
    frozen = gc.get_freeze_count()
    with runtime.no_cyclic_gc():
        paused = not gc.isenabled()
        made = [[]]  # an object the collector tracks, made while paused
    assert paused and gc.isenabled() and gc.get_freeze_count() == frozen  # a library call leaves no trace
    gc.disable()
    with runtime.no_cyclic_gc():
        pass
    assert not gc.isenabled()  # a caller's own choice is kept
    gc.enable()
    runtime.own_process()  # the command line and the worker
    with runtime.no_cyclic_gc():
        made.append([])
    assert gc.get_freeze_count() > frozen and gc.isenabled()
