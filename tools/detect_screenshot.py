"""Draw ``Resources/Screenshots/DetectThreeViews.png``: Detect's result in Slicer's three slice views.

Runs the module's own scenario (``BreastLesionCAMLib.Scenario``, also its Slicer self-test) on
real MRML from the ``slicer-core`` wheel, without the Slicer application: phantom cases go
through the Logic (add cases, export, train a tiny network, Detect on a held-out case, each a
background ``python -m blcam`` process), then the Red (axial), Yellow (sagittal) and Green
(coronal) views are rendered offscreen through the top candidate, heatmap overlay and
candidate markers included, and put side by side in one picture. About a minute on two CPU
cores; needs an offscreen OpenGL (EGL or OSMesa).

Usage: ``python tools/detect_screenshot.py [OUT.png] [--size PIXELS]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "BreastLesionCAM"))
sys.path.insert(0, str(ROOT / "Testing" / "Python"))     # the slicer-core scene and offscreen views

from _headless import createScene, renderSliceViews  # noqa: E402
from BreastLesionCAMLib import Scenario  # noqa: E402
from BreastLesionCAMLib.Jobs import JobState  # noqa: E402
from BreastLesionCAMLib.Logic import BreastLesionCAMLogic  # noqa: E402
from BreastLesionCAMLib.NodeIO import controlPointsWorldRAS  # noqa: E402


def _run(job, what: str):
    if job.wait(Scenario.TIMEOUT_S) is not JobState.SUCCEEDED:
        raise SystemExit(f"{what} failed: {job.message}")
    return job


def draw(out: Path, size: int) -> None:
    headless = createScene()
    logic = BreastLesionCAMLogic()
    try:
        with tempfile.TemporaryDirectory(prefix="blcam-screenshot-") as work:
            dataset = Path(work) / "dataset"
            cases = Scenario.addCohort(headless.scene)
            for case in cases:
                if not case.heldOut:
                    logic.addCase(case.volume, dataset, case.patient, case.label, case.centres)
            print("export, train, detect ...", flush=True)
            _run(logic.exportPatches(dataset, extraArgs=Scenario.EXPORT_ARGS), "export")
            _run(logic.startTraining(dataset / "patches", Path(work) / "run", **Scenario.TRAIN_SETTINGS), "training")
            held = next(case for case in cases if case.heldOut)
            detect = _run(logic.detect(held.volume, logic.getParameterNode().modelPath, outFolder=Path(work) / "detect",
                                       extraArgs=Scenario.DETECT_ARGS), "detect")
            problems = Scenario.checkDetection(held, detect.result)
            if problems:
                raise SystemExit("Detect went wrong: " + "; ".join(problems))
            held.centres.GetDisplayNode().SetVisibility(False)   # show what Detect found, not the truth
            top = controlPointsWorldRAS(detect.result.candidates)[0]
            renderSliceViews(headless, out, top, size=(size, size))
    finally:
        headless.close()
    print(f"wrote {out}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "Resources" / "Screenshots" / "DetectThreeViews.png"))
    parser.add_argument("--size", type=int, default=400, help="pixels per view, square (default 400)")
    args = parser.parse_args(argv)
    draw(Path(args.out), args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
