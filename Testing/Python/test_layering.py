"""The core library's layering, checked on the source: each room imports only from below.

Detect (inference) must not pull in evaluation or the training loop: a Slicer user who
clicks Detect loads neither, and a change to evaluation cannot break Detect. The CAM
package sits below both.
"""

from __future__ import annotations

import ast
from pathlib import Path

BLCAM = Path(__file__).resolve().parents[2] / "BreastLesionCAM" / "blcam"
FORBIDDEN = {"detect": {"evaluation", "training", "cli", "demo"},
             "cam": {"detect", "evaluation", "training", "cli", "demo"},
             "io": {"cam", "detect", "evaluation", "training", "cli", "demo", "patches", "phantom"},
             "evaluation": {"cli", "demo"},
             "training": {"evaluation", "cli", "demo"}}   # mining runs Detect's candidate finder


def _blcam_imports(path: Path) -> set[str]:
    """The top-level ``blcam`` packages a module imports (relative or absolute)."""
    room = path.relative_to(BLCAM).parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:                            # relative: resolve against the module's package
                base = list(room[:-1])[: len(room) - node.level]
                parts = base + (node.module.split(".") if node.module else [])
                names = [parts[0]] if parts else [a.name.split(".")[0] for a in node.names]
                found.update(names)
            elif node.module and node.module.startswith("blcam."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("blcam."))
    return found


def test_each_room_imports_only_from_below():
    offences = []
    for room, forbidden in FORBIDDEN.items():
        for path in sorted((BLCAM / room).rglob("*.py")):
            bad = _blcam_imports(path) & forbidden
            if bad:
                offences.append(f"{path.relative_to(BLCAM)} imports {', '.join(sorted(bad))}")
    assert offences == []


def test_the_checker_sees_relative_and_absolute_imports(tmp_path):
    probe = BLCAM / "detect" / "refine.py"
    assert "cam" in _blcam_imports(probe) and "intensity" in _blcam_imports(probe)


def test_the_output_contract_imports_without_torch():
    """The Slicer module reads Detect's file names and columns from blcam.detect.outputs before
    PyTorch is installed, so that module (and the package above it) must not import torch."""
    import subprocess
    import sys
    code = (f"import sys; sys.path.insert(0, {str(BLCAM.parent)!r}); import blcam.detect.outputs as o; "
            "assert o.VolumeOutputs('d', 'v').heatmap.name == 'v_heatmap.nrrd'; "
            "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_each_shared_fact_is_defined_once():
    """The device names, the model file name, the output names and the small helpers each have
    one definition in the module folder (blcam and the Slicer module); the rest import them."""
    import re
    module = BLCAM.parent
    facts = {r"^DEVICES\s*=": "blcam/device.py", r"^MODEL_FILE\s*=": "blcam/model.py",
             r"^def resolve_device\(": "blcam/device.py", r"^def resolve_model_path\(": "blcam/model.py",
             r"^def json_safe\(": "blcam/io/atomic.py", r"^def safe_name\(": "blcam/io/atomic.py",
             r"^def write_csv_atomic\(": "blcam/io/atomic.py", r"^CANDIDATE_COLUMNS\s*=": "blcam/detect/outputs.py",
             r'"detections\.csv"': "blcam/detect/outputs.py", r'"_heatmap\.nrrd"': "blcam/detect/outputs.py",
             r'"_candidates\.(csv|json|mrk\.json)"': "blcam/detect/outputs.py"}
    for pattern, home in facts.items():
        where = sorted({path.relative_to(module).as_posix() for path in module.rglob("*.py")
                        for line in path.read_text(encoding="utf-8").splitlines() if re.search(pattern, line)})
        assert where == [home], (pattern, where)
