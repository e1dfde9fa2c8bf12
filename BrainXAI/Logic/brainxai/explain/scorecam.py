"""Score-CAM (Wang et al. 2020): gradient-free; each channel weighted by the class score of the input masked by it."""

from pytorch_grad_cam import ScoreCAM

from .base import CamMethod

# One forward pass per activation channel and slice. pytorch-grad-cam's default of 32 masked inputs per forward
# pass is faster here than larger batches (docs/bench.md: 128 took 1.5x as long on 2 cores).
METHOD = CamMethod("scorecam", "Score-CAM", ScoreCAM, batch_size=1)
