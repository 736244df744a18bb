"""What to install inside Slicer, and under which constraints: decisions only, no dialogs, no pip.

:mod:`.Dependencies` shows the dialogs and calls pip; everything it decides comes from here,
from the versions installed in this Python, so that the decisions can be tested without
Slicer's GUI and without a package index.

Three things go wrong without these decisions (all seen with Slicer 5.8-5.10):

* **pip replaces Slicer's own packages.** Installing MONAI lets pip pull a newer torch from
  the package index over the CUDA build PyTorch Utils chose (monai 1.5.2 requires
  torch>=2.4.1), or a second numpy. A *constraints file* pins Slicer's numpy, SimpleITK and
  vtk and the installed torch at exactly their installed versions, so pip either installs a
  MONAI that fits them or fails, never replacing them.
* **torch is too old for any MONAI that fits Slicer's numpy.** MONAI 1.4 needs numpy<2;
  MONAI 1.5+ accepts numpy 2 but needs torch>=2.4.1. With numpy 2 (Slicer 5.10+) and an
  older torch, the pinned install cannot succeed: the user is sent to PyTorch Utils with the
  torch version to install, as SlicerMONAIAuto3DSeg does.
* **two confirmations and two progress dialogs.** From Slicer 5.12 (``slicer.packaging``),
  ``pip_ensure`` asks, shows progress and reports failures itself; older Slicers need the
  module to do it around ``slicer.util.pip_install``.

The module must run on Slicer 5.8's Python 3.9: no ``match``, no ``X | Y`` outside annotations.
"""

from __future__ import annotations

import glob
import importlib.metadata
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from blcam.io.atomic import write_text_atomic

# What ``blcam`` needs besides torch and what Slicer already ships (see pyproject.toml).
REQUIREMENTS = ("monai>=1.4", "safetensors>=0.4", "scipy>=1.10", "tqdm>=4.60", "matplotlib>=3.7",
                "psutil>=5.9")
SLICER_OWN = ("numpy", "SimpleITK", "vtk")          # built with Slicer: a second copy breaks it
PINNED = SLICER_OWN + ("torch",)                     # torch: PyTorch Utils' build for this machine
BLCAM_MINIMUM_TORCH = "2.2"                          # pyproject.toml's torch>=2.2


@dataclass(frozen=True)
class MonaiRelease:
    """A MONAI release's declared needs (its wheel's Requires-Dist), for when MONAI is absent."""

    version: str
    numpyBelow: str       # exclusive upper bound of numpy (all releases need numpy>=1.24)
    minimumTorch: str


# The oldest release of each numpy range, and the newest one as the bound for anything newer.
MONAI_RELEASES = (
    MonaiRelease("1.4.0", numpyBelow="2.0", minimumTorch="1.9"),
    MonaiRelease("1.5.2", numpyBelow="3.0", minimumTorch="2.4.1"),
    MonaiRelease("1.6.1", numpyBelow="3.0", minimumTorch="2.8.0"),
)

ROUTE_PIP_ENSURE = "pip_ensure"    # Slicer 5.12+: slicer.packaging asks and shows progress
ROUTE_PIP_INSTALL = "pip_install"  # Slicer 5.8-5.10: the module asks and shows progress


def _infoFolderVersion(name: str, searchPath: Sequence[str]) -> str | None:
    """The version in a ``name-VERSION(-pyX.Y).egg-info`` / ``.dist-info`` folder name.

    Slicer 5.8 marks its VTK as installed with an *empty* ``vtk-9.2.20230607-py3.9.egg-info``:
    importlib finds the distribution but no version in it, while pip reads the version from
    the folder name. The constraint must carry the version pip sees."""
    wanted = canonicalize_name(name)
    for folder in searchPath:
        infos = glob.glob(os.path.join(folder, "*.egg-info")) + glob.glob(os.path.join(folder, "*.dist-info"))
        for info in sorted(infos):
            stem = os.path.basename(info).rsplit(".", 1)[0]
            parts = stem.split("-")
            if len(parts) >= 2 and canonicalize_name(parts[0]) == wanted:
                return parts[1]
    return None


def installedVersion(name: str, searchPath: Sequence[str] | None = None) -> str | None:
    """The version of distribution ``name`` that pip sees installed, or ``None``."""
    searchPath = list(sys.path if searchPath is None else searchPath)
    for dist in importlib.metadata.distributions(name=name, path=searchPath):
        if dist.version:
            return dist.version
        return _infoFolderVersion(name, searchPath)
    return None


def installedVersions(names: Sequence[str], searchPath: Sequence[str] | None = None) -> dict[str, str | None]:
    return {name: installedVersion(name, searchPath) for name in names}


def _parse(version: str | None) -> Version | None:
    try:
        return Version(version) if version else None
    except InvalidVersion:
        return None


def missingRequirements(requirements: Sequence[str] = REQUIREMENTS,
                        versions: Mapping[str, str | None] | None = None) -> list[str]:
    """The requirements that are absent or whose installed version does not satisfy them."""
    if versions is None:
        versions = installedVersions([Requirement(r).name for r in requirements])
    missing = []
    for text in requirements:
        requirement = Requirement(text)
        installed = _parse(versions.get(requirement.name))
        if installed is None or not requirement.specifier.contains(installed, prereleases=True):
            missing.append(text)
    return missing


def lowerBound(specifiers) -> Version | None:
    """The least version a specifier set allows from below (``>=``, ``>``, ``==``, ``~=``)."""
    bounds = [Version(s.version) for s in specifiers if s.operator in (">=", ">", "==", "~=")
              and "*" not in s.version]
    return max(bounds) if bounds else None


def monaiTorchMinimum(numpyVersion: str | None, installedMonaiRequires: Sequence[str] | None = None) -> Version:
    """The least torch the MONAI that will be used accepts.

    An installed MONAI (that satisfies :data:`REQUIREMENTS`) says so in its own metadata.
    Otherwise pip, with numpy pinned, can only pick a release whose numpy range holds
    Slicer's numpy: the oldest such release sets the torch minimum (numpy 2 → MONAI 1.5 →
    torch 2.4.1). A numpy newer than every known release gets the newest release's minimum."""
    if installedMonaiRequires is not None:
        environment = dict(default_environment(), extra="")
        for text in installedMonaiRequires:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == "torch" and (
                    requirement.marker is None or requirement.marker.evaluate(environment)):
                return lowerBound(requirement.specifier) or Version("0")
        return Version("0")
    numpy = _parse(numpyVersion)
    for release in MONAI_RELEASES:
        if numpy is None or numpy < Version(release.numpyBelow):
            return Version(release.minimumTorch)
    return Version(MONAI_RELEASES[-1].minimumTorch)


def torchRequirement(numpyVersion: str | None, installedMonaiRequires: Sequence[str] | None = None) -> str:
    """``>=X``: what torch must be for blcam and for the MONAI it will run with."""
    return ">=" + str(max(Version(BLCAM_MINIMUM_TORCH), monaiTorchMinimum(numpyVersion, installedMonaiRequires)))


def torchTooOld(torchVersion: str, requirement: str) -> bool:
    installed = _parse(torchVersion)
    return installed is None or not Requirement("torch" + requirement).specifier.contains(installed, prereleases=True)


def tooOldTorchMessage(torchVersion: str, requirement: str, numpyVersion: str | None) -> str:
    return (f"PyTorch {torchVersion} is too old for BreastLesionCAM: it needs torch{requirement} "
            f"(for blcam and for the MONAI that fits Slicer's numpy {numpyVersion or '(unknown)'}). "
            "Open the 'PyTorch Utils' module, click 'Uninstall PyTorch' and restart Slicer; then set "
            f"'Torch version requirement' to '{requirement}' there and click 'Install PyTorch' (or let "
            "BreastLesionCAM install it).")


def constraintsText(versions: Mapping[str, str | None]) -> str:
    """A pip constraints file pinning each installed package to its exact version.

    A package with no known version is listed as a comment: pinning a guess would make pip
    *install* that guess over the real one."""
    lines = ["# Written by BreastLesionCAM: keep Slicer's own packages and PyTorch Utils' torch as they are."]
    for name, version in versions.items():
        lines.append(f"{name}=={version}" if version else f"# {name}: not installed or version unknown, not pinned")
    return "\n".join(lines) + "\n"


def writeConstraints(folder, versions: Mapping[str, str | None]) -> Path:
    """Write :func:`constraintsText` to ``folder/constraints.txt`` (atomically); returns the path."""
    path = Path(folder) / "constraints.txt"
    write_text_atomic(path, constraintsText(versions))
    return path


def pipInstallArgs(requirements: Sequence[str], constraintsPath) -> list[str]:
    """Arguments for ``slicer.util.pip_install`` (5.8-5.10 take no ``constraints=`` keyword)."""
    return [*requirements, "-c", str(constraintsPath)]


def installRoute(hasPipEnsure: bool) -> str:
    """:data:`ROUTE_PIP_ENSURE` when ``slicer.packaging.pip_ensure`` exists (it asks and shows
    progress itself: the module must not show a second dialog), else :data:`ROUTE_PIP_INSTALL`."""
    return ROUTE_PIP_ENSURE if hasPipEnsure else ROUTE_PIP_INSTALL


@dataclass
class Plan:
    """What :func:`Dependencies.ensureDependencies` has to do, in order."""

    torchVersion: str | None
    torchRequirement: str                  # e.g. '>=2.4.1'
    torchProblem: str | None               # too old: the message sending the user to PyTorch Utils
    missing: list = field(default_factory=list)   # requirement strings pip must install
    pinned: dict = field(default_factory=dict)    # name -> installed version (or None)
    route: str = ROUTE_PIP_INSTALL

    @property
    def installTorch(self) -> bool:
        return self.torchVersion is None

    @property
    def ready(self) -> bool:
        return not self.installTorch and self.torchProblem is None and not self.missing

    def describeMissing(self) -> str:
        """What is missing, one line (for the self-test's skip message and error dialogs)."""
        parts = []
        if self.installTorch:
            parts.append(f"torch{self.torchRequirement} (PyTorch extension)")
        elif self.torchProblem:
            parts.append(f"torch{self.torchRequirement} (installed: {self.torchVersion})")
        return ", ".join(parts + list(self.missing))


def makePlan(versions: Mapping[str, str | None], hasPipEnsure: bool,
             installedMonaiRequires: Sequence[str] | None = None,
             requirements: Sequence[str] = REQUIREMENTS) -> Plan:
    """The plan for a Python whose distributions have ``versions`` (name → version or None).

    ``installedMonaiRequires`` is the installed MONAI's Requires-Dist, used only if that MONAI
    already satisfies the requirement (otherwise pip will choose another one)."""
    missing = missingRequirements(requirements, versions)
    monaiMissing = any(Requirement(r).name == "monai" for r in missing)
    requirement = torchRequirement(versions.get("numpy"), None if monaiMissing else installedMonaiRequires)
    torch = versions.get("torch")
    problem = None
    if torch is not None and torchTooOld(torch, requirement):
        problem = tooOldTorchMessage(torch, requirement, versions.get("numpy"))
    return Plan(torch, requirement, problem, missing, {name: versions.get(name) for name in PINNED},
                installRoute(hasPipEnsure))


def currentPlan(hasPipEnsure: bool) -> Plan:
    """:func:`makePlan` for this Python."""
    names = list(PINNED) + [Requirement(r).name for r in REQUIREMENTS]
    monaiRequires = None
    try:
        monaiRequires = importlib.metadata.requires("monai") or []
    except importlib.metadata.PackageNotFoundError:
        pass
    return makePlan(installedVersions(names), hasPipEnsure, monaiRequires)


def selfTestSkipReason(plan: Plan, testing: bool) -> str | None:
    """Why the self-test must skip, or ``None`` to run it (installing first when not testing).

    Under ``--testing`` nothing is installed, as Slicer's ``pip_ensure`` (``skip_in_testing``)
    and the PyTorch-based extensions do: a test run must not download gigabytes or change the
    Python environment of the Slicer being tested."""
    if plan.ready or not testing:
        return None
    return ("BreastLesionCAM self-test skipped: Slicer runs with --testing, where extensions do not "
            f"install Python packages, and these are missing: {plan.describeMissing()}. Open the "
            "module once (it offers to install them), or install them with PyTorch Utils and "
            "pip_install, then run the test again.")

