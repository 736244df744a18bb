"""Install the Python packages the background jobs need inside Slicer, only after asking.

torch comes through the PyTorch extension (``PyTorchUtils``: it picks a CUDA, MPS or CPU
build that matches the machine, which plain pip cannot); the rest through Slicer's pip
helpers, under a constraints file that pins Slicer's numpy, SimpleITK and vtk and the
installed torch (:mod:`.InstallPlan` decides what and how; this module only carries it out
with dialogs). Outside Slicer the package's ``pyproject.toml`` dependencies apply instead.

:class:`DependencyInstaller` takes its collaborators (dialogs, pip, PyTorch Utils, the
plan) as arguments, so the tests drive every path (declined, failed, Slicer 5.8-5.10 versus
5.12+) with recording stand-ins for *this module's* seams; :func:`ensureDependencies` wires
the real Slicer ones.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import shutil
import subprocess
import tempfile
import traceback
from typing import Callable

from . import InstallPlan

TITLE = "BreastLesionCAM"
REQUESTER = "BreastLesionCAM"


class PyTorchExtensionMissing(RuntimeError):
    """The PyTorch extension (PyTorchUtils module) is not installed in this Slicer."""


class SlicerDialogs:
    """The dialogs of the Slicer application (``slicer.util``)."""

    def confirm(self, message: str) -> bool:
        import slicer
        return slicer.util.confirmOkCancelDisplay(message, windowTitle=TITLE)

    def error(self, message: str, details: str = "") -> None:
        import slicer
        extra = {"detailedText": details} if details else {}  # messageBox sets each keyword on the box
        slicer.util.errorDisplay(message, windowTitle=TITLE, **extra)

    @contextlib.contextmanager
    def progress(self, label: str):
        import qt
        import slicer
        dialog = slicer.util.createProgressDialog(labelText=label, windowTitle=TITLE, maximum=0)
        try:
            slicer.app.processEvents(qt.QEventLoop.ExcludeUserInputEvents)
            with slicer.util.WaitCursor():
                yield
        finally:
            dialog.close()


def slicerPipEnsure():
    """``slicer.packaging.pip_ensure`` (Slicer 5.12+), or ``None`` on older Slicers."""
    try:
        packaging = importlib.import_module("slicer.packaging")
    except ImportError:
        return None
    return getattr(packaging, "pip_ensure", None)


def slicerPipInstall(args: list) -> None:
    import slicer
    slicer.util.pip_install(args)


def pyTorchUtilsInstall(requirement: str):
    """Install torch through PyTorch Utils; its module, or ``None`` if the user declined."""
    try:
        import PyTorchUtils
    except ImportError as exc:
        raise PyTorchExtensionMissing(str(exc)) from exc
    return PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True, torchVersionRequirement=requirement)


def isTesting() -> bool:
    import slicer
    return bool(slicer.app.testingEnabled())


class DependencyInstaller:
    """Carries out an :class:`InstallPlan.Plan`: torch first, then the pinned pip install."""

    def __init__(self, dialogs, pipEnsure: Callable | None, pipInstall: Callable, installTorch: Callable,
                 planner: Callable = InstallPlan.currentPlan, testing: Callable[[], bool] = lambda: False):
        self.dialogs = dialogs
        self.pipEnsure = pipEnsure
        self.pipInstall = pipInstall
        self.installTorch = installTorch
        self.planner = planner
        self.testing = testing

    def plan(self) -> InstallPlan.Plan:
        return self.planner(self.pipEnsure is not None)

    def run(self) -> bool:
        """True when everything is ready (possibly after installing); False when the user
        declined or something failed (the reason has been shown, or the user chose it)."""
        plan = self.plan()
        if plan.ready:
            return True
        if plan.installTorch:
            if not self._installTorch(plan.torchRequirement):
                return False
            importlib.invalidate_caches()
            plan = self.plan()
            if plan.installTorch:
                self.dialogs.error("PyTorch Utils reported PyTorch as installed, but this Python does not "
                                   "find it. Restart Slicer and try again.")
                return False
        if plan.torchProblem:
            self.dialogs.error(plan.torchProblem)
            return False
        if plan.missing and not self._installPackages(plan):
            return False
        importlib.invalidate_caches()
        after = self.plan()
        if not after.ready:
            reason = (" Slicer runs with --testing, where nothing is installed." if self.testing()
                      else " Restart Slicer and try again.")
            self.dialogs.error(f"Still missing after installation: {after.describeMissing()}.{reason}")
            return False
        return True

    def _installTorch(self, requirement: str) -> bool:
        try:
            torch = self.installTorch(requirement)
        except PyTorchExtensionMissing:
            self.dialogs.error("BreastLesionCAM needs PyTorch. Install the 'PyTorch' extension from the "
                               "Extensions Manager, restart Slicer, then try again.")
            return False
        except Exception as exc:  # pip, light-the-torch and the network fail in many ways
            logging.exception("BreastLesionCAM: installing PyTorch failed")
            self.dialogs.error(f"Installing PyTorch (torch{requirement}) failed: {exc}\n\nInstall it from the "
                               f"'PyTorch Utils' module with the version requirement '{requirement}', restart "
                               "Slicer, then try again.", traceback.format_exc())
            return False
        if torch is None:
            logging.info("BreastLesionCAM: installing PyTorch was declined")
            return False
        return True

    def _installPackages(self, plan: InstallPlan.Plan) -> bool:
        folder = tempfile.mkdtemp(prefix="BreastLesionCAM-pip-")
        try:
            constraints = InstallPlan.writeConstraints(folder, plan.pinned)
            if plan.route == InstallPlan.ROUTE_PIP_ENSURE:
                return self._pipEnsure(plan, constraints)
            return self._pipInstall(plan, constraints)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _pipEnsure(self, plan: InstallPlan.Plan, constraints) -> bool:
        """Slicer 5.12+: pip_ensure asks, shows progress and shows pip's errors itself."""
        try:
            self.pipEnsure(list(plan.missing), constraints=str(constraints), requester=REQUESTER)
        except subprocess.CalledProcessError:
            logging.exception("BreastLesionCAM: installing %s failed", ", ".join(plan.missing))
            return False  # pip_ensure has shown the error with pip's log
        except RuntimeError as exc:
            if "declined" in str(exc):
                logging.info("BreastLesionCAM: installing Python packages was declined")
            else:
                self.dialogs.error(f"Installing {', '.join(plan.missing)} failed: {exc}", traceback.format_exc())
            return False
        return True

    def _pipInstall(self, plan: InstallPlan.Plan, constraints) -> bool:
        """Slicer 5.8-5.10: the module asks and shows progress around ``slicer.util.pip_install``."""
        if not self.dialogs.confirm(
                "BreastLesionCAM needs these Python packages, which are not installed yet:\n\n  "
                + "\n  ".join(plan.missing) + "\n\nDownload and install them now? (This takes a few minutes; "
                "Slicer's own numpy, SimpleITK and VTK and the installed PyTorch are left untouched.)"):
            return False
        try:
            with self.dialogs.progress("Installing " + ", ".join(plan.missing) + " ..."):
                self.pipInstall(InstallPlan.pipInstallArgs(plan.missing, constraints))
        except Exception as exc:  # pip reports many kinds of errors; all mean "not installed"
            logging.exception("BreastLesionCAM: installing dependencies failed")
            self.dialogs.error(f"Installing {', '.join(plan.missing)} failed: {exc}\n\npip was not allowed to "
                               "change Slicer's numpy, SimpleITK, VTK or PyTorch; if it needed to, see the "
                               "details.", traceback.format_exc())
            return False
        return True


def ensureDependencies() -> bool:
    """Make sure torch and the other packages are importable in Slicer; asks before installing."""
    return DependencyInstaller(SlicerDialogs(), slicerPipEnsure(), slicerPipInstall, pyTorchUtilsInstall,
                               testing=isTesting).run()


def selfTestSkipReason() -> str | None:
    """Why the module's self-test skips in this Slicer (see :func:`InstallPlan.selfTestSkipReason`)."""
    return InstallPlan.selfTestSkipReason(InstallPlan.currentPlan(slicerPipEnsure() is not None), isTesting())
