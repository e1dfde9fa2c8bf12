"""Score-CAM (Wang et al. 2020): gradient-free; each channel weighted by the class score of the input masked by it.

pytorch-grad-cam's ScoreCAM scores every channel (one forward pass each, read back one number at a time). Here
only the `channels` channels whose activation varies most across the slice are scored, as in Faster Score-CAM
(tabayashi0117's variant, tf-keras-vis's `max_N`); the others get weight 0. Their softmax weights and the
weighted sum are the library's.
"""

import torch
from pytorch_grad_cam import ScoreCAM

from . import TITLES
from .base import CamMethod

CHANNELS = 12  # of the head's 128: chosen on figshare validation slices (docs/bench.md)


class SelectiveScoreCAM(ScoreCAM):
    channels: int | None = CHANNELS  # None: every channel, exactly pytorch-grad-cam's ScoreCAM
    batch_size: int = 16  # masked inputs per forward pass

    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
        acts = torch.from_numpy(activations).float()
        n, c = acts.shape[:2]
        k = c if self.channels is None else min(self.channels, c)
        chosen = acts.flatten(2).var(-1).argsort(dim=1, descending=True)[:, :k]
        upsample = torch.nn.UpsamplingBilinear2d(size=input_tensor.shape[-2:])
        weights = torch.zeros(n, c)
        with torch.no_grad():
            for i in range(n):
                up = upsample(acts[i, chosen[i]][None])[0]
                lo, hi = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
                masked = (input_tensor[i] * ((up - lo) / (hi - lo + 1e-8))[:, None]).to(input_tensor.dtype)
                # Scores stay on the device until the softmax: no per-sample host sync.
                scores = torch.cat([targets[i](self.model(masked[j : j + self.batch_size])).float()
                                    for j in range(0, k, self.batch_size)])
                weights[i, chosen[i]] = torch.softmax(scores, 0)
        return weights.numpy()


METHOD = CamMethod("scorecam", TITLES["scorecam"], SelectiveScoreCAM, batch_size=1, uses_gradients=False)
