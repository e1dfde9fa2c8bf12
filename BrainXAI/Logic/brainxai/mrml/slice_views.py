"""Slice views of a BrainXAI scene rendered offscreen, as Slicer draws them.

Slicer's own slice logic reslices and blends background (input), foreground (heatmap) and label (mask) layers;
its displayable managers add the segmentations (atlas regions) on top. In the Slicer app the views are already
on screen; this is for headless slicer-core (README figures, tests, batch reports), through VTK's EGL window.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import BrainXAIError
from .scene import SceneResult, show_in_slice_views

VIEWS = (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal"))
SLICE_MANAGERS = ("vtkMRMLSegmentationsDisplayableManager2D", "vtkMRMLRulerDisplayableManager")


def lesion_centre_ras(result: SceneResult) -> tuple[float, float, float] | None:
    """World (RAS) centre of the segmented tumour (or, without one, of the first explanation mask), through
    whatever transform the node currently sits under (user's, or MNI), for 'jump to lesion'. None if empty."""
    import slicer
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    for node in (result.segmentation, *result.masks.values()):
        image = node.GetImageData()
        voxels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(image.GetDimensions()[::-1])
        kji = np.argwhere(voxels > 0)
        if len(kji):
            ijk_to_ras = vtk.vtkMatrix4x4()
            node.GetIJKToRASMatrix(ijk_to_ras)
            local = ijk_to_ras.MultiplyPoint((*kji.mean(0)[::-1], 1.0))[:3]
            to_world = vtk.vtkGeneralTransform()
            slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(node.GetParentTransformNode(), None, to_world)
            return tuple(float(v) for v in to_world.TransformPoint(local))
    return None


def jump_to_lesion(scene, result: SceneResult) -> tuple[float, float, float] | None:
    """Centre every slice view on the lesion (MRML only, so it works in Slicer and headless)."""
    import slicer

    centre = lesion_centre_ras(result)
    if centre is not None:
        slicer.vtkMRMLSliceNode.JumpAllSlices(scene, *centre, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    return centre


def render(scene, app, result: SceneResult, method: str, path: str | Path, size: int = 360,
           opacity: float = 0.5, label_opacity: float = 0.6) -> np.ndarray:
    """Axial, sagittal and coronal slice views through the lesion, side by side, written to `path` (PNG).
    Returns the RGB pixels (H, 3*W, 3)."""
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # no X display on servers
    import slicer
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    panels, keep = [], []
    logics = app.GetSliceLogics()
    existing = {logics.GetItemAsObject(i).GetSliceNode().GetLayoutName(): logics.GetItemAsObject(i)
                for i in range(logics.GetNumberOfItems()) if logics.GetItemAsObject(i).GetSliceNode() is not None}
    for name, orientation in VIEWS:
        logic = existing.get(name)
        if logic is None:  # first render of this scene: create the view as Slicer's layout would
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLApplicationLogic(app)
            logic.SetMRMLScene(scene)
            app.GetSliceLogics().AddItem(logic)
            logic.AddSliceNode(name).SetOrientation(orientation)
        keep.append(logic)
    show_in_slice_views(scene, result, method, opacity)
    for logic in keep:
        logic.GetSliceCompositeNode().SetLabelOpacity(label_opacity)
        logic.ResizeSliceNode(size, size)
        logic.FitSliceToAll(size, size)
    jump_to_lesion(scene, result)
    factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
    factory.SetMRMLApplicationLogic(app)
    for manager in SLICE_MANAGERS:
        if not factory.IsDisplayableManagerRegistered(manager):
            factory.RegisterDisplayableManager(manager)
    for logic in keep:
        window = vtk.vtkRenderWindow()
        window.SetOffScreenRendering(1)
        window.SetSize(size, size)
        window.SetMultiSamples(0)
        renderer = vtk.vtkRenderer()
        renderer.GetActiveCamera().ParallelProjectionOn()
        window.AddRenderer(renderer)
        interactor = vtk.vtkRenderWindowInteractor()  # some displayable managers expect one
        interactor.SetRenderWindow(window)
        mapper = vtk.vtkImageMapper()
        mapper.SetColorWindow(255)
        mapper.SetColorLevel(127.5)
        mapper.SetInputConnection(logic.GetImageDataConnection())
        actor = vtk.vtkActor2D()
        actor.SetMapper(mapper)
        actor.GetProperty().SetDisplayLocationToBackground()
        renderer.AddViewProp(actor)
        group = slicer.vtkMRMLDisplayableManagerGroup()
        group.Initialize(factory, renderer)
        group.SetMRMLDisplayableNode(logic.GetSliceNode())
        window.Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(window)
        grab.ReadFrontBufferOff()
        grab.Update()
        pixels = vtk_to_numpy(grab.GetOutput().GetPointData().GetScalars()).reshape(size, size, -1)[::-1, :, :3]
        panels.append(pixels)
        window.Finalize()
    image = np.concatenate(panels, axis=1)
    _write_png(image, Path(path))
    return image


def _write_png(rgb: np.ndarray, path: Path) -> None:
    import vtk
    from vtk.util.numpy_support import numpy_to_vtk

    if path.exists():
        raise BrainXAIError(f"{path} exists: choose another file name")
    img = vtk.vtkImageData()
    img.SetDimensions(rgb.shape[1], rgb.shape[0], 1)
    img.GetPointData().SetScalars(numpy_to_vtk(np.ascontiguousarray(rgb[::-1]).reshape(-1, 3), deep=True))
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(img)
    writer.Write()
