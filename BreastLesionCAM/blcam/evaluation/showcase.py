"""The volumes worth a look after Detect, each with a caption that says why.

The figures say how often Detect points at the lesion; the pictures say what it points at
when it does not. Worth a look are the lesion volumes it scored highest and lowest, the
healthy volumes it scored highest (its most convincing false alarms), and lesion volumes
whose lesions were all hit or one missed (captioned with each lesion's kind, size and
distance). The demo's report shows their contact sheets, and ``blcam evaluate-detection
--pictures N`` draws them for any cohort (through :mod:`blcam.detect.redraw`, so Detect may
have run with ``--no-pictures``) and links them from its Markdown report.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from ..axes import PathLike
from ..detect.outputs import SUMMARY_FILE, VolumeOutputs
from ..io.atomic import write_text_atomic

Picked = list[tuple[str, str]]     # (caption, volume name)


def _detections(det_dir: Path) -> list[dict]:
    with (det_dir / SUMMARY_FILE).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def by_score(det_dir: PathLike, highest: int = 2, lowest: int = 1, healthy: int = 2) -> Picked:
    """The ``highest`` and ``lowest`` scored lesion volumes and the ``healthy`` highest scored
    healthy ones (the hardest negatives)."""
    rows = _detections(Path(det_dir))
    lesion = sorted((r for r in rows if r["label"] == "lesion"), key=lambda r: -float(r["volume_score"]))
    normal = sorted((r for r in rows if r["label"] == "healthy"), key=lambda r: -float(r["volume_score"]))
    chosen = [("lesion volume, highest score", r) for r in lesion[:highest]]
    chosen += [("lesion volume, lowest score", r) for r in (lesion[highest:][-lowest:] if lowest else [])]
    chosen += [("healthy volume, highest score (hardest negative)", r) for r in normal[:healthy]]
    return [(f"{cap}: {r['name']} (volume score {float(r['volume_score']):.3f})", r["name"]) for cap, r in chosen]


def lesion_caption(row: dict) -> str:
    """``lesion 2 (cyst, 7.5 mm) missed, nearest peak 23.0 mm away``: what one per-lesion row says."""
    what = ", ".join(x for x in (row.get("kind") if row.get("kind") != "unknown" else None,
                                 f"{row['diameter_mm']:.1f} mm" if row.get("diameter_mm") else None) if x)
    dist = row.get("distance_mm")
    where = "no candidate" if dist is None or not math.isfinite(dist) else \
        f"peak {dist:.1f} mm from the centre" if row["hit"] else f"nearest peak {dist:.1f} mm away"
    return f"lesion {row['lesion']}{f' ({what})' if what else ''} {'hit' if row['hit'] else 'missed'}, {where}"


def hits_and_misses(det_dir: PathLike, localisation: dict, n: int = 2) -> Picked:
    """Up to ``n`` lesion volumes whose lesions were all hit and ``n`` with a missed lesion, from
    the per-lesion rows of :func:`blcam.evaluation.detection.evaluate_detection`'s result."""
    names = {Path(r["volume"]).name: r["name"] for r in _detections(Path(det_dir))}
    volumes: dict[str, list[dict]] = {}
    for row in localisation.get("per_lesion", []):
        volumes.setdefault(row["volume"], []).append(row)
    picked: dict[bool, Picked] = {True: [], False: []}
    for volume, rows in volumes.items():
        name = names.get(volume)
        group = picked[all(r["hit"] for r in rows)]
        if name and len(group) < n:
            title = "all lesions hit" if all(r["hit"] for r in rows) else "a lesion missed"
            group.append((f"{name}, {title}: " + "; ".join(lesion_caption(r) for r in rows), name))
    return picked[True] + picked[False]


def names_of(*groups: Picked) -> list[str]:
    """The distinct volume names of ``groups``, in order (a volume may be picked twice)."""
    return list(dict.fromkeys(name for group in groups for _, name in group))


def link_pictures(markdown: PathLike, det_dir: PathLike, picked: Picked) -> None:
    """Append a section to ``markdown`` showing the contact sheet of every picked volume (paths
    relative to the Markdown file, so the folders can be moved together)."""
    markdown = Path(markdown)
    lines = [markdown.read_text(encoding="utf-8").rstrip("\n"), "", "## Volumes worth a look", "",
             "Contact sheets (0.3 heatmap + 0.7 image, candidates circled, annotated centres as red dots).", ""]
    for caption, name in picked:
        png = os.path.relpath(VolumeOutputs(Path(det_dir), name).contact, markdown.parent)
        lines += [f"**{caption}**", "", f"![{caption}]({Path(png).as_posix()})", ""]
    write_text_atomic(markdown, "\n".join(lines))
