"""The installed Slicer extension only contains what the module's CMake lists."""

import re
from pathlib import Path

MODULE = Path(__file__).resolve().parents[1] / "BrainXAI"


def _listed() -> set[str]:
    text = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
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


def test_every_widget_the_module_uses_is_in_the_ui_file():
    import xml.etree.ElementTree as ET

    code = (MODULE / "BrainXAI.py").read_text(encoding="utf-8")
    used = set(re.findall(r"self\.ui\.(\w+)", code))
    declared = {w.get("name") for w in ET.parse(MODULE / "Resources" / "UI" / "BrainXAI.ui").iter("widget")}
    assert used and used <= declared, used - declared


def test_icon_is_128_square_png():
    from PIL import Image

    with Image.open(MODULE / "Resources" / "Icons" / "BrainXAI.png") as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)


def test_catalog_entry_follows_the_extensions_index_schema_v1_0_1():
    import json

    entry = json.loads((MODULE.parent / "BrainXAI.json").read_text(encoding="utf-8"))
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "build_subdirectory", "enabled", "tier"}  # the schema's properties; it forbids any other
    assert {"$schema", "category", "scm_url"} <= set(entry) <= allowed
    assert entry["$schema"].endswith("/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert entry["category"] == "Neuroimaging" and entry["tier"] in (1, 3, 5)
    assert entry.get("scm_type", "git") in ("git", "local") and "PyTorch" in entry["build_dependencies"]
    top = (MODULE.parent / "CMakeLists.txt").read_text(encoding="utf-8")
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in top and 'set(EXTENSION_CATEGORY "Neuroimaging")' in top
    # The Extension Manager shows these: each must be a file of this repository, at its raw URL.
    raw = "https://raw.githubusercontent.com/brainxai/SlicerBrainXAI/main/"
    for field in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        urls = re.search(rf'set\({field} "([^"]*)"\)', top).group(1).split()
        assert urls and all(u.startswith(raw) and (MODULE.parent / u[len(raw):]).is_file() for u in urls), field
    assert (MODULE.parent / "LICENSE").is_file()


def test_requirements_leave_slicer_and_the_pytorch_extension_packages_alone():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    def names(lines):
        return {canonicalize_name(Requirement(line).name) for line in lines}

    lines = [line.split("#")[0].strip() for line in (MODULE / "Resources" / "requirements.txt").read_text(encoding="utf-8").splitlines()]
    listed = names(line for line in lines if line)
    # Shipped with Slicer (numpy, SimpleITK, ...) or installed by PyTorchUtils (torch, torchvision): pip must never
    # replace them inside Slicer.
    assert not listed & {"numpy", "simpleitk", "pillow", "requests", "packaging", "setuptools", "torch", "torchvision"}
    import tomllib

    declared = names(tomllib.loads((MODULE.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"])
    assert listed <= declared, listed - declared  # nothing Slicer installs that the package does not use


def test_brainxai_test_is_registered_with_ctest():
    text = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"if\(BUILD_TESTING\)\s*(#.*\n\s*)*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", text)


def test_panel_offers_every_llm_preset_and_cloud_is_off():
    import xml.etree.ElementTree as ET

    from brainxai.reporting.llm import PRESETS

    from brainxai.app.panel import LLM_BACKENDS

    assert set(LLM_BACKENDS) == set(PRESETS)
    ui = ET.parse(MODULE / "Resources" / "UI" / "BrainXAI.ui")
    box = next(w for w in ui.iter("widget") if w.get("name") == "cloudCheckBox")
    checked = next(p for p in box.iter("property") if p.get("name") == "checked")
    assert checked.find("bool").text == "false"


def test_the_panel_opens_before_brainxais_packages_are_installed():
    """Inside Slicer the module file is imported before the user has agreed to install anything: what it imports
    from brainxai at load time must need only the standard library (and what Slicer ships)."""
    import ast
    import subprocess
    import sys

    tree = ast.parse((MODULE / "BrainXAI.py").read_text(encoding="utf-8"))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    ours = sorted({n.module for n in top if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("brainxai")}
                  | {f"brainxai.{a.name}" for n in top if isinstance(n, ast.ImportFrom) and n.module == "brainxai"
                     for a in n.names})
    assert ours, "the module imports nothing from brainxai at load time?"
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] not in sys.stdlib_module_names and name.split('.')[0] != 'brainxai':\n"
        "            raise ImportError('needs ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {ours!r}: __import__(m)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8")
    assert out.stdout.strip() == "ok", out.stderr[-500:]
