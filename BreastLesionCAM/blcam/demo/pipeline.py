"""``blcam demo``: the whole main job on the embedded phantom, end to end, on a laptop CPU.

phantom cohort → patch export → training (the default recipe, scaled down) → Table 2 on the
held-out patches → score calibration (Detect on phantom patients set aside for it, never
trained or tested on, then ``blcam calibrate``) → Detect on the held-out *volumes* →
localisation metrics (with the phantom's ``lesions.csv``: per lesion kind and size;
calibration of the scores) → pictures of the volumes the report shows (Detect runs without
pictures, which were half of its time, and draws only these afterwards,
:mod:`blcam.detect.redraw`) → report (``index.html`` and ``report.md``). The default
configuration is sized to finish in under 15 minutes on a 2-core CPU: volumes at 0.5 mm
isotropic spacing (the phantom's default is ABUS-like 1.0 × 0.15 × 0.2 mm), a half-width
ResNet-10 with the paper's stem (finest map) and 16×32×48 crops in 28×64×96 patches. The
patches have the paper's proportions (28/16 slices; in-plane the crop is half the patch, as
160 of 280), so a lesion lands anywhere within ±6 slices and ±16/±24 voxels of a crop's
centre: point supervision (:mod:`blcam.training.point_supervision`) then has something to
teach, and slabs every 12 slices keep Detect fast. Crops stay inside the volume's part of
each patch (:func:`blcam.training.data.crop_ranges`), so padding beside border lesions
cannot teach "padding means lesion". 80 epochs: on the validation cohort (seed 11) 40 epochs
never hit an oval mass and 80 did; training in channels_last_3d on the CPU
(:func:`blcam.training.data.prefers_channels_last`) made them affordable. ``recipe="paper"``
trains the paper's method exactly instead. The held-out patches (the test split, which never
picks the model's epoch) are scored every ``val_every`` epochs, for the training curves only:
each scoring cost about a tenth of an epoch.

Each step records its completion in ``demo_state.json`` with the configuration it ran with,
so an interrupted demo resumes where it stopped and a changed configuration redoes only the
steps it affects.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..axes import PathLike
from ..cohort import write_cohort_subset
from ..detect.pipeline import DetectSettings, detect
from ..detect.redraw import redraw_pictures
from ..detect.snap import DEFAULT_RADIUS_MM as SNAP_RADIUS_MM
from ..device import resolve_device
from ..errors import BlcamError
from ..evaluation import evaluate_model
from ..evaluation.detection import evaluate_detection
from ..evaluation.recalibration import calibrate_model
from ..io.atomic import write_json_atomic
from ..model import MODEL_FILE, read_metadata, replace_metadata
from ..patches.export import ExportSettings, export_dataset
from ..phantom import make_cohort
from ..recipes import recipe_config
from ..training import train_model
from ..training.resume_guard import resume_problem
from .report import shown_volumes, write_report


@dataclass
class DemoConfig:
    """Sizes of the demo; every default is chosen for a 2-core CPU (see module docstring)."""

    patients: int = 100
    seed: int = 1
    shape: tuple = (48, 96, 160)
    spacing: tuple = (0.5, 0.5, 0.5)
    lesion_fraction: float = 0.6
    patch: tuple = (28, 64, 96)
    negatives_per_volume: int = 8
    test_fraction: float = 0.3
    arch: str = "resnet10"
    stem: str = "paper"
    widen: float = 0.5
    crop: tuple = (16, 32, 48)
    epochs: int = 80              # 40 left the oval masses unfound (validation cohort, bench/RESULTS.md)
    recipe: str = "default"
    hard_negatives: int = 0       # mining rounds (an option: it did not win on the validation cohort)
    batch_size: int = 14
    lr: float = 1e-3
    val_every: int = 4            # held-out AUC on the curves every 4 epochs (it picks nothing)
    device: str = "auto"
    jobs: int = 2
    top_k: int = 10
    nms_mm: float = 10.0
    overlays: int = 1
    refine: int = 3
    snap_mm: float = SNAP_RADIUS_MM
    calibration_patients: int = 16   # set aside for the score maps (another seed); 0: raw scores

    def detect_settings(self) -> DetectSettings:
        """What the demo's Detect runs with (held-out volumes and calibration patients alike)."""
        return DetectSettings(top_k=self.top_k, nms_mm=self.nms_mm, refine=self.refine, snap_mm=self.snap_mm,
                              pictures=False)

    def part(self, step: str) -> dict:
        """The settings a step depends on (a change redoes that step and the ones after it)."""
        d = asdict(self)
        keys = {"phantom": ["patients", "seed", "shape", "spacing", "lesion_fraction"],
                "export": ["patch", "negatives_per_volume", "test_fraction", "seed"],
                "train": ["arch", "stem", "widen", "crop", "epochs", "batch_size", "lr", "seed", "recipe",
                          "hard_negatives", "val_every"],
                "evaluate": [],
                "calibrate": ["calibration_patients", "seed", "shape", "spacing", "lesion_fraction", "top_k", "nms_mm",
                              "refine", "snap_mm"],
                "detect": ["top_k", "nms_mm", "refine", "snap_mm"], "metrics": [], "pictures": ["overlays"],
                "report": []}[step]
        part = {k: list(d[k]) if isinstance(d[k], tuple) else d[k] for k in keys}
        if step in STEP_VERSIONS:
            part["version"] = STEP_VERSIONS[step]
        return part


# A step whose output changed (metrics 2: breakdown per kind and size, calibration) reruns
# in an existing demo folder, and so does every step after it.
STEP_VERSIONS = {"metrics": 2}
STEPS = ("phantom", "export", "train", "evaluate", "calibrate", "detect", "metrics", "pictures", "report")
CALIBRATION_SEED = 1000          # the calibration patients' phantom seed: the demo's seed + this


class _State:
    """``demo_state.json``: which steps finished, with which settings."""

    def __init__(self, out: Path, config: DemoConfig):
        self.path, self.config = out / "demo_state.json", config
        self.done = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        self.stale = False

    def fresh(self, step: str) -> bool:
        """Whether ``step`` finished earlier with the same settings and nothing before it changed."""
        ok = not self.stale and self.done.get(step) == self.config.part(step)
        self.stale = self.stale or not ok
        return ok

    def finish(self, step: str) -> None:
        self.done[step] = self.config.part(step)
        write_json_atomic(self.path, self.done)


def _say(n: int, text: str) -> None:
    print(f"[{n}/{len(STEPS)}] {text}", flush=True)


def held_out_cohort(cohort_csv: Path, manifest_csv: Path, out_csv: Path) -> Path:
    """The cohort rows of the test-split patients: the volumes Detect is evaluated on."""
    with manifest_csv.open(newline="", encoding="utf-8") as fh:
        test = {r["patient"] for r in csv.DictReader(fh) if r["split"] == "test"}
    if not test:
        raise BlcamError(f"{manifest_csv}: no test patients; raise --patients")
    return write_cohort_subset(cohort_csv, test, out_csv, "the test patients")


def run_demo(out: PathLike, config: DemoConfig | None = None, progress: bool = True) -> Path:
    """Run (or resume) the demo under ``out`` (``config``: the defaults when ``None``);
    returns the path of ``index.html``."""
    config = DemoConfig() if config is None else config
    if config.calibration_patients < 0:
        raise BlcamError(f"--calibration-patients must be 0 or more, got {config.calibration_patients}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = _State(out, config)
    c = config
    device = str(resolve_device(c.device))
    paths = {"cohort": out / "phantom" / "cohort.csv", "patches": out / "patches", "run": out / "run",
             "evaluation": out / "evaluation" / "table2.json", "test_cohort": out / "held_out_cohort.csv",
             "detections": out / "detections", "localisation": out / "detections" / "localisation.json",
             "calibration": out / "calibration"}
    timings = json.loads((out / "timings.json").read_text(encoding="utf-8")) if (out / "timings.json").is_file() else {}

    def step(n: int, name: str, text: str, fn: Callable[[], object]) -> None:
        if state.fresh(name):
            _say(n, f"{text}: done earlier, kept")
            return
        _say(n, text)
        start = time.perf_counter()
        fn()
        timings[name] = round(time.perf_counter() - start, 1)
        write_json_atomic(out / "timings.json", timings)
        state.finish(name)

    step(1, "phantom", f"phantom cohort: {c.patients} patients, {'×'.join(map(str, c.shape))} voxels at "
         f"{'×'.join(map(str, c.spacing))} mm",
         lambda: make_cohort(out / "phantom", c.patients, c.seed, c.jobs, c.shape, c.spacing, c.lesion_fraction,
                             progress=progress))

    def export():
        if paths["patches"].exists():
            shutil.rmtree(paths["patches"])
        export_dataset(paths["cohort"], paths["patches"], ExportSettings(tuple(c.patch), c.negatives_per_volume,
                                                                          c.test_fraction, None, c.seed),
                       jobs=c.jobs, progress=progress)
    step(2, "export", f"export {'×'.join(map(str, c.patch))} patches", export)

    def train():
        extra = {"hard_negatives": c.hard_negatives} if c.recipe == "default" else {}
        cfg = recipe_config(c.recipe, arch=c.arch, stem=c.stem, widen=c.widen, epochs=c.epochs,
                            batch_size=c.batch_size, lr=c.lr, crop=tuple(c.crop), device=device, seed=c.seed,
                            workers=0, val_every=c.val_every, **extra)
        # An interrupted training continues from its last epoch (same recipe and export);
        # anything else starts afresh.
        problem = resume_problem(paths["run"] / "last.pt", paths["patches"], cfg) if paths["run"].exists() else ""
        resume = paths["run"].exists() and not problem
        if resume:
            print(f"continuing the interrupted training in {paths['run']}", flush=True)
        elif paths["run"].exists():
            print(f"starting the training afresh: {paths['run']} holds {problem}", flush=True)
            shutil.rmtree(paths["run"])
        train_model(paths["patches"], paths["run"], cfg, progress=progress, resume=resume)
    step(3, "train", f"train {c.arch} (stem {c.stem}, width {c.widen}, recipe {c.recipe}) for {c.epochs} epochs "
         f"on {device}", train)

    step(4, "evaluate", "Table 2 on the held-out patches",
         lambda: evaluate_model(paths["run"], paths["patches"], "test", paths["evaluation"], device,
                                progress=progress))

    step(5, "calibrate", f"score calibration on {c.calibration_patients} patients set aside (seed "
         f"{c.seed + CALIBRATION_SEED})", lambda: calibrate_scores(paths["run"], paths["calibration"], c, device,
                                                                   progress))

    def run_detect():
        held_out_cohort(paths["cohort"], paths["patches"] / "manifest.csv", paths["test_cohort"])
        detect(paths["run"], [paths["test_cohort"]], paths["detections"], c.detect_settings(), device,
               progress=progress)
    step(6, "detect", "Detect on the held-out volumes (heatmaps and candidates)", run_detect)

    def metrics():
        # The phantom's lesions.csv gives each lesion's kind and diameter: metrics per kind and size.
        r = evaluate_detection(paths["detections"], paths["test_cohort"], paths["localisation"],
                               out / "phantom" / "masks", lesions=out / "phantom" / "lesions.csv")
        print(f"      pointing game {r['pointing_game']:.3f}, median distance {r['distance_mm_median']:.2f} mm, "
              f"FROC {r['froc']['mean_sensitivity']:.3f}, volume AUC {r['volume_auc']:.3f}", flush=True)
    step(7, "metrics", "localisation metrics (pointing game, distance, FROC, volume AUC, per kind and size, "
         "calibration)", metrics)

    def pictures():
        names = shown_volumes(paths["detections"], paths["localisation"])
        redraw_pictures(paths["detections"], [paths["test_cohort"]], names, c.overlays, progress=progress)
    step(8, "pictures", "overlays and contact sheets of the volumes the report shows", pictures)

    index = out / "index.html"
    step(9, "report", "report", lambda: write_report(out, paths, config, timings))
    print(f"report: {index}  (and {out / 'report.md'})", flush=True)
    return index


def calibrate_scores(run: Path, folder: Path, c: DemoConfig, device: str, progress: bool) -> None:
    """The demo's score maps: Detect on ``c.calibration_patients`` new phantom patients (a seed no
    other step uses), then :func:`calibrate_model` into the run's model file. A fit the data
    cannot support (e.g. no hit at all from a barely trained model) leaves the scores raw and
    says why in ``calibration.json``; the report shows it."""
    if folder.exists():
        shutil.rmtree(folder)
    report = folder / "calibration.json"
    model = run / MODEL_FILE
    meta = read_metadata(model)
    if meta.pop("calibration", None) is not None:          # an earlier demo's maps: refit from raw
        replace_metadata(model, meta)
    if c.calibration_patients <= 0:
        write_json_atomic(report, {"skipped": "calibration_patients is 0"})
        return
    cohort = make_cohort(folder / "phantom", c.calibration_patients, c.seed + CALIBRATION_SEED, c.jobs, c.shape,
                         c.spacing, c.lesion_fraction, progress=progress)
    detect(run, [cohort], folder / "detections", c.detect_settings(), device, progress=progress)
    try:
        fit = calibrate_model(run, folder / "detections", cohort, masks_dir=folder / "phantom" / "masks",
                              report=report)
    except BlcamError as exc:
        print(f"      scores left uncalibrated: {exc}", flush=True)
        write_json_atomic(report, {"skipped": str(exc)})
        return
    rel = fit["reliability"]
    print(f"      candidate ECE on these volumes {rel['raw']['candidate']['ece']:.3f} → {rel['ece']:.3f}", flush=True)
