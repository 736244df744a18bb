"""The demo's report: one page with Table 2, the curves, the localisation metrics and overlays.

Written twice from the same content: ``index.html`` (opens in any browser, images by
relative path so the folder can be moved or zipped) and ``report.md`` (renders on GitHub
and in editors). The overlay pictures are the contact sheets of the held-out lesion volumes
the model scored highest and lowest, and of the healthy volumes it scored highest (its
most convincing false alarms): the cases worth looking at. Where the localisation result
has them, the per-kind and per-size tables, the calibration of the scores (reliability
diagram) and contact sheets of lesion volumes whose lesions were all hit and of volumes
with a missed lesion (captioned with each lesion's kind, size and distance) follow: the
misses say which lesions the detector cannot yet find. Which volumes those are is
:mod:`blcam.evaluation.showcase`'s choice, shared with ``blcam evaluate-detection --pictures``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..detect.outputs import VolumeOutputs
from ..evaluation.detection import figure_paths
from ..evaluation.showcase import by_score, hits_and_misses, names_of
from ..io.atomic import write_text_atomic
from ..metrics.breakdown import breakdown_tables, fmt, md_table
from ..metrics.calibration import calibration_table
from ..metrics.localisation import FROC_RATES

if TYPE_CHECKING:
    from .pipeline import DemoConfig

MODES = (("patch", "full patch"), ("centre", "centred crop"), ("random", "random crop"))
METRICS = (("auc", "AUC"), ("accuracy", "accuracy"), ("sensitivity", "sensitivity"), ("specificity", "specificity"))


def shown_volumes(det_dir: Path, localisation: Path) -> list[str]:
    """The names of the volumes whose contact sheets the report shows (the demo draws only these)."""
    loc = json.loads(localisation.read_text(encoding="utf-8"))
    return names_of(by_score(det_dir), hits_and_misses(det_dir, loc))


def _relative(det_dir: Path, name: str) -> str:
    """The contact sheet of volume ``name``, relative to the report (beside ``det_dir``)."""
    return f"{det_dir.name}/{VolumeOutputs(det_dir, name).contact.name}"


def _tables(evaluation: dict, loc: dict) -> dict[str, list[list[str]]]:
    """Header + rows of the report's tables, shared by the HTML and Markdown renderings."""
    modes = evaluation["modes"]
    sizes = {m: modes[m]["input"] for m, _ in MODES}
    table2 = [["metric"] + [f"{name} ({sizes[m]})" for m, name in MODES]]
    table2 += [[label] + [fmt(modes[m].get(key), 4) for m, _ in MODES] for key, label in METRICS]
    f = loc["froc"]
    off = loc.get("offset_kji_voxels_mean")
    local = [["metric", "value"],
             ["pointing game", fmt(loc["pointing_game"])],
             ["peak-to-centre distance, median (mean)",
              f"{fmt(loc['distance_mm_median'], 2)} mm ({fmt(loc['distance_mm_mean'], 2)} mm)"],
             ["FROC mean sensitivity, 0.125–8 FP/volume", fmt(f["mean_sensitivity"])],
             ["volume-level AUC (highest candidate)", fmt(loc["volume_auc"])],
             ["mean offset of hits, voxels (k, j, i)", "–" if off is None else ", ".join(f"{v:+.1f}" for v in off)]]
    froc = [["FP per volume"] + [f"{r:g}" for r in FROC_RATES], ["sensitivity"] + [fmt(s) for s in f["sensitivity"]]]
    tables = {"table2": table2, "localisation": local, "froc": froc, **breakdown_tables(loc)}
    if loc.get("calibration"):
        tables["calibration"] = calibration_table(loc["calibration"])
    return tables


def _calibration_note(folder: Path | None) -> str:
    """Where the demo's score maps came from (``blcam calibrate``), or why the scores are raw."""
    path = None if folder is None else Path(folder) / "calibration.json"
    if path is None or not path.is_file():
        return "The scores are the network's raw sigmoid (not calibrated)."
    fit = json.loads(path.read_text(encoding="utf-8"))
    if "skipped" in fit:
        return f"The scores are the network's raw sigmoid: calibration was skipped ({fit['skipped']})."
    rec = fit["calibration"]
    return (f"The scores were calibrated ('blcam calibrate') on {rec['volumes']} volumes of phantom patients set "
            f"aside for it, never trained or tested on ({rec['candidates']} candidates, {rec['hits']} hits); the "
            "raw rows score the network's own sigmoid of the same held-out candidates.")


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_BREAKDOWN_TEXT = ("Kind and diameter from the phantom's lesions.csv; FROC per group counts only that "
                   "group's lesions (false positives are shared by all groups).")


def _candidates_text(c) -> str:
    """How the demo's Detect placed its candidates (README, Detect), in one sentence."""
    parts = [f"Candidates: the map's peaks (non-maximum suppression at {c.nms_mm:g} mm)"]
    if c.refine:
        parts.append(f"the best {c.refine} refined by the network")
    if c.snap_mm:
        parts.append(f"each snapped onto the darkest blob within {c.snap_mm:g} mm")
    return ", ".join(parts) + "."


def write_report(out: Path, paths: dict, config: DemoConfig, timings: dict) -> Path:
    """Write ``index.html`` and ``report.md`` under ``out``; returns the HTML path."""
    evaluation = json.loads(paths["evaluation"].read_text(encoding="utf-8"))
    loc = json.loads(paths["localisation"].read_text(encoding="utf-8"))
    tables = _tables(evaluation, loc)
    rel = lambda p: Path(p).relative_to(out).as_posix()  # noqa: E731
    loc_figures = figure_paths(paths["localisation"])
    figures = [("Training curves (loss, accuracy, validation AUC per epoch)", rel(paths["run"] / "curves.png")),
               ("ROC of the held-out patches, three input modes", rel(paths["evaluation"].with_name("table2_roc.png"))),
               ("FROC of Detect on the held-out volumes", rel(loc_figures["froc"]))]
    figures += [(caption, rel(loc_figures[key])) for key, caption in (
        ("froc_by_kind", "FROC per lesion kind (false positives shared)"),
        ("calibration", "Calibration: candidate scores vs hitting a lesion, volume scores vs lesion volume "
                        "(10 score bins, counts over the points)")) if loc_figures[key].is_file()]
    det = paths["detections"]
    overlays = [(caption, _relative(det, name)) for caption, name in by_score(det)]
    hits_misses = [(caption, _relative(det, name)) for caption, name in hits_and_misses(det, loc)]
    c = config
    setup = (f"{c.patients} phantom patients ({'×'.join(map(str, c.shape))} voxels, "
             f"{'×'.join(map(str, c.spacing))} mm), {'×'.join(map(str, c.patch))} patches, "
             f"{c.arch} (stem '{c.stem}', width {c.widen}), {'×'.join(map(str, c.crop))} crops, "
             f"{c.epochs} epochs; held-out: {evaluation['n']} patches, {loc['volumes']} volumes, "
             f"{loc['lesions']} lesions.")
    took = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    sections = [("Table 2: patch classification on the held-out split", "table2",
                 "AUC and accuracy at threshold 0.5 (the paper's Table 2), with sensitivity and specificity."),
                ("Detect: localisation on the held-out volumes", "localisation",
                 f"{_candidates_text(c)} A candidate hits a lesion when it lies inside the lesion's mask. "
                 "Pointing game: the "
                 "volume's best candidate(s) inside the lesion; FROC: sensitivity at the ABUS challenge's "
                 "false-positive rates."),
                ("FROC points", "froc", ""),
                ("Localisation per lesion kind", "kind", _BREAKDOWN_TEXT),
                ("Localisation per lesion size (diameter)", "size", _BREAKDOWN_TEXT),
                ("Calibration of the scores", "calibration",
                 "Are the scores probabilities? ECE: count-weighted mean |mean score − observed fraction| "
                 "over 10 score bins; Brier: mean squared error of the score as a probability. "
                 + _calibration_note(paths.get("calibration")))]
    sections = [s for s in sections if s[1] in tables]

    md = ["# BreastLesionCAM demo", "", setup, "", f"Time per step: {took}.", ""]
    page = ["<!doctype html><html><head><meta charset='utf-8'><title>BreastLesionCAM demo</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
            "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #bbb;padding:3px 8px}"
            "img{max-width:100%;border:1px solid #ddd}figure{margin:1em 0}</style></head><body>",
            "<h1>BreastLesionCAM demo</h1>", f"<p>{html.escape(setup)}</p>",
            f"<p>Time per step: {html.escape(took)}.</p>"]
    for title, key, text in sections:
        md += [f"## {title}", "", text, "", md_table(tables[key]), ""]
        page += [f"<h2>{html.escape(title)}</h2>", f"<p>{html.escape(text)}</p>", _html_table(tables[key])]
    for heading, items in (("Curves", figures), ("Overlays (0.3 heatmap + 0.7 image, candidates circled, "
                                                 "annotated centres as red dots)", overlays),
                           ("Hits and misses (lesion volumes whose lesions were all found, and ones with a miss)",
                            hits_misses)):
        if not items:
            continue
        md += [f"## {heading}", ""]
        page.append(f"<h2>{html.escape(heading)}</h2>")
        for caption, src in items:
            md += [f"**{caption}**", "", f"![{caption}]({src})", ""]
            page.append(f"<figure><img src='{html.escape(src)}' alt=''><figcaption>{html.escape(caption)}"
                        f"</figcaption></figure>")
    page.append("</body></html>")
    write_text_atomic(out / "report.md", "\n".join(md))
    write_text_atomic(out / "index.html", "\n".join(page))
    return out / "index.html"
