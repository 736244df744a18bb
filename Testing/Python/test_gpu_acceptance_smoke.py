"""``bench/gpu_acceptance.sh`` at its toy CPU sizes (``SMOKE=1``), both stages.

The GPU runs are rare and their device time is short (15 minutes a session), so the script
must not be first tried there: an export setting that a later check refused once broke its
``benches`` stage without any test noticing. This runs both stages end to end and checks
that each wrote the figures ``bench/RESULTS.md`` is filled from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("stage, outputs", [
    ("benches", ["train.json", "detect.json"]),
    ("protocol", ["table2.json", "localisation.json", "localisation_froc.png", "curves.png"]),
])
def test_gpu_acceptance_stages_run_at_toy_size(tmp_path, stage, outputs):
    env = {**os.environ, "SMOKE": "1", "PYTHON": sys.executable, "WORK": str(tmp_path / "work"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_acceptance.sh"), stage, str(out)], env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in outputs:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    if stage == "protocol":
        loc = json.loads((out / "localisation.json").read_text(encoding="utf-8"))
        assert 0.0 <= loc["pointing_game"] <= 1.0 and loc["lesions"] > 0
