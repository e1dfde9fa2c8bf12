"""The input check (brainxai.guard): its flags and sentences with known inputs, the fitted contrast read-out tied to
its weights, and the whole pipeline on real scans. Its rates on held-out scans are measured by
`brainxai evaluate --volumes` (docs/metrics/input_guard.md)."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from brainxai.reporting import findings as findings_mod
from brainxai import guard
from brainxai.mni.register import MIN_COVERAGE, Registration


def _reg(mi=0.3, coverage=1.0):
    return Registration(sitk.AffineTransform(3), "mutual information", -mi, True, 10, "step", "MNI152",
                        brain_coverage=coverage)


def test_flags_and_the_sentences_they_put_in_the_findings():
    ok = guard.check(_reg(), 0.9)
    assert ok["flags"] == [] and ok["brain_mri"] and ok["contrast_enhanced"] and guard.warnings(ok) == []
    plain = guard.check(_reg(), 0.2)
    assert plain["flags"] == ["not_contrast_enhanced"] and plain["contrast_enhanced"] is False
    partial = guard.check(_reg(coverage=MIN_COVERAGE - 0.2), 0.2)
    assert partial["flags"] == ["partial_brain", "not_contrast_enhanced"]
    said = guard.warnings(partial)
    assert len(said) == 2 and "holds only 65% of the brain" in said[0] and "not look contrast-enhanced" in said[1]
    noise = guard.check(_reg(mi=0.005, coverage=0.2), 0.2)
    # not a brain: neither the coverage nor the contrast read-out of a wrong alignment means anything
    assert noise["flags"] == ["not_brain_mri"] and noise["contrast_enhanced"] is None
    assert "may not be a brain MRI" in guard.warnings(noise, 0.005)[0] and "0.005" in guard.warnings(noise, 0.005)[0]
    unfitted = guard.check(_reg(), None)  # other weights than the check was fitted on: said, not guessed
    assert unfitted["flags"] == [] and unfitted["contrast_enhanced"] is None
    assert guard.warnings(unfitted) == ["Input check: the scan's contrast was not checked (no check fitted on these "
                                        "model weights)."]


def test_the_read_out_is_used_only_with_the_weights_it_was_fitted_on(tmp_path):
    weights = tmp_path / "w.pt"
    rng = np.random.default_rng(0)
    features = rng.normal(size=(5, 3, 4, 4)).astype(np.float32)
    assert guard.contrast_probability(features, weights, "abc") is None  # nothing fitted
    check = {"weights_sha256": "abc", "mean": [0.0, 0.0, 0.0], "scale": [1.0, 1.0, 1.0], "coef": [2.0, 0.0, 0.0],
             "intercept": 0.0}
    guard.contrast_check_path(weights).write_text(json.dumps(check), encoding="utf-8")
    guard._read_check.cache_clear()
    x = features.mean((2, 3))[:, 0]
    assert guard.contrast_probability(features, weights, "abc") == pytest.approx(np.mean(1 / (1 + np.exp(-2 * x))))
    assert guard.contrast_probability(features, weights, "other weights") is None
    assert guard.contrast_probability(features[:0], weights, "abc") is None
    guard._read_check.cache_clear()


def test_the_check_validates_in_findings_and_a_slice_is_unchecked():
    from helpers import glioma_case

    case = glioma_case()
    assert "input_check" not in case  # findings written before 1.1 stay valid
    findings_mod.validate(case)
    case["schema_version"] = findings_mod.SCHEMA_VERSION
    for check in (guard.check(_reg(coverage=0.5), 0.3), guard.check(_reg(), None), guard.unchecked()):
        findings_mod.validate({**case, "input_check": check})
    with pytest.raises(Exception, match="flags"):
        findings_mod.validate({**case, "input_check": {**guard.unchecked(), "flags": ["looks odd"]}})


def test_the_shipped_check_belongs_to_the_shipped_weights():
    from brainxai.model import _sha256
    from brainxai.model_config import default_weights_path

    weights = default_weights_path()
    check = json.loads(guard.contrast_check_path(weights).read_text(encoding="utf-8"))
    assert check["weights_sha256"] == _sha256(weights)  # retrained weights need `brainxai fit-contrast-check`
    f = check["fitted_on"]
    assert f["enhanced"] > 1000 and f["plain"] > 1000 and len(check["coef"]) == len(check["mean"])


def test_pipeline_refuses_noise_and_flags_a_slab_as_partial(ixi_path):
    """Real registration: a volume of noise is no brain MRI (refused before the model: no diagnosis); twelve 2 mm
    slices of a real head are a slab (diagnosed, with a warning)."""
    from brainxai import pipeline
    from brainxai.errors import BrainXAIError
    from brainxai.load import read_input

    image, info = read_input(ixi_path)
    size = image.GetSize()
    rng = np.random.default_rng(0)
    noise = sitk.GetImageFromArray(rng.random(size[::-1]).astype(np.float32))
    noise.CopyInformation(image)
    slab = image[:, :, size[2] // 2 - 6: size[2] // 2 + 6]
    options = pipeline.Options(methods=("gradcam++",))
    with pytest.raises(BrainXAIError, match="does not look like a brain MRI") as err:
        pipeline.analyse(noise, info, options)
    assert "\n" not in str(err.value) and "no diagnosis" in str(err.value)
    seen = {"slab": pipeline.analyse(slab, info, options).findings}
    findings_mod.validate(seen["slab"])
    assert "partial_brain" in seen["slab"]["input_check"]["flags"]
    assert any(w.startswith("Input check: the field of view holds only") for w in seen["slab"]["warnings"])
