"""Scene stage on slicer-core's real MRML: a BrainXAI output folder of an oblique BraTS copy as nodes."""

import gc
import json

import numpy as np
import pytest
import SimpleITK as sitk

from brainxai.mni import atlas
from brainxai import pipeline
from brainxai.errors import BrainXAIError
from brainxai.load import read_input
from helpers import oblique_copy

slicer = pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) provides MRML")
import vtk  # noqa: E402  (after slicer-core pins its vtk)

from brainxai.mrml import scene as scene_mod  # noqa: E402

FAST = pipeline.Options(methods=("gradcam++",), max_cam_slices=6)


@pytest.fixture(scope="module")
def oblique_case(brats_path, tmp_path_factory):
    """An oblique copy of BraTS written to disk (what a user loads) and `brainxai explain`'s folder for it."""
    root = tmp_path_factory.mktemp("scene")
    image = oblique_copy(sitk.ReadImage(str(brats_path), sitk.sitkFloat32), 20.0)
    path = root / "oblique.nii.gz"
    sitk.WriteImage(image, str(path))
    result = pipeline.analyse(*read_input(path), FAST)
    out = pipeline.write_outputs(result, root / "out")
    return path, out, result


def read_user_volume(scene, path, name):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = node.CreateDefaultStorageNode()
    scene.AddNode(storage)
    node.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    return node


def ijk_to_ras(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def sitk_ijk_to_ras(img: sitk.Image) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) @ np.diag(img.GetSpacing())
    m[:3, 3] = img.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ m


@pytest.fixture()
def loaded(oblique_case):
    path, out, _ = oblique_case
    scene, app = scene_mod.headless_scene()
    user = read_user_volume(scene, path, "T1 post")
    # A user's node that happens to carry the name BrainXAI would choose, and a study for the input.
    decoy = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T1 post heatmap gradcam++")
    sh = scene.GetSubjectHierarchyNode()
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "Anonymous"), "MR study")
    sh.CreateItem(study, user)
    before = {"user": user.GetMTime(), "decoy": decoy.GetMTime(), "nodes": scene.GetNumberOfNodes()}
    result = scene_mod.load_results(scene, out, user)
    return scene, app, user, decoy, study, before, result


def test_node_types_and_roles(loaded, oblique_case):
    scene, _, _, _, _, _, r = loaded
    assert r.heatmaps["gradcam++"].IsA("vtkMRMLScalarVolumeNode") and not r.heatmaps["gradcam++"].IsA(
        "vtkMRMLLabelMapVolumeNode")
    assert r.masks["gradcam++"].IsA("vtkMRMLLabelMapVolumeNode") and r.segmentation.IsA("vtkMRMLLabelMapVolumeNode")
    assert r.to_mni.IsA("vtkMRMLLinearTransformNode") and r.regions.IsA("vtkMRMLSegmentationNode")
    assert r.table.IsA("vtkMRMLTableNode") and r.template.IsA("vtkMRMLScalarVolumeNode")
    assert r.heatmaps["gradcam++"].GetDisplayNode().GetColorNodeID() == scene_mod.HEAT_COLOR_ID
    assert r.heatmaps["gradcam++"].GetAttribute(scene_mod.ROLE) == "heatmap gradcam++"


def test_outputs_sit_exactly_on_the_oblique_input_grid(loaded, oblique_case):
    _, _, user, _, _, _, r = loaded
    path, _, result = oblique_case
    expected = sitk_ijk_to_ras(sitk.ReadImage(str(path)))
    assert abs(np.linalg.det(expected[:3, :3]) - np.prod(sitk.ReadImage(str(path)).GetSpacing())) < 1e-3
    assert not np.allclose(expected[:3, :3] / np.linalg.norm(expected[:3, :3], axis=0), np.diag([-1, -1, 1]), atol=0.1)
    np.testing.assert_allclose(ijk_to_ras(user), expected, atol=1e-4)
    for node in r.native_nodes():
        np.testing.assert_allclose(ijk_to_ras(node), expected, atol=1e-4, err_msg=node.GetName())
        assert node.GetImageData().GetDimensions() == user.GetImageData().GetDimensions()
    # the voxels are the pipeline's, unchanged by the trip through files and storage nodes
    from vtk.util.numpy_support import vtk_to_numpy

    seg = vtk_to_numpy(r.segmentation.GetImageData().GetPointData().GetScalars())
    np.testing.assert_array_equal(seg, sitk.GetArrayViewFromImage(result.images["tumor_segmentation"]).ravel())


def test_atlas_segments_carry_names_colours_and_terminology(loaded):
    _, _, _, _, _, _, r = loaded
    rows = {r_["Name"]: r_ for r_ in atlas.terminology_rows().values()}
    by_display = {atlas.display_name(name): row for name, row in rows.items()}
    segmentation = r.regions.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert sorted(names) == sorted(x["name"] for x in r.findings["regions"])
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        row = by_display[segment.GetName()]
        assert segment.GetLabelValue() == int(row["LabelValue"])
        np.testing.assert_allclose(segment.GetColor(), [int(row[f"Color_{c}"]) / 255 for c in "RGB"], atol=1e-6)
        term = segment.GetTerminology()
        assert "SCT^123037004^Anatomical Structure" in term
        # SNOMED CT where a concept exists, else a private DICOM coding scheme ("99..."): never an empty code,
        # which Slicer cannot read back from a saved scene.
        assert row["Type_CodingScheme"] in ("SCT", "99BRAINXAI") and row["Type_CodeValue"]
        assert f"{row['Type_CodingScheme']}^{row['Type_CodeValue']}^{row['Type_CodeMeaning']}" in term
        side = segment.GetName().split()[0]
        if side in ("Left", "Right"):
            assert f"^{side}" in term
    ours = [n for n in scene_mod.nodes_by_class(r.regions.GetScene(), "vtkMRMLColorTableNode")
            if n.GetAttribute(scene_mod.ROLE) == "atlas colours"]
    assert len(ours) == 1 and ours[0].GetContainsTerminology()


def test_scene_queries_leak_no_collection(loaded):
    """vtkMRMLScene::GetNodesByClass hands its caller a new collection; one not released keeps a reference to every
    node in it for ever (each panel update and slice-view change would leak one)."""
    scene, _, _, _, _, _, r = loaded
    composites = [scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(3)]
    colours = scene_mod.atlas_colors(scene)
    before = [n.GetReferenceCount() for n in (*composites, colours)]
    for _ in range(5):
        scene_mod.show_in_slice_views(scene, r, "gradcam++")
        scene_mod.set_space(r, "mni")
        scene_mod.set_space(r, "native")
        assert scene_mod.atlas_colors(scene) is colours
    gc.collect()
    assert [n.GetReferenceCount() for n in (*composites, colours)] == before
    leaked = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")  # what the unreleased call does
    del leaked
    gc.collect()
    assert composites[0].GetReferenceCount() == before[0] + 1  # so the check above can fail


def test_storage_nodes_are_not_leaked(loaded, oblique_case):
    """CreateDefaultStorageNode hands over a reference: once a node and its storage node leave the scene, only the
    Python variable may hold the storage node."""
    scene, _, _, _, _, _, r = loaded
    node = r.heatmaps["gradcam++"]
    storage = node.GetStorageNode()
    scene.RemoveNode(node)
    scene.RemoveNode(storage)
    del node
    gc.collect()
    assert storage.GetReferenceCount() == 1
    fresh = scene_mod.new_storage_node(r.masks["gradcam++"])
    assert fresh.GetReferenceCount() == 1
    leaky = r.masks["gradcam++"].CreateDefaultStorageNode()  # what an unreleased call gives: the check can fail
    assert leaky.GetReferenceCount() == 2


def test_transform_maps_the_input_into_mni(loaded, oblique_case):
    _, _, _, _, _, _, r = loaded
    _, out, _ = oblique_case
    itk = sitk.ReadTransform(str(out / "transform_to_mni.tfm"))  # MNI (LPS) -> input (LPS)
    to_parent = vtk.vtkMatrix4x4()
    r.to_mni.GetMatrixTransformToParent(to_parent)
    t = np.array([[to_parent.GetElement(i, j) for j in range(4)] for i in range(4)])
    for p_mni_ras in ([0.0, 0.0, 0.0], [-40.0, 12.0, 20.0], [35.0, -60.0, -10.0]):
        q_lps = np.array(itk.TransformPoint((-p_mni_ras[0], -p_mni_ras[1], p_mni_ras[2])))
        q_ras = np.r_[q_lps * [-1, -1, 1], 1.0]
        np.testing.assert_allclose((t @ q_ras)[:3], p_mni_ras, atol=1e-3)


def test_mni_toggle_moves_everything_and_restores_the_input(loaded):
    _, _, user, _, _, _, r = loaded
    assert r.regions.GetTransformNodeID() == r.from_mni.GetID()  # native: atlas shown over the input
    scene = r.template.GetScene()
    view, other = (scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(2))
    method = next(iter(r.heatmaps))
    scene_mod.show_in_slice_views(scene, r, method)
    other.SetBackgroundVolumeID(r.heatmaps[method].GetID())  # a view the user set otherwise
    scene_mod.set_space(r, "mni")
    assert view.GetBackgroundVolumeID() == r.template.GetID()  # everything over the MNI152 template
    assert other.GetBackgroundVolumeID() == r.heatmaps[method].GetID()
    assert user.GetTransformNodeID() == r.to_mni.GetID()
    assert all(n.GetTransformNodeID() == r.to_mni.GetID() for n in r.native_nodes())
    assert r.regions.GetTransformNodeID() is None and r.template.GetTransformNodeID() is None
    scene_mod.set_space(r, "native")
    assert user.GetTransformNodeID() is None and all(n.GetTransformNodeID() is None for n in r.native_nodes())
    assert view.GetBackgroundVolumeID() == user.GetID()
    with pytest.raises(Exception, match="unknown space"):
        scene_mod.set_space(r, "talairach")


def test_nothing_the_user_owned_changed_and_names_are_unique(loaded):
    scene, _, user, decoy, study, before, r = loaded
    assert user.GetMTime() == before["user"] and decoy.GetMTime() == before["decoy"]
    assert decoy.GetName() == "T1 post heatmap gradcam++" != r.heatmaps["gradcam++"].GetName()
    names = [scene.GetNthNode(i).GetName() for i in range(scene.GetNumberOfNodes())]
    ours = [n for n in names if n and n.startswith("T1 post")]
    assert len(ours) == len(set(ours))
    sh = scene.GetSubjectHierarchyNode()
    assert sh.GetItemParent(r.folder) == study
    for node in (*r.native_nodes(), r.table, r.regions, r.template, r.to_mni):
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == r.folder, node.GetName()


def test_region_table_matches_findings(loaded):
    _, _, _, _, _, _, r = loaded
    table = r.table.GetTable()
    assert table.GetNumberOfRows() == len(r.findings["regions"]) > 0
    for i, region in enumerate(r.findings["regions"]):
        assert table.GetValue(i, 0).ToString() == region["name"]
        assert table.GetValue(i, 2).ToDouble() == pytest.approx(region["percent_of_lesion"])


def test_a_folder_without_findings_is_refused_and_scene_untouched(tmp_path):
    scene, _ = scene_mod.headless_scene()
    n = scene.GetNumberOfNodes()
    with pytest.raises(Exception, match="no findings.json"):
        scene_mod.load_results(scene, tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "findings.json").write_text(json.dumps({"explanations": [{"method": "gradcam"}], "regions": []}), encoding="utf-8")
    with pytest.raises(Exception, match="cannot read"):
        scene_mod.load_results(scene, broken)
    assert scene.GetNumberOfNodes() == n


def test_slice_views_render_the_overlays_offscreen(loaded, tmp_path):
    """Slicer's slice logic + displayable managers, rendered through VTK's EGL window: the heat overlay and the
    label layer show up around the lesion, and not without them."""
    from brainxai.mrml import slice_views

    scene, app, _, _, _, _, r = loaded
    centre = slice_views.lesion_centre_ras(r)
    assert centre is not None
    rgb = slice_views.render(scene, app, r, "gradcam++", tmp_path / "views.png", size=200)
    assert rgb.shape == (200, 600, 3) and (tmp_path / "views.png").stat().st_size > 1000
    heat = (rgb[..., 0] > 150) & (rgb[..., 2] < 80) & (rgb[..., 0] > rgb[..., 2] + 80)  # red-yellow, not grey
    assert all(heat[:, i * 200:(i + 1) * 200].sum() > 50 for i in range(3)), [heat[:, i * 200:(i + 1) * 200].sum()
                                                                               for i in range(3)]
    r.regions.GetDisplayNode().SetVisibility(False)  # atlas outlines have warm colours too
    plain = slice_views.render(scene, app, r, "gradcam++", tmp_path / "plain.png", size=200, opacity=0,
                               label_opacity=0)
    plain_heat = (plain[..., 0] > 150) & (plain[..., 2] < 80) & (plain[..., 0] > plain[..., 2] + 80)
    assert plain_heat.sum() < heat.sum() / 20, (plain_heat.sum(), heat.sum())
    assert (plain.sum(-1) > 30).sum() > 0.1 * plain[..., 0].size  # the anatomy is still drawn


def test_rethreshold_reproduces_the_pipeline_and_moves_with_the_percentile(loaded, oblique_case):
    _, _, _, _, _, _, r = loaded
    _, out, _ = oblique_case
    from vtk.util.numpy_support import vtk_to_numpy

    def voxels():
        return vtk_to_numpy(r.masks["gradcam++"].GetImageData().GetPointData().GetScalars()).copy()

    def mni_voxels():
        return int(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "mni" / "mask_gradcam++.nii.gz"))).sum())

    original = json.loads((out / "findings.json").read_text(encoding="utf-8"))
    saved = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "mask_gradcam++.nii.gz"))).ravel()
    saved_mni = mni_voxels()
    np.testing.assert_array_equal(voxels(), saved)
    before = next(e for e in original["explanations"] if e["method"] == "gradcam++")

    (out / "report_llm.md").write_text("written for the 90th percentile", encoding="utf-8")
    stricter = scene_mod.rethreshold(r, "gradcam++", 97)
    assert not (out / "report_llm.md").exists()  # a stale LLM report is not left to be exported
    assert 0 < voxels().sum() < saved.sum()
    on_disk = json.loads((out / "findings.json").read_text(encoding="utf-8"))
    assert on_disk == r.findings and stricter in on_disk["explanations"]
    assert stricter["threshold_percentile"] == 97 and stricter["mask_volume_ml"] < before["mask_volume_ml"]
    voxel_ml = np.prod(sitk.ReadImage(str(out / "mask_gradcam++.nii.gz")).GetSpacing()) / 1000
    assert stricter["mask_volume_ml"] == pytest.approx(voxels().sum() * voxel_ml, abs=1e-3)
    assert 0 < mni_voxels() < saved_mni  # the MNI copy follows
    assert "percentile 97" in (out / "report.md").read_text(encoding="utf-8") and "percentile 97" in (out / "report.html").read_text(encoding="utf-8")
    assert on_disk["regions"] == original["regions"]  # regions come from the segmentation, not the CAM mask
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind

    back = scene_mod.rethreshold(r, "gradcam++", 90)  # exactly the pipeline's mask and findings again
    np.testing.assert_array_equal(voxels(), saved)
    assert back == before and json.loads((out / "findings.json").read_text(encoding="utf-8")) == original
    assert mni_voxels() == saved_mni


def test_rethreshold_refuses_a_method_that_was_not_run(loaded):
    r = loaded[-1]
    with pytest.raises(BrainXAIError, match="no mask for 'scorecam'"):
        scene_mod.rethreshold(r, "scorecam", 95)
    from brainxai.rethreshold import rethreshold

    with pytest.raises(BrainXAIError, match="no 'scorecam' explanation"):
        rethreshold(r.out_dir, "scorecam", 95)


def test_shipped_terminology_table_loads_as_a_slicer_colour_table():
    """The Harvard-Oxford colour/terminology CSV is in Slicer's own format: its storage node reads it, once per
    scene (the colour table Slicer's terminology selector offers)."""
    scene, _ = scene_mod.headless_scene()
    node = scene_mod.atlas_colors(scene)
    assert node.GetContainsTerminology() and scene_mod.atlas_colors(scene) is node
    assert node.GetColorName(1) == "Left_Frontal_Pole" and node.GetColorName(113) == "Right_Accumbens"
    thalamus = node.GetTerminologyAsString(node.GetColorIndexByName("Left_Thalamus"))
    assert "SCT^119406000^Thalamus" in thalamus and "SCT^7771000^Left" in thalamus


def test_scene_saved_as_mrb_reloads_with_geometry_segments_and_terminology(loaded, tmp_path):
    import zipfile

    scene, _, user, _, _, _, r = loaded
    assert scene.WriteToMRB(str(tmp_path / "brainxai.mrb"))
    with zipfile.ZipFile(tmp_path / "brainxai.mrb") as z:
        z.extractall(tmp_path / "x")
    mrml = next((tmp_path / "x").rglob("*.mrml"))
    fresh, _ = scene_mod.headless_scene()
    fresh.SetURL(str(mrml))
    assert fresh.Import()
    heat = fresh.GetFirstNodeByName(r.heatmaps["gradcam++"].GetName())
    np.testing.assert_allclose(ijk_to_ras(heat), ijk_to_ras(r.heatmaps["gradcam++"]), atol=1e-4)
    regions = fresh.GetFirstNodeByName(r.regions.GetName()).GetSegmentation()
    original = r.regions.GetSegmentation()
    assert regions.GetNumberOfSegments() == original.GetNumberOfSegments() > 0
    for i in range(original.GetNumberOfSegments()):
        a, b = original.GetNthSegment(i), regions.GetSegment(original.GetNthSegmentID(i))
        assert (b.GetName(), b.GetTerminology()) == (a.GetName(), a.GetTerminology())


def test_outputs_follow_a_transform_the_user_put_on_the_input(oblique_case):
    path, out, _ = oblique_case
    scene, _ = scene_mod.headless_scene()
    user = read_user_volume(scene, path, "T1 moved")
    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "user shift")
    m = vtk.vtkMatrix4x4()
    m.SetElement(0, 3, 25.0)
    shift.SetMatrixTransformToParent(m)
    user.SetAndObserveTransformNodeID(shift.GetID())
    r = scene_mod.load_results(scene, out, user)
    assert all(n.GetTransformNodeID() == shift.GetID() for n in r.native_nodes())
    assert r.from_mni.GetTransformNodeID() == shift.GetID()  # atlas regions reach the moved input too
    scene_mod.set_space(r, "mni")
    scene_mod.set_space(r, "native")
    assert user.GetTransformNodeID() == shift.GetID()
    assert all(n.GetTransformNodeID() == shift.GetID() for n in r.native_nodes())
