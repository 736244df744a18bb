"""``blcam detect MODEL VOLUME_OR_COHORT... --out DIR``: heatmaps and lesion candidates."""

from __future__ import annotations

from ..cam.dense import CONTEXTS
from ..detect.pipeline import HEATMAP_MODES, METHODS, DetectSettings, detect
from ..detect.refine import MODES as REFINE_MODES
from ..device import device_name, resolve_device
from . import positive_int
from .progress import ProgressEmitter


def register(sub) -> None:
    d = DetectSettings()
    p = sub.add_parser("detect", help="whole-volume heatmaps and lesion candidates",
                       description="Compute a lesion heatmap over each whole volume, find lesion candidates "
                       "(position, calibrated probability, size) and write them for Slicer (NRRD heatmap with "
                       "the input's geometry, .mrk.json markups), as CSV/JSON, and as overlay pictures.")
    p.add_argument("model", metavar="MODEL",
                   help="model file or run folder (its model.safetensors, from 'blcam train')")
    p.add_argument("inputs", nargs="+", metavar="VOLUME_OR_COHORT",
                   help="volume files (NRRD, NIfTI, MHA, DICOM folder) and/or cohort CSVs (every volume in them)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", choices=METHODS, default=d.method,
                   help="'fast': one tiled forward pass, CAM of the final linear layer (equal to Grad-CAM for "
                   "this network); 'sliding': Grad-CAM on every crop-sized window, 50%% overlap, blended "
                   f"(slow reference) (default: {d.method})")
    p.add_argument("--context", choices=CONTEXTS, default=d.context,
                   help="fast method, context along the slice axis: 'slab' = slabs of the training crop's depth, "
                   "the depth the network was trained on (see --slab-step); 'volume' = one pass over the whole "
                   "volume (each feature sees its full receptive field; fastest) "
                   f"(default: {d.context})")
    p.add_argument("--slab-step", type=positive_int, default=None,
                   help="--context slab: slices between slab starts (default: the model's patch depth minus its "
                   "crop depth, the lesions' depth jitter in training: 12 for 28/16; the crop depth reads each "
                   "voxel once)")
    p.add_argument("--device", type=device_name, default="auto",
                   help="where the network runs: auto, cpu, cuda, cuda:N or mps; 'auto': CUDA, else MPS, else CPU "
                   "(default: auto)")
    p.add_argument("--top-k", type=positive_int, default=d.top_k,
                   help=f"most candidates kept per volume (default: {d.top_k})")
    p.add_argument("--min-score", type=float, default=d.min_score,
                   help="drop candidates scoring below this: the chance of a hit for a model calibrated by "
                   f"'blcam calibrate', else the network's sigmoid (default: {d.min_score})")
    p.add_argument("--nms-mm", type=float, default=d.nms_mm,
                   help=f"candidates closer than this (mm) to a stronger one are suppressed (default: {d.nms_mm})")
    p.add_argument("--max-memory-gb", type=float, default=d.max_memory_gb,
                   help="memory budget; tiles are sized to fit it (RAM on the CPU, GPU memory on CUDA) "
                   f"(default: {d.max_memory_gb})")
    p.add_argument("--overlays", type=int, default=d.overlays,
                   help=f"candidates per volume that get an overlay PNG (default: {d.overlays})")
    p.add_argument("--no-pictures", dest="pictures", action="store_false",
                   help="write no overlay PNGs and no contact sheet, only the heatmap and candidates (the Slicer "
                   "panel's Detect, which shows the volume itself: the pictures take half of a demo-size "
                   "volume's time) (default: write them)")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                   help=f"windows per Grad-CAM batch for --method sliding (default: {d.batch_size})")
    p.add_argument("--refine", type=int, default=d.refine, metavar="N",
                   help="move the N best candidates of each volume to where the network itself answers best, "
                   "searched at a few voxels' spacing (0: off; timed separately in detections.csv; --method fast "
                   "only: the sliding-window map stays the reference Grad-CAM as it finds its peaks) "
                   f"(default: {d.refine})")
    p.add_argument("--refine-mode", choices=REFINE_MODES, default=None,
                   help="what refinement maximises: 'local' = the point-supervised local logit, 'crop' = the "
                   "classifier's crop logit (default: local for point-supervised models, else crop)")
    p.add_argument("--snap-mm", type=float, default=d.snap_mm, metavar="MM",
                   help="move every candidate onto the darkest blob of the image within MM millimetres (breast "
                   "lesions are darker than the tissue around them; the map's grid leaves a candidate a few mm "
                   "off a small lesion's centre); scores are unchanged; 0: off; either method "
                   f"(default: {d.snap_mm:g})")
    p.add_argument("--heatmap", choices=HEATMAP_MODES, default=d.heatmap,
                   help="the heatmap's scale: 'relative' = divided by its own maximum, so every volume shows a hot "
                   "spot (the paper's display); 'probability' = that map times the volume's calibrated lesion "
                   "probability, so colours compare across volumes and a healthy breast stays dark (needs a model "
                   "calibrated by 'blcam calibrate'); 'auto' = probability when the model is calibrated "
                   f"(default: {d.heatmap})")
    p.add_argument("--no-data-value", type=float, default=None, metavar="V",
                   help="grey value that your export writes where nothing was imaged (e.g. 0 outside a curved "
                   "field of view): its voxels that reach a face of the volume are left out like NaN voxels, "
                   "mid-grey to the network and without heat or candidates, while a region of V inside the "
                   "tissue (an anechoic cyst) stays image. NaN voxels and constant planes padded onto the faces "
                   "are always left out (default: none)")
    p.add_argument("--force", action="store_true",
                   help="recompute every volume, even those an earlier run into --out finished from the same "
                   "model, volume and settings (default: skip them)")
    p.add_argument("--progress-json", action="store_true",
                   help="print progress as JSON lines on stdout (blcam.cli.progress; for the Slicer module) "
                   "(default: off)")
    p.set_defaults(func=run)


def run(args) -> int:
    settings = DetectSettings(method=args.method, context=args.context, slab_step=args.slab_step, top_k=args.top_k,
                              min_score=args.min_score, nms_mm=args.nms_mm, max_memory_gb=args.max_memory_gb,
                              overlays=args.overlays, pictures=args.pictures, batch_size=args.batch_size,
                              refine=args.refine, refine_mode=args.refine_mode, snap_mm=args.snap_mm,
                              heatmap=args.heatmap, no_data_value=args.no_data_value)
    emitter = ProgressEmitter(args.progress_json)
    on_progress = (lambda r: emitter.progress(**r)) if args.progress_json else None
    summary = detect(args.model, args.inputs, args.out, settings, str(resolve_device(args.device)),
                     progress=not args.progress_json, on_progress=on_progress, force=args.force)
    if args.progress_json:
        emitter.done(summary=str(summary))
    else:
        print(f"wrote {summary}")
    return 0
