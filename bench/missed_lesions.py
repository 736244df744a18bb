"""What outranks the lesions Detect misses? A per-miss diagnosis of a ``blcam detect`` folder.

``blcam evaluate-detection`` says *how many* lesions of each kind the pointing game missed;
this script says *why*, lesion by lesion: where the missed lesion's own best candidate
ranks (or that none of the volume's candidates lies in it), and what the candidate that
took its place sits on:

* **another lesion** of the same volume (the miss is then a ranking between lesions);
* **a look-alike** from a table of known mimics (the phantom's ``mimics.csv``; for real
  data, any ``volume,x,y,z[,kind,diameter_mm]`` table, e.g. reviewed "not a lesion" points),
  within its radius + 2 mm;
* **beside the lesion**: within the lesion's radius + 5 mm but outside its mask (a
  localisation error, not a detection error);
* **elsewhere**: tissue that no table knows about.

    python bench/missed_lesions.py DET_DIR COHORT_CSV [--mimics mimics.csv] [--json out.json]

Lesion kinds and sizes come from ``lesions.csv`` beside the cohort and masks from ``masks/``
beside it (as for ``evaluate-detection``), or from ``--lesions`` and ``--masks``. Prints one table per kind and, with
``--list``, one line per missed lesion.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "BreastLesionCAM"))

from blcam.evaluation.detection import load_detections, load_truths  # noqa: E402
from blcam.metrics.breakdown import find_lesion_table, match_lesions, read_lesion_table, volume_stem  # noqa: E402
from blcam.metrics.localisation import hit_matrix  # noqa: E402

CAUSES = ("another lesion", "look-alike", "beside the lesion", "elsewhere", "no candidate")
MIMIC_MARGIN_MM, BESIDE_MARGIN_MM = 2.0, 5.0


def look_alike_at(point: np.ndarray, mimics: list):
    """The first known look-alike within its radius + ``MIMIC_MARGIN_MM`` of ``point``, or None."""
    return next((m for m in mimics
                 if np.linalg.norm(point - m.centre_lps) <= (m.diameter_mm or 0.0) / 2 + MIMIC_MARGIN_MM), None)


def cause_of(point: np.ndarray, hits_row: np.ndarray, centre: np.ndarray, radius: float, look_alike) -> str:
    """What the candidate at ``point`` sits on: ``hits_row`` are its hits on the volume's other
    lesions, ``look_alike`` the known look-alike under it (:func:`look_alike_at`) or None."""
    if hits_row.any():
        return "another lesion"
    if look_alike is not None:
        return "look-alike"
    if np.linalg.norm(point - centre) <= radius + BESIDE_MARGIN_MM:
        return "beside the lesion"
    return "elsewhere"


def _blame(det, hits: np.ndarray, lesion: int, n: int, centre: np.ndarray, diameter: float | None,
           mimics: list) -> dict:
    """The cause of a miss: what the best of the volume's ``n`` top candidates that took the
    lesion's place sits on. A candidate on another lesion of the volume only takes a place
    that lesion is owed, so a candidate on no lesion is blamed first."""
    top = [m for m in range(min(n, len(det.points_lps))) if not hits[m, lesion]]
    if not top:
        return dict(cause="no candidate", top_score=None, look_alike=None)
    free = [m for m in top if not hits[m].any()]
    m = (free or top)[0]
    point = det.points_lps[m]
    near = look_alike_at(point, mimics)
    return dict(cause=cause_of(point, np.delete(hits[m], lesion), centre, (diameter or 10.0) / 2, near),
                top_score=float(det.scores[m]), look_alike=near.kind if near is not None else None)


def diagnose(det_dir: Path, cohort_csv: Path, mimics_csv: Path | None, hit_mm: float = 10.0,
             lesions_csv: Path | None = None, masks: Path | None = None) -> list[dict]:
    """One row per annotated lesion: kind, size, hit, its best candidate's rank, and for a
    miss the cause (:data:`CAUSES`) and the look-alike's kind where there is one."""
    dets = load_detections(det_dir)
    truths = load_truths(cohort_csv, masks or cohort_csv.parent / "masks", hit_mm, only=set(dets))
    table_path = lesions_csv or find_lesion_table(cohort_csv)
    table = read_lesion_table(table_path)[0] if table_path else []
    mimics = read_lesion_table(mimics_csv)[0] if mimics_csv else []
    matches = match_lesions([t for _, t in truths], table)
    rows = []
    for (key, truth), matched in zip(truths, matches, strict=True):
        det, n = dets[key], len(truth.centres_lps)
        if not n:
            continue
        hits = hit_matrix(det.points_lps, truth, hit_mm)
        here = [m for m in mimics if m.volume == volume_stem(truth.name)]
        for lesion, match in enumerate(matched):
            mine = np.flatnonzero(hits[:, lesion])
            row = dict(volume=truth.name, kind=(match.kind if match else None) or "unknown",
                       diameter_mm=match.diameter_mm if match else None, lesions_in_volume=n,
                       rank=int(mine[0]) + 1 if len(mine) else None, hit=bool(len(mine) and mine[0] < n))
            if not row["hit"]:
                row.update(_blame(det, hits, lesion, n, truth.centres_lps[lesion], row["diameter_mm"], here))
            rows.append(row)
    return rows


def summary_table(rows: list[dict]) -> str:
    """Markdown: per kind, lesions, hits, misses by cause, and misses without any candidate."""
    head = "| kind | lesions | hit | missed | " + " | ".join(f"outranked: {c}" for c in CAUSES[:4]) \
        + " | own candidate in the top 10 |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for kind in sorted({r["kind"] for r in rows}):
        group = [r for r in rows if r["kind"] == kind]
        missed = [r for r in group if not r["hit"]]
        causes = Counter(r["cause"] for r in missed)
        listed = sum(r["rank"] is not None for r in missed)
        lines.append(f"| {kind} | {len(group)} | {len(group) - len(missed)} | {len(missed)} | "
                     + " | ".join(str(causes.get(c, 0)) for c in CAUSES[:4]) + f" | {listed} of {len(missed)} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("det_dir", type=Path)
    p.add_argument("cohort_csv", type=Path)
    p.add_argument("--mimics", type=Path, default=None,
                   help="table of known look-alikes (default: mimics.csv beside the cohort, if any)")
    p.add_argument("--lesions", type=Path, default=None,
                   help="lesion table with kind and diameter_mm (default: lesions.csv beside the cohort)")
    p.add_argument("--masks", type=Path, default=None,
                   help="folder of label maps named like the volumes (default: masks/ beside the cohort)")
    p.add_argument("--hit-mm", type=float, default=10.0, help="hit radius where a volume has no mask")
    p.add_argument("--list", action="store_true", help="also print one line per missed lesion")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    mimics = args.mimics
    if mimics is None and (args.cohort_csv.parent / "mimics.csv").is_file():
        mimics = args.cohort_csv.parent / "mimics.csv"
    rows = diagnose(args.det_dir, args.cohort_csv, mimics, args.hit_mm, args.lesions, args.masks)
    print(summary_table(rows))
    if args.list:
        for r in rows:
            if not r["hit"]:
                print(f"{r['volume']}: {r['kind']} {r['diameter_mm']} mm, own rank {r['rank']}, outranked by "
                      f"{r['cause']}{' (' + r['look_alike'] + ')' if r['look_alike'] else ''} at {r['top_score']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
