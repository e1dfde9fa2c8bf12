#!/bin/bash
# Explain every shared volume (and the demo) with the brainxai package in LOGICDIR, into OUT/TAG/<name>/.
# Registration runs on one thread: with two, Mattes-MI registration is not bit-reproducible run to run.
# usage: run.sh TAG LOGICDIR [OUT=/tmp/same_outputs] [DATA=../shared/data]
set -u
tag=$1; logic=$(realpath "$2"); out=${3:-/tmp/same_outputs}; data=$(realpath "${4:-../shared/data}")
D=$data/volumes
export ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 PYTHONPATH=$logic
mkdir -p "$out"
for f in $D/brats/*.nii.gz $D/healthy/*.nii.gz $D/ixi/*.nii.gz $D/tcia_progression/PGBM-0*/*Scan_T1.nii.gz; do
  name=$(echo "${f#$D/}" | tr '/' '_' | sed 's/.nii.gz//')
  [ -f "$out/$tag/$name/findings.json" ] && continue
  ( cd /tmp && python -m brainxai explain "$f" --methods gradcam,gradcam++ --out "$out/$tag/$name" --progress json \
      > "$out/$tag.$name.log" 2>&1 ) || echo "FAIL $name"
done
[ -f "$out/$tag/demo/findings.json" ] || ( cd /tmp && python -m brainxai explain --demo --out "$out/$tag/demo" --progress json > "$out/$tag.demo.log" 2>&1 ) || echo "FAIL demo"
[ -f "$out/$tag/brats_all_methods/findings.json" ] || ( cd /tmp && python -m brainxai explain $D/brats/BraTS-GLI-00001-000-t1c.nii.gz \
    --out "$out/$tag/brats_all_methods" --progress json > "$out/$tag.brats_all_methods.log" 2>&1 ) || echo "FAIL brats_all_methods"
echo "done $tag"
