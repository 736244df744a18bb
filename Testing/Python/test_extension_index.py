"""Readiness for Slicer's ExtensionsIndex: the offline rules of its ``check_description_files.py``.

The index validates a submitted ``BreastLesionCAM.json`` by cloning ``scm_url`` and reading the
top-level ``CMakeLists.txt``. What it checks without the network is repeated here, with the
same regular expressions, so that a rename or a moved picture fails in CI rather than in the
index's pull request:

* the *repository* name starts with "Slicer" (``SlicerBreastLesionCAM``), the *extension*
  name (the JSON file's name, the CMake ``project()``) does not;
* ``scm_url`` is ``https://`` or ``git://``; the JSON has LF line endings only;
* ``EXTENSION_ICONURL`` and ``EXTENSION_SCREENSHOTURLS`` are found by the index's patterns
  and point into the same repository at ``scm_revision`` (``test_extension_packaging``
  checks that the PNGs exist there);
* the homepage and the module's help link name the same repository;
* a licence file is at the top; the checked-out repository stays under 100 MB.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "BreastLesionCAM.json"
# check_description_files.py: allowed repository prefixes and its CMakeLists.txt patterns.
REPOSITORY_PREFIXES = ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")
PROJECT_PATTERN = r"project\s*\(\s*([^\s\)\n\r]+)"
ICON_URL_PATTERN = r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)'
SCREENSHOT_URLS_PATTERN = r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)'
REPOSITORY_SIZE_LIMIT_MB = 100


def entry() -> dict:
    return json.loads(ENTRY.read_text(encoding="utf-8"))


def repository() -> tuple[str, str]:
    """(owner, name) of the repository ``scm_url`` names."""
    parts = urllib.parse.urlsplit(entry()["scm_url"].strip().strip("/")).path.split("/")
    return parts[1], os.path.splitext(parts[-1])[0]


def cmake_text() -> str:
    return (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")


def test_repository_name_starts_with_slicer_and_extension_name_does_not():
    owner, name = repository()
    assert name == "SlicerBreastLesionCAM" and name.startswith(REPOSITORY_PREFIXES)
    extension = ENTRY.stem
    assert not extension.lower().startswith("slicer")
    projects = re.findall(PROJECT_PATTERN, cmake_text(), re.IGNORECASE | re.MULTILINE)
    assert projects and projects[0].strip("\"'") == extension == "BreastLesionCAM"


def test_scm_url_scheme_and_line_endings():
    url = entry()["scm_url"]
    assert "://" in url and urllib.parse.urlsplit(url).scheme in ("git", "https")
    raw = ENTRY.read_bytes()
    assert b"\r" not in raw


def test_homepage_icon_screenshots_and_help_link_name_the_same_repository():
    owner, name = repository()
    revision = entry()["scm_revision"]
    text = cmake_text()
    homepage = re.search(r'set\(EXTENSION_HOMEPAGE\s+"([^"]+)"\)', text).group(1)
    assert homepage == f"https://github.com/{owner}/{name}" == entry()["scm_url"].removesuffix(".git")
    icons = re.findall(ICON_URL_PATTERN, text, re.IGNORECASE | re.MULTILINE)
    screenshots = re.findall(SCREENSHOT_URLS_PATTERN, text, re.IGNORECASE | re.MULTILINE)
    assert len(icons) == 1 and len(screenshots) == 1
    raw = f"https://raw.githubusercontent.com/{owner}/{name}/{revision}/"
    urls = [icons[0].strip()] + screenshots[0].split()
    assert urls and all(url.startswith(raw) and url.endswith(".png") for url in urls), urls
    module = (ROOT / "BreastLesionCAM" / "BreastLesionCAM.py").read_text(encoding="utf-8")
    links = re.findall(r'href="(https://github\.com/[^"#]+)', module)
    assert links and set(links) == {homepage}


def test_licence_file_and_repository_size():
    assert (ROOT / "LICENSE").is_file()
    try:
        listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True,
                                timeout=60).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the index measures the cloned repository")
    files = [ROOT / f for f in listed.decode("utf-8").split("\0") if f]
    total_mb = sum(f.stat().st_size for f in files if f.is_file()) / 2**20
    assert total_mb < REPOSITORY_SIZE_LIMIT_MB
