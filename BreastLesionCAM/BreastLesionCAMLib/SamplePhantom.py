"""Sample data: a synthetic ABUS phantom, made on this computer, in Slicer's Sample Data module.

No patient scans can ship with the extension, and the project's phantom (:mod:`blcam.phantom`)
is its embedded data set anyway. One demo-size patient takes about a second to simulate, so
the Sample Data entries *generate* their volume instead of downloading it: nothing to host,
no checksums, and it works offline right after installing. Two entries, in the category
"BreastLesionCAM":

* **ABUS phantom with lesions**: the lesion volume of a one-patient phantom cohort and its
  lesion centres as a markups fiducial node (what a radiologist would click);
* **healthy ABUS phantom**: a healthy patient's volume (fat lobules and shadows, no mass).

The first click writes the cohort (``blcam phantom --patients 1`` at the demo preset, fixed
seed) into Slicer's cache folder; later clicks reuse it. The folder is a valid cohort
(``cohort.csv``, masks, ``lesions.csv``), so it also works with ``blcam export``/``detect``.

:func:`loadSample` (Qt-free: generate, then load through MRML storage nodes) is what the
tests and scripts call; :func:`registerSampleData` adds the entries and does nothing where
Slicer's SampleData module is absent (``slicer-core``, or a Slicer without it). Imports of
numpy/SimpleITK are deferred: this module is imported while Slicer starts.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from blcam.errors import BlcamError

CATEGORY = "BreastLesionCAM"
SEED = 0                     # fixed: every computer gets the same phantom
ICONS = Path(__file__).resolve().parents[1] / "Resources" / "Icons"
# A model trained by `make demo` on phantoms (0.5 mm, recorded in the file): Detect works on
# the samples right after installing. A phantom model: for trying the tool, not for patients.
DEMO_MODEL = Path(__file__).resolve().parents[1] / "Resources" / "Models" / "PhantomDemo.safetensors"


@dataclass(frozen=True)
class Sample:
    name: str                # shown in the Sample Data module
    label: str               # the cohort label of the volume to load: 'lesion' | 'healthy'
    lesionFraction: float    # makes the one phantom patient a lesion or a healthy patient
    nodeName: str
    thumbnail: str           # file in Resources/Icons


SAMPLES = (
    Sample("ABUS phantom with lesions", "lesion", 1.0, "ABUS phantom lesion", "SamplePhantomLesion.png"),
    Sample("healthy ABUS phantom", "healthy", 0.0, "ABUS phantom healthy", "SamplePhantomHealthy.png"),
)


@dataclass
class LoadedSample:
    volume: object           # vtkMRMLScalarVolumeNode
    centres: object          # vtkMRMLMarkupsFiducialNode, or None for the healthy sample
    folder: Path             # the generated cohort


def sampleFor(label: str) -> Sample:
    for sample in SAMPLES:
        if sample.label == label:
            return sample
    raise BlcamError(f"sample label '{label}': unknown; use one of {', '.join(s.label for s in SAMPLES)}")


def sampleFolder(cacheFolder, label: str) -> Path:
    """Where the sample's cohort lives: versioned, so a new generator writes a new one."""
    from blcam import __version__
    return Path(cacheFolder) / f"BreastLesionCAM-phantom-{sampleFor(label).label}-seed{SEED}-{__version__}"


def generateSample(cacheFolder, label: str):
    """Write the sample's cohort unless a complete one is there; its :class:`CohortRow` to load.

    ``phantom.json`` is the cohort writer's last file, so its presence means a finished
    cohort; a cache someone partly deleted is made again."""
    from blcam.cohort import read_cohort
    from blcam.phantom import make_cohort

    sample = sampleFor(label)
    folder = sampleFolder(cacheFolder, label)
    for attempt in (1, 2):
        if attempt == 2 or not (folder / "phantom.json").is_file():
            logging.info("BreastLesionCAM: generating the '%s' sample in %s", sample.name, folder)
            make_cohort(folder, patients=1, seed=SEED, lesion_fraction=sample.lesionFraction, progress=False)
        try:
            rows = read_cohort(folder / "cohort.csv").rows
            break
        except BlcamError:
            if attempt == 2:
                raise
            logging.warning("BreastLesionCAM: the cached '%s' sample is incomplete; generating it again", sample.name)
    return next(row for row in rows if row.label == sample.label)


def loadSample(scene, label: str, cacheFolder) -> LoadedSample:
    """Generate the sample (first use) and load it into ``scene``: the volume, and for the
    lesion sample its lesion centres as a fiducial node."""
    from .NodeIO import readMarkupsJson, readVolumeFile

    sample = sampleFor(label)
    row = generateSample(cacheFolder, label)
    volume = readVolumeFile(row.volume, scene, scene.GenerateUniqueName(sample.nodeName))
    centres = None
    if row.annotation is not None:
        centres = readMarkupsJson(row.annotation, scene, scene.GenerateUniqueName(f"{sample.nodeName} centres"))
        if centres.GetDisplayNode() is None:
            centres.CreateDefaultDisplayNodes()
    return LoadedSample(volume, centres, sampleFolder(cacheFolder, label))


def sourceArguments(sample: Sample, cacheFolder) -> dict:
    """Keyword arguments of ``SampleDataLogic.registerCustomSampleDataSource`` (Slicer 5.8+).

    A source must name a URI and a file even with a custom downloader: they name the cohort
    the downloader writes, which Sample Data never fetches itself."""
    folder = sampleFolder(cacheFolder, sample.label)
    return dict(category=CATEGORY, sampleName=sample.name, uris=(folder / "cohort.csv").as_uri(),
                fileNames="cohort.csv", nodeNames=sample.nodeName, loadFiles=False,
                thumbnailFileName=str(ICONS / sample.thumbnail),
                customDownloader=functools.partial(_downloadSample, sample.label))


def slicerCacheFolder() -> str:
    import slicer
    return slicer.mrmlScene.GetCacheManager().GetRemoteCacheDirectory()


def registerSampleData() -> bool:
    """Add the two phantom entries to the Sample Data module; False when it is not there."""
    try:
        import SampleData
    except ImportError:
        logging.info("BreastLesionCAM: no SampleData module here; phantom samples not registered")
        return False
    logic = SampleData.SampleDataLogic
    if hasattr(logic, "registerCustomSampleDataCategory"):  # Slicer 5.12+
        logic.registerCustomSampleDataCategory(CATEGORY, title="Breast Lesion CAM")
    cacheFolder = slicerCacheFolder()
    for sample in SAMPLES:
        logic.registerCustomSampleDataSource(**sourceArguments(sample, cacheFolder))
    return True


def _downloadSample(label: str, source=None) -> LoadedSample | None:
    """The Sample Data button: generate and load, show the volume, report failures in a dialog."""
    import slicer
    sample = sampleFor(label)
    loaded = None
    with slicer.util.tryWithErrorDisplay(f"Could not create the '{sample.name}' sample in "
                                         f"{slicerCacheFolder()}.", waitCursor=True):
        loaded = loadSample(slicer.mrmlScene, label, slicerCacheFolder())
        slicer.util.setSliceViewerLayers(background=loaded.volume, fit=True)
        from .Logic import BreastLesionCAMLogic
        BreastLesionCAMLogic().useDemoModel(loaded.volume)
    return loaded
