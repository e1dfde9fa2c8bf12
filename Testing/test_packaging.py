"""The installed Slicer extension only contains what the module's CMake lists."""

import re
from pathlib import Path

MODULE = Path(__file__).resolve().parents[1] / "BrainXAI"


def _listed() -> set[str]:
    text = (MODULE / "CMakeLists.txt").read_text()
    return {m.replace("${MODULE_NAME}", "BrainXAI") for m in re.findall(r"^\s+(\S+\.\w+)\s*$", text, re.M)}


def test_every_python_and_resource_file_is_listed_in_cmake():
    listed = _listed()
    shipped = {
        str(p.relative_to(MODULE))
        for p in MODULE.rglob("*")
        if p.is_file() and p.name != "CMakeLists.txt"
        and not any(part == "__pycache__" or part.endswith(".egg-info") for part in p.parts)  # build artefacts
    }
    assert shipped - listed == set(), "files missing from BrainXAI/CMakeLists.txt"
    assert listed - shipped == set(), "CMake lists files that do not exist"


def test_nothing_generic_is_importable_from_module_paths():
    # Slicer puts BrainXAI/ and BrainXAI/Logic on one global sys.path shared by all extensions.
    for folder in (MODULE, MODULE / "Logic"):
        tops = {p.stem for p in folder.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
        assert tops <= {"BrainXAI", "brainxai"}, tops
