"""The bundled default input: an MNI152 brain with a synthetic ring-enhancing lesion, built at run time.

It is a phantom, not a patient: every output built from it says so.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .mni.register import load_mni_template

LESION_CENTRE_MNI_RAS = (30.0, -10.0, 24.0)  # right hemisphere, deep white matter
PHANTOM_WARNING = "Input is a synthetic phantom (MNI152 template with an artificial lesion), not a patient scan."


def make_phantom(seed: int = 0) -> sitk.Image:
    template = sitk.Cast(load_mni_template(), sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(template)
    brain = arr > 0
    wm = float(np.percentile(arr[brain], 90))
    # Distance (mm) of every voxel centre from the lesion centre, in physical LPS space.
    x, y, z = LESION_CENTRE_MNI_RAS
    centre = np.array([-x, -y, z])
    idx = np.indices(arr.shape).reshape(3, -1)[::-1].T  # (i, j, k)
    pts = np.asarray(template.GetOrigin()) + (idx * template.GetSpacing()) @ np.asarray(template.GetDirection()).reshape(3, 3).T
    r = np.linalg.norm(pts - centre, axis=1).reshape(arr.shape)
    # Necrotic core, enhancing rim, surrounding oedema: the pattern of a high-grade glioma on CE-T1.
    out = arr.copy()
    out[r < 20] *= 0.85
    out[r < 14] = 1.7 * wm
    out[r < 10] = 0.35 * wm
    out = np.where(brain | (r < 14), out, arr)
    img = sitk.GetImageFromArray(out)
    img.CopyInformation(template)
    img = sitk.SmoothingRecursiveGaussian(img, 0.8)
    rng = np.random.default_rng(seed)
    noisy = sitk.GetArrayFromImage(img) + rng.normal(0, 0.02 * wm, out.shape).astype(np.float32)
    result = sitk.GetImageFromArray(np.where(brain | (r < 14), noisy, 0).astype(np.float32))
    result.CopyInformation(template)
    return result
