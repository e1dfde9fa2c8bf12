"""The output folder of `brainxai explain`, named in one place: every reader and writer of it takes the names here.

    findings.json  report.md  report.html  [report_llm.md/.html/.json]  overview.png
    tumor_segmentation.nii.gz  analysis_region.nii.gz  heatmap_<method>.nii.gz  mask_<method>.nii.gz
    transform_to_mni.tfm  mni/<the images above except analysis_region, and atlas_regions>.nii.gz
"""

FINDINGS = "findings.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
LLM_REPORT_STEM = "report_llm"  # .md, .html and .json beside the built-in report
OVERVIEW = "overview.png"
TRANSFORM = "transform_to_mni.tfm"
MNI_DIR = "mni"
SEGMENTATION = "tumor_segmentation"
ANALYSIS_REGION = "analysis_region"  # native space only
ATLAS_REGIONS = "atlas_regions"  # MNI space only
IMAGE_SUFFIX = ".nii.gz"


def heatmap(method: str) -> str:
    return f"heatmap_{method}"


def mask(method: str) -> str:
    return f"mask_{method}"


def image(name: str) -> str:
    """The file name of the image called NAME (heatmap(m), mask(m), SEGMENTATION, ...)."""
    return name + IMAGE_SUFFIX


def llm_reports() -> str:
    """A glob for the LLM report's files."""
    return LLM_REPORT_STEM + ".*"
