"""Minimal evidence and prototype maps on the shared volumes (issue 20, outcomes 1 and 2), in process:
python docs/dev/explainers_volumes.py [DATA] [--table | --timing] > table.md. Also times the explain + faithfulness
stages of one BraTS run with mincam or mincam-opt alone beside Grad-CAM++ alone (alternated, same session)."""

import sys
import time
from pathlib import Path

from brainxai import pipeline
from brainxai.load import read_input
from brainxai.model import load_model

args = [a for a in sys.argv[1:] if not a.startswith("--")]
part = next((a[2:] for a in sys.argv[1:] if a in ("--table", "--timing")), None)  # one part only
data = Path(args[0] if args else "../shared/data") / "volumes"
gliomas = [data / "brats" / "BraTS-GLI-00001-000-t1c.nii.gz"] + sorted((data / "tcia_progression").glob("PGBM-*/*_Scan_T1.nii.gz"))
healthy = [data / "ixi" / "IXI012-HH-1211_T1.nii.gz"] + sorted((data / "healthy").glob("*.nii.gz"))[:5]
methods = ("mincam", "proto-early", "proto-middle", "proto-late")
model = load_model()


def stage_clock():
    marks = []
    return marks, lambda stage, fraction: marks.append((stage, time.perf_counter()))


def stage_seconds(marks, names):
    out = {}
    for (s, t), (_, t2) in zip(marks, marks[1:]):
        if s in names:
            out[s] = out.get(s, 0.0) + t2 - t
    return out


if part != "timing":
    print("| scan | call (p) | mincam: area % of brain, call from the region alone (p of the call) | mincam Dice vs "
          "segmentation | proto early / middle / late Dice vs segmentation | deletion AUC mincam / early / middle / late "
          "(random) |")
    print("|---|---|---|---|---|---|")
    for path in gliomas + healthy:
        r = pipeline.analyse(*read_input(path), pipeline.Options(methods=methods), model=model)
        f = r.findings
        label, p = f["diagnosis"]["label"], f["diagnosis"]["probabilities"][f["diagnosis"]["label"]]
        by = {e["method"]: e for e in f["explanations"]}
        me = by["mincam"]["minimal_evidence"]
        dice = lambda m: "n/a" if by[m]["dice_vs_segmentation"] is None else f"{by[m]['dice_vs_segmentation']:.2f}"  # noqa
        dels = " / ".join(f"{by[m]['faithfulness']['deletion_auc']:.2f}" for m in methods)
        rand = by["mincam"]["faithfulness"]["random_deletion_auc"]
        print(f"| {(path.parent.name + '/') if 'PGBM' in str(path) else ''}{path.name.split('.')[0]} | {label} ({p:.2f}) | {me['area_percent_of_brain']:.1f} %, {me['label']} "
              f"({me['probabilities'][label]:.2f}) | {dice('mincam')} | {dice('proto-early')} / {dice('proto-middle')} / "
              f"{dice('proto-late')} | {dels} ({rand:.2f}) |", flush=True)

if part != "table":
    print("\nBraTS, stage seconds (explain + faithfulness) and whole analysis, alternated:\n")
    print("| run | methods | explain s | faithfulness s | analysis s | minimal evidence: area % of brain, call alone (p) |")
    print("|---|---|---|---|---|---|")
    image = read_input(gliomas[0])
    for i in range(2):
        for ms in (("gradcam++",), ("mincam",), ("mincam-opt",)):
            marks, tick = stage_clock()
            t0 = time.perf_counter()
            r = pipeline.analyse(*image, pipeline.Options(methods=ms), model=model, progress=tick)
            total = time.perf_counter() - t0
            marks.append(("end", time.perf_counter()))
            s = stage_seconds(marks, {"explain", "faithfulness"})
            me = r.findings["explanations"][0].get("minimal_evidence")
            alone = "" if me is None else (f"{me['area_percent_of_brain']:.1f} %, {me['label']} "
                                           f"({max(me['probabilities'].values()):.2f})")
            print(f"| {i + 1} | {ms[0]} | {s.get('explain', 0):.2f} | {s.get('faithfulness', 0):.2f} | {total:.1f} | "
                  f"{alone} |", flush=True)
