"""BrainXAI: explainable brain-tumour MRI, headless logic (no Qt).

Stages: load -> preprocess -> model -> explain -> threshold -> register -> atlas -> findings -> report.
"""

__version__ = "0.1.0"

CLASSES = ("glioma", "meningioma", "pituitary", "no_tumor")
