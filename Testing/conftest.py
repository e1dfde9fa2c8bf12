import gc
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BRAINXAI_DATA", REPO.parent / "shared" / "data")).resolve()


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"shared data missing: {path} (set BRAINXAI_DATA to the folder holding the shared data README)")
    return path


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
    """cli.main(["explain", ...]) marks its process as brainxai's own (pipeline.own_process: what the preload
    imports is frozen out of the garbage collector). The test process is not one, so that is undone after each test."""
    yield
    from brainxai import pipeline

    pipeline._freeze_imports = False
    gc.unfreeze()
