"""Grad-CAM++ (Chattopadhay et al. 2018): higher-order gradient weights, better for several or large regions."""

from pytorch_grad_cam import GradCAMPlusPlus

from . import TITLES
from .base import CamMethod

METHOD = CamMethod("gradcam++", TITLES["gradcam++"], GradCAMPlusPlus)
