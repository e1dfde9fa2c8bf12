"""Score-CAM (Wang et al. 2020): gradient-free; each channel weighted by the class score of the input masked by it."""

from pytorch_grad_cam import ScoreCAM

from .base import CamMethod

# One forward pass per activation channel and slice: large batches amortise the per-call overhead.
METHOD = CamMethod("scorecam", "Score-CAM", ScoreCAM, batch_size=1, options={"batch_size": 128})
