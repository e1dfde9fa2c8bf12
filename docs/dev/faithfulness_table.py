"""Per-scan counterfactual and deletion/insertion from explain folders (e.g. docs/dev/same_outputs/run.sh TAG
BrainXAI/Logic OUT): python docs/dev/faithfulness_table.py OUT/TAG > table.md"""
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
rows = []
for d in sorted(root.iterdir()):
    f = d / "findings.json"
    if not f.exists():
        continue
    F = json.loads(f.read_text())
    label = F["diagnosis"]["label"]; p = F["diagnosis"]["probabilities"][label]
    kind = "glioma" if ("brats" in d.name or "PGBM" in d.name) else "demo" if d.name == "demo" else "healthy"
    for e in F["explanations"]:
        cf, fa = e["counterfactual"], e["faithfulness"]
        rows.append((kind, d.name, label, p, e["method"], cf["label"], cf["probabilities"][label], fa["deletion_auc"], fa["random_deletion_auc"], fa["insertion_auc"], fa["random_insertion_auc"]))
print("| scan | call (p) | method | without the region: call (p of the original call) | deletion AUC (random) | insertion AUC (random) |")
print("|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r[1]} | {r[2]} ({r[3]:.2f}) | {r[4]} | {r[5]} ({r[6]:.2f}) | {r[7]:.2f} ({r[8]:.2f}) | {r[9]:.2f} ({r[10]:.2f}) |")
import collections
agg = collections.defaultdict(list)
for r in rows:
    agg[(r[0], r[4])].append(r)
print()
print("| group | method | scans | call changed | mean drop of the call's p | deletion beats random | insertion beats random | both |")
print("|---|---|---|---|---|---|---|---|")
for (kind, m), rs in sorted(agg.items()):
    n = len(rs)
    changed = sum(r[5] != r[2] for r in rs)
    drop = sum(r[3] - r[6] for r in rs) / n
    dl = sum(r[7] < r[8] for r in rs); il = sum(r[9] > r[10] for r in rs); both = sum(r[7] < r[8] and r[9] > r[10] for r in rs)
    print(f"| {kind} | {m} | {n} | {changed}/{n} | {drop:+.3f} | {dl}/{n} | {il}/{n} | {both}/{n} |")
