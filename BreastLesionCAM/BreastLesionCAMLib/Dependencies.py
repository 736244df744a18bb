"""Python packages the background jobs need inside Slicer, installed only after asking.

torch comes through the PyTorch extension (``PyTorchUtils``: it picks a CUDA, MPS or CPU
build that matches the machine, which plain pip cannot); the rest through Slicer's pip
helpers. Slicer's own SimpleITK, numpy and vtk are never reinstalled: a second copy would
break Slicer itself. Used by the widget only (it shows dialogs); outside Slicer the
package's own ``pyproject.toml`` dependencies apply instead.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re

# What ``blcam`` needs besides torch and what Slicer already ships (see pyproject.toml).
REQUIREMENTS = ("monai>=1.4", "safetensors>=0.4", "scipy>=1.10", "tqdm>=4.60", "matplotlib>=3.7",
                "psutil>=5.9")
NEVER_INSTALL = ("SimpleITK", "numpy", "vtk", "torch")  # Slicer's own, or the PyTorch extension's
TORCH_REQUIREMENT = ">=2.2"


def _version_tuple(text: str) -> tuple:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def missingRequirements(requirements=REQUIREMENTS) -> list[str]:
    """Requirements (``name>=version``) that are absent or too old in this Python."""
    missing = []
    for requirement in requirements:
        name, _, minimum = requirement.partition(">=")
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
            continue
        if minimum and _version_tuple(installed) < _version_tuple(minimum):
            missing.append(requirement)
    return missing


def torchInstalled() -> bool:
    try:
        importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _installTorch() -> bool:
    import slicer
    try:
        import PyTorchUtils
    except ImportError:
        slicer.util.errorDisplay("BreastLesionCAM needs PyTorch. Install the 'PyTorch' extension from the "
                                 "Extensions Manager, restart Slicer, then try again.")
        return False
    logic = PyTorchUtils.PyTorchUtilsLogic()
    if logic.torchInstalled():
        return True
    torch = logic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT)
    return torch is not None


def _pipInstall(requirements: list[str]) -> None:
    import importlib

    import slicer
    for moduleName in ("slicer.packaging", "slicer.pydeps"):  # Slicer 5.12+ / 5.11
        try:
            module = importlib.import_module(moduleName)
        except ImportError:
            continue
        if hasattr(module, "pip_ensure"):
            from packaging.requirements import Requirement
            module.pip_ensure([Requirement(r) for r in requirements], skip_packages=list(NEVER_INSTALL),
                              requester="BreastLesionCAM")
            return
    slicer.util.pip_install(" ".join(requirements))


def ensureDependencies() -> bool:
    """Make sure torch and the other packages are importable; asks before installing anything.

    Returns True when everything is ready (possibly after installing), False when the user
    declined or installation failed (the reason has been shown)."""
    import qt
    import slicer

    if not torchInstalled() and not _installTorch():
        return False
    missing = missingRequirements()
    if not missing:
        return True
    if not slicer.util.confirmOkCancelDisplay(
            "BreastLesionCAM needs these Python packages, which are not installed yet:\n\n  "
            + "\n  ".join(missing) + "\n\nDownload and install them now? (This takes a few minutes; "
            "Slicer's own SimpleITK, numpy and VTK are left untouched.)", windowTitle="BreastLesionCAM"):
        return False
    progress = slicer.util.createProgressDialog(labelText="Installing " + ", ".join(missing) + " ...",
                                                windowTitle="BreastLesionCAM", maximum=0)
    try:
        slicer.app.processEvents(qt.QEventLoop.ExcludeUserInputEvents)
        with slicer.util.WaitCursor():
            _pipInstall(missing)
    except Exception as exc:  # pip reports many kinds of errors; all mean "not installed"
        logging.exception("BreastLesionCAM: installing dependencies failed")
        slicer.util.errorDisplay(f"Installing {', '.join(missing)} failed: {exc}")
        return False
    finally:
        progress.close()
    still = missingRequirements()
    if still:
        slicer.util.errorDisplay("Still missing after installation: " + ", ".join(still)
                                 + ". Restart Slicer and try again.")
        return False
    return True
