"""One Options for every way a run is asked for: the background process's command line gives back the same Options."""

from pathlib import Path

import pytest

from brainxai.cli import build_parser
from brainxai.options import Options, from_args, to_argv


@pytest.mark.parametrize("options", [
    Options(),
    Options(methods=("gradcam++",), max_cam_slices=2),
    Options(methods=("scorecam", "gradcam"), threshold_percentile=97.5, model_path=Path("/tmp/w e/ights.pt")),
    Options(methods=("mincam", "proto-early", "proto-late"), enhance=True),
])
def test_the_command_line_carries_options_unchanged(options):
    args = build_parser().parse_args(["explain", "--out", "o", *to_argv(options)])
    assert from_args(args) == options


def test_the_command_line_defaults_are_the_pipelines():
    args = build_parser().parse_args(["explain", "--out", "o"])
    assert from_args(args) == Options() and to_argv(Options()) == []
