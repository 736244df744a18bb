"""Slicer's MRML without the Slicer application, for the tests: a scene and offscreen slice views.

The ``slicer-core`` wheel holds MRML and the module logics but no Qt, no layout manager and
no ``slicer.app``. :func:`createScene` wires the pieces the module needs (colours, markups,
volumes, segmentations, three slice views Red/Yellow/Green) so the Logic runs in the tests
exactly as in Slicer (inside Slicer, the application provides all of this: the module never
needs it). :func:`renderSliceView` draws one slice view (background + foreground +
markups, through Slicer's own slice logic and markups displayable manager) to a PNG with
VTK's offscreen OpenGL (EGL or OSMesa), i.e. the picture a radiologist sees in the Red view;
:func:`renderSliceViews` puts the three views side by side in one picture.

The Segmentations logic registers the segment representation converters (without them a
segment cannot hold a binary labelmap at all) each time it gets a scene; Slicer has one
scene per process, scripts and tests many, so the repeats are dropped again.

The module logics are kept referenced here: a colour logic that Python lets go of removes
the default colour tables from the scene in its destructor, after which volumes render black.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import slicer
from vtkmodules.vtkCommonCore import vtkCollection

from blcam.io.atomic import atomic_path

SLICE_VIEWS = (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal"))
VIEW_COLORS = {"Red": (243, 74, 51), "Yellow": (237, 213, 76), "Green": (110, 176, 75)}  # Slicer's view bars


@dataclass
class HeadlessSlicer:
    scene: object
    appLogic: object
    logics: dict = field(default_factory=dict)       # module name -> logic (kept alive)
    sliceLogics: dict = field(default_factory=dict)  # view name -> vtkMRMLSliceLogic

    def close(self) -> None:
        for logic in self.sliceLogics.values():
            logic.SetMRMLScene(None)
        self.scene.Clear(True)


def createScene() -> HeadlessSlicer:
    """A scene with colour, markups and volumes logics and the three slice views; becomes
    ``slicer.mrmlScene`` so ``slicer.util`` functions and the Logic use it."""
    scene = slicer.vtkMRMLScene()
    appLogic = slicer.vtkSlicerApplicationLogic()
    appLogic.SetMRMLScene(scene)
    colors = appLogic.GetColorLogic()
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()
    appLogic.SetSliceLogics(vtkCollection())
    appLogic.SetViewLogics(vtkCollection())
    headless = HeadlessSlicer(scene, appLogic, {"Colors": colors})
    appLogic.SetModuleLogic("Colors", colors)
    for name, cls in (("Markups", slicer.vtkSlicerMarkupsLogic), ("Volumes", slicer.vtkSlicerVolumesLogic),
                      ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic)):
        logic = cls()
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(appLogic)
        appLogic.SetModuleLogic(name, logic)
        headless.logics[name] = logic
    _dropRepeatedConverterRules()
    for name, orientation in SLICE_VIEWS:
        sliceLogic = slicer.vtkMRMLSliceLogic()
        sliceLogic.SetMRMLApplicationLogic(appLogic)
        sliceLogic.SetMRMLScene(scene)
        sliceNode = sliceLogic.AddSliceNode(name)
        sliceNode.SetOrientation(orientation)
        appLogic.GetSliceLogics().AddItem(sliceLogic)
        headless.sliceLogics[name] = sliceLogic
    slicer.mrmlScene = scene
    return headless


def _dropRepeatedConverterRules() -> None:
    """Keep one segmentation converter rule of each kind in the process-wide factory."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    seen = set()
    for rule in factory.GetConverterRules():
        if rule.GetName() in seen:
            factory.UnregisterConverterRule(rule)
        seen.add(rule.GetName())


def renderSliceView(headless: HeadlessSlicer, path, view: str = "Red", size=(512, 512), centerRAS=None):
    """Render one slice view offscreen to a PNG (``path`` None: no file); returns the RGB pixels
    ``(height, width, 3)``.

    ``centerRAS``: centre the view on this point (all layers fitted to the background first).
    Raises ``RuntimeError`` when no OpenGL context can be created (no EGL/OSMesa/X).
    """
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    import vtkmodules.vtkInteractionStyle  # noqa: F401  (registers factory overrides)
    import vtkmodules.vtkRenderingFreeType  # noqa: F401  (markups labels)
    import vtkmodules.vtkRenderingOpenGL2  # noqa: F401
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkIOImage import vtkPNGWriter
    from vtkmodules.vtkRenderingCore import (
        vtkActor2D,
        vtkImageMapper,
        vtkRenderer,
        vtkRenderWindow,
        vtkRenderWindowInteractor,
        vtkWindowToImageFilter,
    )

    sliceLogic = headless.sliceLogics[view]
    window = vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*size)
    if not window.SupportsOpenGL():
        raise RuntimeError("no OpenGL context for offscreen rendering (install EGL or OSMesa libraries)")
    renderer = vtkRenderer()
    renderer.GetActiveCamera().ParallelProjectionOn()
    window.AddRenderer(renderer)
    interactor = vtkRenderWindowInteractor()  # the markups widgets need one, it is never started
    interactor.SetRenderWindow(window)

    factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
    factory.SetMRMLApplicationLogic(headless.appLogic)
    if not factory.IsDisplayableManagerRegistered("vtkMRMLMarkupsDisplayableManager"):
        factory.RegisterDisplayableManager("vtkMRMLMarkupsDisplayableManager")
    managers = slicer.vtkMRMLDisplayableManagerGroup()
    managers.Initialize(factory, renderer)
    managers.SetMRMLDisplayableNode(sliceLogic.GetSliceNode())

    sliceLogic.ResizeSliceNode(*size)
    sliceLogic.FitSliceToBackground()
    if centerRAS is not None:
        sliceLogic.GetSliceNode().JumpSliceByCentering(*[float(v) for v in centerRAS])
    mapper = vtkImageMapper()  # the slice logic's output is already RGBA 0-255
    mapper.SetColorWindow(255)
    mapper.SetColorLevel(127.5)
    mapper.SetInputConnection(sliceLogic.GetImageDataConnection())
    actor = vtkActor2D()
    actor.SetMapper(mapper)
    actor.GetProperty().SetDisplayLocationToBackground()
    renderer.AddViewProp(actor)
    window.Render()

    grab = vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.ReadFrontBufferOff()
    grab.Update()
    if path is not None:
        writer = vtkPNGWriter()
        writer.SetFileName(str(path))
        writer.SetInputConnection(grab.GetOutputPort())
        writer.Write()
    image = grab.GetOutput()
    width, height, _ = image.GetDimensions()
    pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)[::-1, :, :3]
    managers.SetMRMLDisplayableNode(None)
    window.Finalize()
    return pixels.copy()


def renderSliceViews(headless: HeadlessSlicer, path, centerRAS, size=(512, 512), views=("Red", "Yellow", "Green"),
                     gap: int = 8, bar: int = 8) -> np.ndarray:
    """Render the slice views through ``centerRAS`` side by side into one PNG, each under a bar
    in its view's colour as in Slicer's view controllers; returns the picture's RGB pixels."""
    panels = [renderSliceView(headless, None, view, size, centerRAS) for view in views]
    width, height = size
    canvas = np.full((height + bar, len(views) * width + (len(views) - 1) * gap, 3), 24, np.uint8)
    for n, (view, pixels) in enumerate(zip(views, panels, strict=True)):
        left = n * (width + gap)
        canvas[:bar, left:left + width] = VIEW_COLORS[view]
        canvas[bar:, left:left + width] = pixels
    writePNG(canvas, path)
    return canvas


def writePNG(pixels: np.ndarray, path) -> None:
    """Write RGB pixels ``(height, width, 3)``, first row on top, atomically."""
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkIOImage import vtkPNGWriter

    height, width, _ = pixels.shape
    image = vtkImageData()
    image.SetDimensions(width, height, 1)
    image.GetPointData().SetScalars(numpy_to_vtk(np.ascontiguousarray(pixels[::-1]).reshape(-1, 3), deep=True))
    with atomic_path(path) as tmp:
        writer = vtkPNGWriter()
        writer.SetFileName(str(tmp))
        writer.SetInputData(image)
        writer.Write()
