"""Compare two sets of explain folders (run.sh BEFORE and AFTER): byte-identical files, else whether the NIfTI
voxels and geometry still agree. usage: python compare.py OUT/BEFORE OUT/AFTER"""
import sys
from pathlib import Path
import numpy as np, SimpleITK as sitk
old, new = Path(sys.argv[1]), Path(sys.argv[2])
rows = []
for d in sorted(p for p in new.iterdir() if p.is_dir()):
    o = old / d.name
    if not (o / "findings.json").exists():
        rows.append((d.name, "old missing")); continue
    fo, fn = sorted(x.relative_to(o) for x in o.rglob("*") if x.is_file()), sorted(x.relative_to(d) for x in d.rglob("*") if x.is_file())
    diffs = []
    if fo != fn:
        diffs.append(f"file lists differ: {set(map(str,fo)) ^ set(map(str,fn))}")
    for rel in set(fo) & set(fn):
        a, b = (o / rel).read_bytes(), (d / rel).read_bytes()
        if a == b:
            continue
        if str(rel).endswith(".nii.gz"):
            ia, ib = sitk.ReadImage(str(o / rel)), sitk.ReadImage(str(d / rel))
            same = (np.array_equal(sitk.GetArrayViewFromImage(ia), sitk.GetArrayViewFromImage(ib)) and ia.GetOrigin() == ib.GetOrigin()
                    and ia.GetSpacing() == ib.GetSpacing() and ia.GetDirection() == ib.GetDirection())
            diffs.append(f"{rel}: bytes differ, voxels+geometry {'identical' if same else 'DIFFER'}")
        else:
            diffs.append(f"{rel}: differs")
    n = len(fn)
    rows.append((d.name, f"{n} files; " + ("all byte-identical" if not diffs else "; ".join(diffs))))
for r in rows: print(*r, sep=": ")
