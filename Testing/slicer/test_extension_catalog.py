"""The ExtensionsIndex entry LungLesionAI.json: valid against the catalog entry schema v1.0.2 and consistent with
the extension's CMake metadata (category, repository, dependencies).

The schema's rules are restated here (Slicer/Slicer: Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json:
draft-07, required $schema/category/scm_url, no other properties than those listed), so the check runs offline.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from conftest import REPO_ROOT

ENTRY = REPO_ROOT / "LungLesionAI.json"
SCHEMA_URL = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json"
CATALOG_ENTRY_SCHEMA_V1_0_2 = {
    "$schema": "http://json-schema.org/draft-07/schema",
    "type": "object",
    "required": ["$schema", "category", "scm_url"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string"},
        "category": {"type": "string"},
        "scm_url": {"type": "string"},
        "scm_revision": {"type": "string"},
        "scm_type": {"type": "string", "enum": ["git", "local"]},
        "build_dependencies": {"type": "array", "items": {"type": "string"}},
        "dicom_support_rule": {"type": "string"},
        "build_subdirectory": {"type": "string"},
        "enabled": {"type": "boolean"},
        "tier": {"type": "integer", "minimum": 1, "maximum": 5},
    },
}


@pytest.fixture(scope="module")
def entry() -> dict:
    return json.loads(ENTRY.read_text(encoding="utf-8"))


def _cmake_values() -> dict[str, str]:
    text = "\n".join(line.split("#", 1)[0] for line in (REPO_ROOT / "CMakeLists.txt").read_text().splitlines())
    return dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))


def test_entry_follows_the_catalog_schema(entry):
    jsonschema.Draft7Validator(CATALOG_ENTRY_SCHEMA_V1_0_2).validate(entry)
    assert entry["$schema"].rstrip("#") == SCHEMA_URL
    for key in ("$schema", "category", "scm_url", "scm_revision", "build_dependencies", "tier"):
        assert key in entry, key


@pytest.mark.parametrize("broken", [{"category": None}, {"tier": 0}, {"scm_type": "svn"}, {"iconurl": "x"}])
def test_the_schema_check_can_fail(entry, broken):
    bad = {**entry, **broken}
    if bad.get("category") is None:
        bad.pop("category")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(CATALOG_ENTRY_SCHEMA_V1_0_2).validate(bad)


def test_entry_agrees_with_the_cmake_metadata(entry):
    values = _cmake_values()
    assert entry["category"] == values["EXTENSION_CATEGORY"]
    assert entry["scm_url"].removesuffix(".git") == values["EXTENSION_HOMEPAGE"]
    assert entry["build_dependencies"] == values["EXTENSION_DEPENDS"].split()
    assert entry["scm_type"] == "git" and entry["build_subdirectory"] == "."
    for key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):  # the catalog takes these from CMake
        assert values[key].startswith("https://")
    assert (REPO_ROOT / "LICENSE").is_file()


def test_readme_explains_the_extension_manager_install():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Install from the Extension Manager", 1)
    assert len(section) == 2, "README needs the section 'Install from the Extension Manager'"
    body = section[1].split("\n## ", 1)[0]
    assert "PyTorch" in body and "LungLesionAI" in body
