"""Dependency installs inside Slicer 5.8-5.12+: what is installed, under which constraints, with which dialogs.

The decisions (:mod:`BreastLesionCAMLib.InstallPlan`) are tested against the versions really
installed in this Python and against the versions Slicer 5.8, 5.10 and 5.12 ship. The
installer (:class:`BreastLesionCAMLib.Dependencies.DependencyInstaller`) is driven through its
own seams: recording dialogs and pip/PyTorch Utils callables, so no pip runs and no package
index is needed. The defects of issue 12 each have a test here: no constraints on the pip
install, a torch version never checked, two confirmations/progress dialogs on Slicer 5.12+,
and an unhandled failure of PyTorch Utils' ``installTorch``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from BreastLesionCAMLib import InstallPlan
from BreastLesionCAMLib.Dependencies import DependencyInstaller, PyTorchExtensionMissing

# Versions the Slicer releases ship (SuperBuild/External_python-numpy.cmake etc.) and a
# PyTorch Utils install; monai and the other requirements absent, as on a fresh Slicer.
SLICER_5_8 = {"numpy": "1.26.4", "SimpleITK": "2.4.0", "vtk": "9.2.20230607", "torch": "2.2.2+cu121", "scipy": "1.13.1"}
SLICER_5_10 = {"numpy": "2.0.2", "SimpleITK": "2.5.0", "vtk": "9.4.2", "torch": "2.3.1+cu121", "scipy": "1.13.1"}
SLICER_5_12 = {"numpy": "2.4.6", "SimpleITK": "2.5.2", "vtk": "9.5.0", "torch": "2.6.0+cpu", "scipy": "1.17.1"}
ALL_THERE = {"monai": "1.5.2", "safetensors": "0.4.5", "tqdm": "4.66.0", "matplotlib": "3.9.0", "psutil": "6.0.0"}


def venv_version(name: str) -> str:
    return importlib.metadata.version(name)


# -- the constraints file ---------------------------------------------------------------------

def test_constraints_pin_this_pythons_numpy_simpleitk_vtk_and_torch_exactly(tmp_path):
    versions = InstallPlan.installedVersions(InstallPlan.PINNED)
    path = InstallPlan.writeConstraints(tmp_path, versions)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["constraints.txt"]   # no temporary left
    pins = [Requirement(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")]
    assert [r.name for r in pins] == ["numpy", "SimpleITK", "vtk", "torch"]
    for pin in pins:
        installed = venv_version(pin.name)
        assert str(pin.specifier) == f"=={installed}"          # e.g. torch==2.13.0+cpu, local tag kept
        assert pin.specifier.contains(installed, prereleases=True)


def test_pip_install_gets_the_constraints_file(tmp_path):
    path = InstallPlan.writeConstraints(tmp_path, {"numpy": "1.26.4"})
    args = InstallPlan.pipInstallArgs(["monai>=1.4", "tqdm>=4.60"], path)
    assert args == ["monai>=1.4", "tqdm>=4.60", "-c", str(path)]


def test_slicer_5_8_vtk_egg_info_without_metadata_is_pinned_by_its_folder_name(tmp_path):
    """Slicer 5.8 marks VTK installed with an empty egg-info; pip reads the version from its name."""
    info = tmp_path / "vtk-9.2.20230607-py3.9.egg-info"
    info.mkdir()
    (info / "PKG-INFO").write_text("", encoding="utf-8")
    assert InstallPlan.installedVersion("vtk", [str(tmp_path)]) == "9.2.20230607"
    assert InstallPlan.installedVersion("SimpleITK", [str(tmp_path)]) is None
    text = InstallPlan.constraintsText(InstallPlan.installedVersions(["vtk", "SimpleITK"], [str(tmp_path)]))
    assert "vtk==9.2.20230607\n" in text
    assert "# SimpleITK: not installed or version unknown, not pinned" in text   # never a guessed pin


# -- torch against MONAI's needs ---------------------------------------------------------------

@pytest.mark.parametrize("numpy, expected", [
    ("1.26.4", ">=2.2"),     # Slicer 5.8: MONAI 1.4 (numpy<2, torch>=1.9); blcam's own torch>=2.2 rules
    ("2.0.2", ">=2.4.1"),    # Slicer 5.10: only MONAI 1.5+ takes numpy 2, and it needs torch>=2.4.1
    ("2.4.6", ">=2.4.1"),    # Slicer 5.12
    ("3.0.0", ">=2.8.0"),    # newer than every known release: the newest release's minimum
])
def test_torch_requirement_follows_the_monai_that_fits_slicers_numpy(numpy, expected):
    assert InstallPlan.torchRequirement(numpy) == expected


def test_an_installed_monai_states_its_own_torch_minimum():
    requires = importlib.metadata.requires("monai")
    declared = [Requirement(r) for r in requires if Requirement(r).name == "torch" and Requirement(r).marker is None]
    minimum = max(Version(s.version) for s in declared[0].specifier if s.operator == ">=")
    expected = max(minimum, Version(InstallPlan.BLCAM_MINIMUM_TORCH))
    assert InstallPlan.torchRequirement(venv_version("numpy"), requires) == f">={expected}"
    extras_only = ['torchvision; extra == "all"', "numpy>=1.24"]
    assert InstallPlan.torchRequirement("1.26.4", extras_only) == ">=2.2"


def test_a_torch_too_old_for_monai_sends_the_user_to_pytorch_utils():
    """Defect: torchInstalled() ignored the version; monai 1.5.2 then pulled a newer torch over the CUDA build."""
    plan = InstallPlan.makePlan(SLICER_5_10, hasPipEnsure=False)
    assert not plan.ready and not plan.installTorch
    assert plan.torchRequirement == ">=2.4.1"
    assert "PyTorch 2.3.1+cu121 is too old" in plan.torchProblem
    assert "'PyTorch Utils'" in plan.torchProblem and "'>=2.4.1'" in plan.torchProblem
    assert InstallPlan.makePlan(SLICER_5_8, hasPipEnsure=False).torchProblem is None  # numpy 1.26 → MONAI 1.4


def test_plan_for_slicer_without_torch_installs_torch_at_monais_minimum():
    versions = dict(SLICER_5_12, torch=None)
    plan = InstallPlan.makePlan(versions, hasPipEnsure=True)
    assert plan.installTorch and plan.torchRequirement == ">=2.4.1"
    assert plan.missing == ["monai>=1.4", "safetensors>=0.4", "tqdm>=4.60", "matplotlib>=3.7", "psutil>=5.9"]
    assert plan.route == InstallPlan.ROUTE_PIP_ENSURE
    assert InstallPlan.makePlan(versions, hasPipEnsure=False).route == InstallPlan.ROUTE_PIP_INSTALL


def test_this_python_is_ready():
    plan = InstallPlan.currentPlan(hasPipEnsure=False)
    assert plan.ready, plan.describeMissing()
    assert plan.pinned == {name: venv_version(name) for name in InstallPlan.PINNED}


# -- the self-test under --testing -------------------------------------------------------------

def test_self_test_skips_with_a_reason_only_under_testing_with_packages_missing():
    missing = InstallPlan.makePlan(dict(SLICER_5_12, torch=None), hasPipEnsure=True)
    reason = InstallPlan.selfTestSkipReason(missing, testing=True)
    assert "--testing" in reason and "torch>=2.4.1 (PyTorch extension)" in reason and "monai>=1.4" in reason
    assert InstallPlan.selfTestSkipReason(missing, testing=False) is None       # the GUI run installs
    ready = InstallPlan.makePlan(dict(SLICER_5_12, **ALL_THERE), hasPipEnsure=True)
    assert ready.ready and InstallPlan.selfTestSkipReason(ready, testing=True) is None


# -- the installer, through its seams ----------------------------------------------------------

class Dialogs:
    """Records what the user would have seen."""

    def __init__(self, answer: bool = True):
        self.answer, self.confirms, self.errors, self.progress_labels = answer, [], [], []

    def confirm(self, message):
        self.confirms.append(message)
        return self.answer

    def error(self, message, details=""):
        self.errors.append(message)

    @contextlib.contextmanager
    def progress(self, label):
        self.progress_labels.append(label)
        yield


class Python:
    """Installed versions that change when the recorded pip or torch install 'succeeds'."""

    def __init__(self, versions, pip_error=None, torch_result="module"):
        self.versions, self.pip_error, self.torch_result = dict(versions), pip_error, torch_result
        self.pip_calls, self.torch_calls, self.constraints_seen = [], [], []

    def planner(self, hasPipEnsure):
        return InstallPlan.makePlan(self.versions, hasPipEnsure)

    def _pip(self, requirements, constraints):
        self.constraints_seen.append((Path(constraints), Path(constraints).read_text(encoding="utf-8")))
        if self.pip_error:
            raise self.pip_error
        self.versions.update({Requirement(r).name: ALL_THERE[Requirement(r).name] for r in requirements})

    def pip_ensure(self, requirements, constraints=None, requester=None):
        self.pip_calls.append(("pip_ensure", list(requirements), requester))
        self._pip(requirements, constraints)

    def pip_install(self, args):
        self.pip_calls.append(("pip_install", list(args)))
        assert args[-2] == "-c"
        self._pip(args[:-2], args[-1])

    def install_torch(self, requirement):
        self.torch_calls.append(requirement)
        if isinstance(self.torch_result, Exception):
            raise self.torch_result
        if self.torch_result is not None:
            self.versions["torch"] = "2.4.1+cu121"
        return self.torch_result


def installer(python, dialogs, slicer_5_12: bool, testing=False):
    return DependencyInstaller(dialogs, python.pip_ensure if slicer_5_12 else None, python.pip_install,
                               python.install_torch, planner=python.planner, testing=lambda: testing)


def test_slicer_5_12_installs_with_pip_ensure_and_shows_no_dialog_of_its_own():
    """Defect: on 5.12+ the module asked and showed progress, and pip_ensure did so again."""
    python, dialogs = Python(SLICER_5_12), Dialogs()
    assert installer(python, dialogs, slicer_5_12=True).run()
    assert [c[0] for c in python.pip_calls] == ["pip_ensure"]
    assert python.pip_calls[0][2] == "BreastLesionCAM"
    assert dialogs.confirms == [] and dialogs.progress_labels == [] and dialogs.errors == []


@pytest.mark.parametrize("slicer_5_12", [False, True])
def test_every_route_pins_slicers_packages_and_torch(slicer_5_12):
    """Defect: pip_install("monai>=1.4 ...") ran without constraints."""
    python = Python(SLICER_5_12)
    assert installer(python, Dialogs(), slicer_5_12).run()
    (path, text), = python.constraints_seen
    assert {"numpy==2.4.6", "SimpleITK==2.5.2", "vtk==9.5.0", "torch==2.6.0+cpu"} <= set(text.splitlines())
    assert not path.exists() and not path.parent.exists()       # the temporary folder is cleaned up


def test_slicer_5_8_asks_once_and_shows_one_progress_dialog():
    python, dialogs = Python(SLICER_5_8), Dialogs()
    assert installer(python, dialogs, slicer_5_12=False).run()
    assert len(dialogs.confirms) == 1 and "monai>=1.4" in dialogs.confirms[0]
    assert len(dialogs.progress_labels) == 1
    assert python.pip_calls[0][1][:6] == list(InstallPlan.REQUIREMENTS[:1]) + ["safetensors>=0.4", "tqdm>=4.60",
                                                                               "matplotlib>=3.7", "psutil>=5.9", "-c"]


def test_declining_installs_nothing():
    python, dialogs = Python(SLICER_5_8), Dialogs(answer=False)
    assert not installer(python, dialogs, slicer_5_12=False).run()
    assert python.pip_calls == [] and dialogs.errors == []
    python = Python(SLICER_5_12, pip_error=RuntimeError("User declined package installation"))
    dialogs = Dialogs()
    assert not installer(python, dialogs, slicer_5_12=True).run()
    assert dialogs.errors == []


def test_failed_pip_install_is_one_dialog_naming_the_packages():
    python, dialogs = Python(SLICER_5_8, pip_error=subprocess.CalledProcessError(1, "pip install")), Dialogs()
    assert not installer(python, dialogs, slicer_5_12=False).run()
    assert len(dialogs.errors) == 1 and "monai>=1.4" in dialogs.errors[0]
    python, dialogs = Python(SLICER_5_12, pip_error=subprocess.CalledProcessError(1, "pip install")), Dialogs()
    assert not installer(python, dialogs, slicer_5_12=True).run()
    assert dialogs.errors == []          # pip_ensure has shown pip's log already


def test_failed_install_torch_is_a_dialog_pointing_to_pytorch_utils():
    """Defect: an exception from PyTorchUtils' installTorch escaped to the button handler."""
    python = Python(dict(SLICER_5_10, torch=None), torch_result=subprocess.CalledProcessError(1, "light_the_torch"))
    dialogs = Dialogs()
    assert not installer(python, dialogs, slicer_5_12=False).run()
    assert python.torch_calls == [">=2.4.1"] and python.pip_calls == []
    assert len(dialogs.errors) == 1
    assert "Installing PyTorch (torch>=2.4.1) failed" in dialogs.errors[0] and "'PyTorch Utils'" in dialogs.errors[0]


def test_torch_install_declined_or_extension_missing():
    python, dialogs = Python(dict(SLICER_5_12, torch=None), torch_result=None), Dialogs()
    assert not installer(python, dialogs, slicer_5_12=True).run()
    assert dialogs.errors == [] and python.pip_calls == []
    missing = PyTorchExtensionMissing("No module named 'PyTorchUtils'")
    python = Python(dict(SLICER_5_12, torch=None), torch_result=missing)
    assert not installer(python, dialogs, slicer_5_12=True).run()
    assert "Install the 'PyTorch' extension from the Extensions Manager" in dialogs.errors[0]


def test_torch_installed_first_then_packages_pinned_to_the_new_torch():
    python, dialogs = Python(dict(SLICER_5_10, torch=None)), Dialogs()
    assert installer(python, dialogs, slicer_5_12=False).run()
    assert python.torch_calls == [">=2.4.1"]
    assert "torch==2.4.1+cu121" in python.constraints_seen[0][1].splitlines()


def test_too_old_torch_is_reported_and_nothing_installed():
    python, dialogs = Python(SLICER_5_10), Dialogs()
    assert not installer(python, dialogs, slicer_5_12=False).run()
    assert python.pip_calls == [] and python.torch_calls == []
    assert len(dialogs.errors) == 1 and "'PyTorch Utils'" in dialogs.errors[0]


def test_nothing_installed_under_testing_is_reported_as_such():
    """pip_ensure skips installs under --testing: the message says why the packages are still missing."""
    python, dialogs = Python(SLICER_5_12), Dialogs()
    python.pip_ensure = lambda requirements, constraints=None, requester=None: None   # skip_in_testing
    assert not installer(python, dialogs, slicer_5_12=True, testing=True).run()
    assert "Still missing after installation: monai>=1.4" in dialogs.errors[0] and "--testing" in dialogs.errors[0]


def test_module_self_test_skips_before_installing_and_reload_and_test_reports_the_skip():
    """The self-test class needs the Slicer application (not in slicer-core): its order is read from the source.

    Defect: under --testing the self-test called ensureDependencies, whose pip_ensure installs
    nothing there, and failed with "packages are missing" instead of skipping."""
    import ast

    module = Path(__file__).resolve().parents[2] / "BreastLesionCAM" / "BreastLesionCAM.py"
    tree = ast.parse(module.read_text(encoding="utf-8"))
    test_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "BreastLesionCAMTest")
    methods = {n.name: n for n in test_class.body if isinstance(n, ast.FunctionDef)}
    calls = [ast.unparse(n.func) for n in ast.walk(methods["test_BreastLesionCAM_pipeline"]) if isinstance(n, ast.Call)]
    assert calls.index("Dependencies.selfTestSkipReason") < calls.index("self.skipTest") \
        < calls.index("Dependencies.ensureDependencies")
    handlers = [ast.unparse(h.type) for h in ast.walk(methods["runTest"]) if isinstance(h, ast.ExceptHandler)]
    assert handlers == ["unittest.SkipTest"]


def test_the_modules_requirements_are_pyprojects_less_what_slicer_and_pytorch_utils_provide():
    """Slicer installs what pip installs for the CLI: the same packages and minimum versions,
    except numpy, SimpleITK and vtk (Slicer's own) and torch (PyTorch Utils' build), whose
    minimum the torch check holds instead."""
    import tomllib
    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {Requirement(r).name.lower(): Requirement(r) for r in project["dependencies"]}
    module = {Requirement(r).name.lower(): Requirement(r) for r in InstallPlan.REQUIREMENTS}
    provided = {n.lower() for n in InstallPlan.PINNED}
    assert set(module) == set(declared) - provided
    assert all(str(module[n].specifier) == str(declared[n].specifier) for n in module)
    assert str(declared["torch"].specifier) == f">={InstallPlan.BLCAM_MINIMUM_TORCH}"
