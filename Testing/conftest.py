import gc
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BRAINXAI_DATA", REPO.parent / "shared" / "data")).resolve()


# Tests that read ../shared/data take one of these fixtures; without the data they are skipped with the reason,
# so a checkout without it still runs (and passes) every pure test. `-m "not data"` runs only those.
DATA_FIXTURES = {"data_dir", "brats_path", "ixi_path"}


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs the shared data: {path} is absent (set BRAINXAI_DATA to the folder holding the shared "
                    "data README)")
    return path


def pytest_configure(config):
    config.addinivalue_line("markers", "data: reads the shared data in ../shared/data (skipped when it is absent)")


def pytest_collection_modifyitems(items):
    for item in items:
        if DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)


@pytest.fixture(scope="session")
def model():
    """The packaged model, loaded once for the whole session."""
    from brainxai.model import load_model

    return load_model()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _need(DATA)


@pytest.fixture(scope="session")
def brats_path(data_dir) -> Path:
    return _need(data_dir / "volumes" / "brats" / "BraTS-GLI-00001-000-t1c.nii.gz")


@pytest.fixture(scope="session")
def ixi_path(data_dir) -> Path:
    return _need(data_dir / "volumes" / "ixi" / "IXI012-HH-1211_T1.nii.gz")


@pytest.fixture(autouse=True)
def _test_process_is_not_brainxais_own():
    """cli.main(["explain", ...]) marks its process as brainxai's own (runtime.own_process: what the preload
    imports is frozen out of the garbage collector). The test process is not one, so that is undone after each test."""
    yield
    from brainxai import runtime

    runtime._freeze_imports = False
    gc.unfreeze()
