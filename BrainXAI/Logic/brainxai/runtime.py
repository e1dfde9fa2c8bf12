"""How brainxai runs in a process: the heavy imports and the model made ready on a worker thread while the caller
preprocesses and registers, and the garbage collector kept out of the way of those imports."""

from __future__ import annotations

import gc
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .model import LoadedModel
    from .options import Options

_freeze_imports = False


def own_process() -> None:
    """Called by the command line and the Slicer module's worker: processes of brainxai's own that end after one
    run. What the preload imports lives until the end anyway, so it is frozen (gc.freeze) and no later collection
    rescans it (~0.5 s a run). Not the default: in someone else's long-lived process (Slicer's Python console),
    frozen objects that later become garbage cycles would never be freed."""
    global _freeze_imports
    _freeze_imports = True


@contextmanager
def no_cyclic_gc():
    """Python's cyclic garbage collector paused: importing torch, torchvision, timm, smp and pytorch-grad-cam
    creates a few hundred thousand objects, and the collector rescans the growing heap again and again (4.2 s of
    imports take 3.3 s without it). Reference counting still frees everything that is not in a cycle."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _freeze_imports:
            gc.freeze()
        if enabled:
            gc.enable()


def _ready_model(model: LoadedModel | None, options: "Options") -> LoadedModel:
    """The model (loaded unless given) with one batch of zeros run at the options' precision and batch size, so
    the network for that precision is made and the CPU kernels for that shape are chosen now, not on the first
    real batch."""
    # The imports only (torch, smp, timm, torchvision): a model frozen with them could never be collected.
    with no_cyclic_gc():
        from .model import load_model, predict_slices
    model = model or load_model(options.model_path)
    size = model.cfg.input_size
    predict_slices(model, np.zeros((options.batch_size, size, size), np.float32), options.batch_size,
                   precision=options.precision)
    return model


def _cam_methods(methods) -> list:
    with no_cyclic_gc():
        from .explain import get_method  # imports pytorch-grad-cam (and with it scikit-learn, matplotlib, OpenCV)

        return [get_method(m) for m in methods]


def prepare_model(model: LoadedModel | None, options: "Options", methods) -> tuple[LoadedModel, list]:
    """The model and the CAM methods, ready to run: their libraries imported, the CPU kernels chosen."""
    return _ready_model(model, options), _cam_methods(methods)


def preload(model: LoadedModel | None, options: "Options", methods: list[str]) -> tuple[Future, Future]:
    """On a worker thread, while the caller preprocesses and registers: the model made ready, then the CAM methods
    imported, while the caller runs the model. In a fresh process importing torch, torchvision, timm and smp takes
    ~3 s and pytorch-grad-cam with what it imports ~1.7 s; SimpleITK and torch release the GIL, so both cores
    work and the user waits for the longer of the two, not the sum."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="brainxai-preload")
    ready = pool.submit(_ready_model, model, options)
    cams = pool.submit(_cam_methods, methods)
    pool.shutdown(wait=False)
    return ready, cams
