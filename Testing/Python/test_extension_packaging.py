"""The Slicer extension's packaging: catalog entry, CMake files, icons, and the Logic's imports.

These are the things the Extensions Index build and the Extension Manager rely on and that
nothing else would notice breaking: a .py file missing from the module's CMakeLists.txt is
silently left out of the package; a Qt import in the Logic breaks batch use; a torch import
at module load breaks Slicer before the user was even asked to install torch.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "BreastLesionCAM"
SCHEMA_NAME = "slicer-extension-catalog-entry-schema-v1.0.2.json"
# Files in the module folder that are build or packaging by-products, never packaged.
IGNORED_PARTS = ("__pycache__", ".pytest_cache")


def cmake_sets(path: Path) -> dict[str, list[str]]:
    """``set(NAME value ...)`` blocks of a CMake file, values unquoted, comments dropped."""
    text = re.sub(r"#[^\n]*", "", path.read_text(encoding="utf-8"))
    sets = {}
    for name, body in re.findall(r"set\(\s*(\w+)\s+(.*?)\)", text, flags=re.S):
        sets[name] = re.findall(r'"([^"]*)"|(\S+)', body)
        sets[name] = [a or b for a, b in sets[name]]
    return sets


def module_files() -> set[str]:
    files = set()
    for p in MODULE.rglob("*"):
        rel = p.relative_to(MODULE)
        if (not p.is_file() or any(part in IGNORED_PARTS or part.endswith(".egg-info") for part in rel.parts)
                or p.suffix == ".pyc" or ".tmp-" in p.name or rel.as_posix() == "CMakeLists.txt"):
            continue
        files.add(rel.as_posix())
    return files


def test_module_cmakelists_lists_every_file_of_the_module_folder():
    sets = cmake_sets(MODULE / "CMakeLists.txt")
    name = sets["MODULE_NAME"][0]
    listed = {v.replace("${MODULE_NAME}", name)
              for key in ("MODULE_PYTHON_SCRIPTS", "BLCAM_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES")
              for v in sets[key]}
    on_disk = module_files()
    missing, stale = sorted(on_disk - listed), sorted(listed - on_disk)
    assert not missing, "add to BreastLesionCAM/CMakeLists.txt:\n  " + "\n  ".join(missing)
    assert not stale, "listed in BreastLesionCAM/CMakeLists.txt but not on disk:\n  " + "\n  ".join(stale)
    resources = set(sets["MODULE_PYTHON_RESOURCES"])
    assert {"Resources/Icons/BreastLesionCAM.png", "Resources/UI/BreastLesionCAM.ui"} <= resources
    assert all(not r.endswith(".py") for r in resources)
    text = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py\s*\)", text)
    assert "slicerMacroBuildScriptedModule" in text


def test_module_file_defines_module_widget_logic_and_self_test():
    tree = ast.parse((MODULE / "BreastLesionCAM.py").read_text(encoding="utf-8"))
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {"BreastLesionCAM", "BreastLesionCAMWidget", "BreastLesionCAMTest"} <= classes
    imported = {alias.name for node in tree.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert "BreastLesionCAMLogic" in imported  # slicer.util.getModuleLogic finds it in the module file


def test_get_module_logic_finds_the_logic_the_panel_uses():
    """``slicer.util.getModuleLogic("BreastLesionCAM")`` returns ``getModuleWidget(...).logic`` for
    a scripted module (Slicer's ``Base/Python/slicer/util.py``) and raised while the widget had
    no ``logic``. The widget creates it before the base class's ``__init__`` (which calls
    ``setup()`` itself for a widget without parent) and gives that same logic to the panel.
    (slicer-core has no ``ScriptedLoadableModule`` to run the module file, so it is read.)"""
    tree = ast.parse((MODULE / "BreastLesionCAM.py").read_text(encoding="utf-8"))
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "BreastLesionCAMWidget")
    methods = {n.name: n for n in widget.body if isinstance(n, ast.FunctionDef)}
    init = [ast.unparse(statement) for statement in methods["__init__"].body]
    assign = init.index("self.logic = BreastLesionCAMLogic()")
    base = init.index("ScriptedLoadableModuleWidget.__init__(self, parent)")
    assert assign < base
    calls = [n for n in ast.walk(methods["setup"]) if isinstance(n, ast.Call)
             and getattr(n.func, "id", None) == "BreastLesionCAMPanel"]
    assert len(calls) == 1 and ast.unparse(calls[0].args[1]) == "self.logic"


def test_extension_cmakelists_and_catalog_entry_agree_and_validate():
    jsonschema = pytest.importorskip("jsonschema")
    shared = ROOT.parent / "shared" / "schemas" / SCHEMA_NAME
    vendored = ROOT / "Resources" / "Schemas" / SCHEMA_NAME
    schema = json.loads(vendored.read_text(encoding="utf-8"))
    if shared.exists():  # the vendored copy must be the published schema, unchanged
        assert json.loads(shared.read_text(encoding="utf-8")) == schema
    entry = json.loads((ROOT / "BreastLesionCAM.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(entry, schema)

    top = cmake_sets(ROOT / "CMakeLists.txt")
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    for call in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(BreastLesionCAM)",
                 "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert call in text
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert top.get(key) and all(top[key]), f"{key} missing from CMakeLists.txt"
    assert top["EXTENSION_DEPENDS"] == ["PyTorch"] == entry["build_dependencies"]
    assert top["EXTENSION_CATEGORY"] == [entry["category"]]
    homepage = top["EXTENSION_HOMEPAGE"][0]
    assert entry["scm_url"].removesuffix(".git") == homepage
    # Icon and screenshot URLs point at files that exist in this repository.
    raw = f"{homepage.replace('https://github.com/', 'https://raw.githubusercontent.com/')}/{entry['scm_revision']}/"
    for url in top["EXTENSION_ICONURL"] + " ".join(top["EXTENSION_SCREENSHOTURLS"]).split():
        assert url.startswith(raw), url
        path = ROOT / url[len(raw):]
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{url}: no PNG at {path}"


def test_icons_are_128px_pngs():
    for path in (ROOT / "Resources/Icons/BreastLesionCAM.png", MODULE / "Resources/Icons/BreastLesionCAM.png"):
        header = path.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n"
        assert int.from_bytes(header[16:20], "big") == 128 and int.from_bytes(header[20:24], "big") == 128


QT_MODULES = {"qt", "ctk", "PythonQt", "PySide6", "PyQt5", "PyQt6", "slicer.ScriptedLoadableModule"}
SLICER_APP_ONLY = {"Widget.py", "Dependencies.py"}  # the Qt side, used by the module widget only


def test_logic_modules_import_no_qt():
    for path in sorted((MODULE / "BreastLesionCAMLib").glob("*.py")):
        if path.name in SLICER_APP_ONLY:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name not in QT_MODULES and name.split(".")[0] not in {"qt", "ctk"}, \
                    f"{path.name} imports {name}: the Logic must run without Qt"


def test_logic_loads_without_qt_and_without_importing_torch():
    """Slicer loads the module before torch is installed: the Logic must not pull torch in."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import BreastLesionCAMLib.Logic, BreastLesionCAMLib.Scenario; "
            "bad = sorted(m for m in ('qt', 'ctk', 'PySide6', 'torch', 'monai') if m in sys.modules); print(bad)")
    out = subprocess.run([sys.executable, "-c", code, str(MODULE)], capture_output=True, text=True, encoding="utf-8",
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
