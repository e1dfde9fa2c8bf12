"""Grad-CAM (Selvaraju et al. 2017): channel weights = spatially averaged gradients of the class score."""

from pytorch_grad_cam import GradCAM

from . import TITLES
from .base import CamMethod

METHOD = CamMethod("gradcam", TITLES["gradcam"], GradCAM)
