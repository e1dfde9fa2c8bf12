"""brainxai bench runs end to end on a real volume and reports what it measured (the figures themselves are in
docs/bench.md: a benchmark, not a timed unit test)."""

import json

import SimpleITK as sitk

from brainxai import cli


def test_bench_runs_side_by_side_and_writes_its_table(ixi_path, tmp_path):
    small = tmp_path / "ixi_small.nii.gz"  # a coarser copy keeps the naive per-slice loops short
    image = sitk.ReadImage(str(ixi_path))
    sitk.WriteImage(sitk.Resample(image, [s // 2 for s in image.GetSize()], sitk.Transform(), sitk.sitkLinear,
                                  image.GetOrigin(), [2 * s for s in image.GetSpacing()], image.GetDirection()),
                    str(small))
    out = tmp_path / "bench.md"
    assert cli.main(["bench", "--input", str(small), "--out", str(out), "--scorecam-slices", "1"]) == 0
    r = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert {"register", "model", "explain", "atlas", "write"} <= set(r["ours"]["stages_s"])
    assert r["ours"]["total_s"] > 0 and r["naive"]["total_s"] > 0 and r["peak_rss_mb"] > 0
    sc = r["scorecam"]
    # ours is pytorch-grad-cam's Score-CAM with other batching: the maps, so the Dice, must be the same
    assert sc["slices"] == 1 and abs(sc["naive_dice"] - sc["ours_dice"]) < 1e-6
    assert "| end to end, Grad-CAM++ (s) |" in out.read_text(encoding="utf-8")
    assert cli.main(["bench", "--input", str(small), "--out", str(out)]) == 2  # never overwritten
