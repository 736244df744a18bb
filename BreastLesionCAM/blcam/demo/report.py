"""The demo's report: one page with Table 2, the curves, the localisation metrics and overlays.

Written twice from the same content: ``index.html`` (opens in any browser, images by
relative path so the folder can be moved or zipped) and ``report.md`` (renders on GitHub
and in editors). The overlay pictures are the contact sheets of the held-out lesion volumes
the model scored highest and lowest, and of the healthy volumes it scored highest (its
most convincing false alarms): the cases worth looking at.
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path

from ..io.atomic import write_text_atomic
from ..metrics.localisation import FROC_RATES

MODES = (("patch", "full patch"), ("centre", "centred crop"), ("random", "random crop"))
METRICS = (("auc", "AUC"), ("accuracy", "accuracy"), ("sensitivity", "sensitivity"), ("specificity", "specificity"))


def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def _pick_overlays(det_dir: Path) -> list[tuple[str, str]]:
    """``(caption, png)`` contact sheets: best and worst lesion volumes, most suspicious healthy ones."""
    with (det_dir / "detections.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    lesion = sorted((r for r in rows if r["label"] == "lesion"), key=lambda r: -float(r["volume_score"]))
    healthy = sorted((r for r in rows if r["label"] == "healthy"), key=lambda r: -float(r["volume_score"]))
    chosen = [("lesion volume, highest score", r) for r in lesion[:2]]
    chosen += [("lesion volume, lowest score", r) for r in lesion[2:][-1:]]
    chosen += [("healthy volume, highest score (hardest negative)", r) for r in healthy[:2]]
    return [(f"{cap}: {r['name']} (volume score {float(r['volume_score']):.3f})",
             f"{det_dir.name}/{r['name']}_contact.png") for cap, r in chosen]


def _tables(evaluation: dict, loc: dict) -> dict[str, list[list[str]]]:
    """Header + rows of the report's tables, shared by the HTML and Markdown renderings."""
    modes = evaluation["modes"]
    sizes = {m: modes[m]["input"] for m, _ in MODES}
    table2 = [["metric"] + [f"{name} ({sizes[m]})" for m, name in MODES]]
    table2 += [[label] + [_f(modes[m].get(key), 4) for m, _ in MODES] for key, label in METRICS]
    f = loc["froc"]
    off = loc.get("offset_kji_voxels_mean")
    local = [["metric", "value"],
             ["pointing game", _f(loc["pointing_game"])],
             ["peak-to-centre distance, median (mean)",
              f"{_f(loc['distance_mm_median'], 2)} mm ({_f(loc['distance_mm_mean'], 2)} mm)"],
             ["FROC mean sensitivity, 0.125–8 FP/volume", _f(f["mean_sensitivity"])],
             ["volume-level AUC (highest candidate)", _f(loc["volume_auc"])],
             ["mean offset of hits, voxels (k, j, i)", "–" if off is None else ", ".join(f"{v:+.1f}" for v in off)]]
    froc = [["FP per volume"] + [f"{r:g}" for r in FROC_RATES], ["sensitivity"] + [_f(s) for s in f["sensitivity"]]]
    return {"table2": table2, "localisation": local, "froc": froc}


def _md_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(out: Path, paths: dict, config, timings: dict) -> Path:
    """Write ``index.html`` and ``report.md`` under ``out``; returns the HTML path."""
    evaluation = json.loads(paths["evaluation"].read_text(encoding="utf-8"))
    loc = json.loads(paths["localisation"].read_text(encoding="utf-8"))
    tables = _tables(evaluation, loc)
    rel = lambda p: Path(p).relative_to(out).as_posix()  # noqa: E731
    figures = [("Training curves (loss, accuracy, validation AUC per epoch)", rel(paths["run"] / "curves.png")),
               ("ROC of the held-out patches, three input modes", rel(paths["evaluation"].with_name("table2_roc.png"))),
               ("FROC of Detect on the held-out volumes",
                rel(paths["localisation"].with_name("localisation_froc.png")))]
    overlays = _pick_overlays(paths["detections"])
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
                 "A candidate hits a lesion when it lies inside the lesion's mask. Pointing game: the "
                 "volume's best candidate(s) inside the lesion; FROC: sensitivity at the ABUS challenge's "
                 "false-positive rates."),
                ("FROC points", "froc", "")]

    md = ["# BreastLesionCAM demo", "", setup, "", f"Time per step: {took}.", ""]
    page = ["<!doctype html><html><head><meta charset='utf-8'><title>BreastLesionCAM demo</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
            "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #bbb;padding:3px 8px}"
            "img{max-width:100%;border:1px solid #ddd}figure{margin:1em 0}</style></head><body>",
            "<h1>BreastLesionCAM demo</h1>", f"<p>{html.escape(setup)}</p>",
            f"<p>Time per step: {html.escape(took)}.</p>"]
    for title, key, text in sections:
        md += [f"## {title}", "", text, "", _md_table(tables[key]), ""]
        page += [f"<h2>{html.escape(title)}</h2>", f"<p>{html.escape(text)}</p>", _html_table(tables[key])]
    for heading, items in (("Curves", figures), ("Overlays (0.3 heatmap + 0.7 image, candidates circled, "
                                                 "annotated centres as red dots)", overlays)):
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
