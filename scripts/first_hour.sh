#!/usr/bin/env bash
# A clinical researcher's first hour, as a script (issue 26): the demo and the CLI examples of
# the README and docs, on the shared data, in a fresh output folder, each output checked (exit
# code, files present, a few numbers sane against an independent reading with nibabel/pandas).
#
#   bash scripts/first_hour.sh OUT_DIR          (OUT_DIR must not exist or be empty)
#
# Environment: PYTHON (default .venv/bin/python, else python3), MEDCNN_DATA (default
# ../shared/data beside the checkout). Runs in about 2-3 minutes on 2 CPU cores.
#
# Covered: make demo (as `medcnn demo`), models list / show, info, measure (+ --image
# intensity statistics), segment, run (cardiac, ED/ES pairs), scripts/acdc_pairs.py + validate
# --pairs (docs/metrics.md), a bad input (one line, exit 2, no output left behind).
# Skipped, and why: `make test` / `medcnn train` (not a first-hour example: hours of CPU);
# `models import` (needs a foreign nnU-Net / MONAI model folder, none in the shared data);
# `convert` of RTSTRUCT / SEG (docs/dicom.md's examples need an RTSTRUCT export, none in the
# shared data; the DICOM round trips are tested in tests/test_dicom_*.py); `run --scheduler`
# (needs a Dask cluster); `run` over all 80 ACDC patients (the docs' glob: 2 patients here for
# time); `--dicom` SEG/SR outputs (tested in tests/test_dicom_outputs.py).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: first_hour.sh OUT_DIR}
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
  echo "first hour: $OUT is not empty; give a fresh output folder" >&2; exit 2
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 )}
DATA=${MEDCNN_DATA:-../shared/data}
if [ ! -d "$DATA/sunnybrook" ] || [ ! -d "$DATA/acdc" ]; then
  echo "first hour: shared data not found at $DATA (set MEDCNN_DATA)" >&2; exit 3
fi
DATA=$(cd "$DATA" && pwd)
export MEDCNN_DATA="$DATA"
medcnn() { "$PY" -m medcnn "$@"; }
n_ok=0; n_fail=0
ok()   { n_ok=$((n_ok + 1)); echo "ok   $*"; }
fail() { n_fail=$((n_fail + 1)); echo "FAIL $*"; }
# check NAME CMD...: CMD's exit status decides
check() { local name=$1; shift; if "$@"; then ok "$name"; else fail "$name"; fi; }
# pycheck NAME CODE: a python assertion on the outputs (OUT, DATA in the environment)
pycheck() { local name=$1 code=$2; if OUT="$OUT" DATA="$DATA" "$PY" -c "$code" >"$OUT/.check.log" 2>&1; then ok "$name"
            else fail "$name: $(tail -1 "$OUT/.check.log")"; fi; }
SECONDS=0

# --- README quick start: make demo ------------------------------------------------------------
medcnn demo --out "$OUT/demo" --no-progress >"$OUT/demo.stdout" 2>"$OUT/demo.stderr"
check "demo exits 0" test $? -eq 0
check "demo wrote report.html, cardiac.csv, report.json" \
  test -s "$OUT/demo/report.html" -a -s "$OUT/demo/cardiac.csv" -a -s "$OUT/demo/report.json"
pycheck "demo: the case count it announces is the count it ran, one line per case" '
import os, re, json
err = open(os.environ["OUT"] + "/demo.stderr").read(); out = open(os.environ["OUT"] + "/demo.stdout").read()
n = int(re.search(r"on (\d+) case\(s\)", err).group(1))
rep = json.load(open(os.environ["OUT"] + "/demo/report.json"))
assert n == len(rep["cases"]) == rep["counts"]["total"], (n, len(rep["cases"]))
assert f"({n} case(s))" in out
assert len([l for l in out.splitlines() if re.match(r"  \S+\s+EDV", l)]) == n
assert ("training-set regression check" in out and "not a validation" in out) or ("selection figure" in out and "not an external test" in out), "the demo must say what kind of figure it prints"
assert ("RV" in rep["title"]) == any(c.get("cardiac", {}).get("rv_ef_percent") is not None for c in rep["cases"])'
pycheck "demo: EF and volumes physically sane, EF = (EDV - ESV) / EDV" '
import os, pandas as pd
df = pd.read_csv(os.environ["OUT"] + "/demo/cardiac.csv")
assert len(df) == 5, len(df)
assert df.lv_ef_percent.between(5, 85).all() and (df.lv_edv_ml > df.lv_esv_ml).all() and (df.lv_esv_ml > 0).all()
ef = 100 * (df.lv_edv_ml - df.lv_esv_ml) / df.lv_edv_ml
assert (abs(ef - df.lv_ef_percent) < 0.05).all()'

# --- models list / show -----------------------------------------------------------------------
medcnn models list --no-verify >"$OUT/models_list.txt"
check "models list exits 0" test $? -eq 0
medcnn models show cardiac-cine-mri --no-verify >"$OUT/models_show.txt"
check "models show exits 0" test $? -eq 0
pycheck "models list: one line per model; show: the card with licence and figure kinds" '
import os
ls = open(os.environ["OUT"] + "/models_list.txt").read().splitlines()
card = open(os.environ["OUT"] + "/models_show.txt").read()
models = [l for l in ls if l.strip() and not l.startswith("(")]
assert any(l.startswith("cardiac-cine-mri ") for l in models) and len(models) >= 1
assert "licence" in card and "non-commercial" in card
assert any(k in card for k in (": selection (", ": cross-validation (", ": training-set regression check (", ": test (")), card
assert card.strip() != "\n".join(ls).strip()'

# --- info, measure ----------------------------------------------------------------------------
A=$DATA/acdc
medcnn info "$A/patient001_ED.nii.gz" >"$OUT/info.txt"
check "info exits 0" test $? -eq 0
pycheck "info: shape and spacing as nibabel reads them" '
import os, nibabel as nib
txt = open(os.environ["OUT"] + "/info.txt").read()
img = nib.load(os.environ["DATA"] + "/acdc/patient001_ED.nii.gz")
assert f"shape              {list(img.shape[:3])}" in txt, txt[:300]
assert f"spacing_mm         {[float(z) for z in img.header.get_zooms()[:3]]}" in txt, txt[:300]'
medcnn measure "$A/patient001_ED_gt.nii.gz" --image "$A/patient001_ED.nii.gz" --out "$OUT/measure.csv" \
  >"$OUT/measure.stdout" 2>&1
check "measure exits 0" test $? -eq 0
pycheck "measure: label volumes = voxel count x voxel volume (nibabel), intensity mean inside label 1" '
import os, numpy as np, nibabel as nib, pandas as pd
df = pd.read_csv(os.environ["OUT"] + "/measure.csv")
g = nib.load(os.environ["DATA"] + "/acdc/patient001_ED_gt.nii.gz"); lab = np.asarray(g.dataobj).round().astype(int)
im = np.asarray(nib.load(os.environ["DATA"] + "/acdc/patient001_ED.nii.gz").dataobj, dtype=np.float64)
vml = float(np.prod(g.header.get_zooms()[:3])) / 1000
row = df[df.label.astype(str) == "1"].iloc[0]
assert abs(row.volume_ml - (lab == 1).sum() * vml) < 1e-3 * row.volume_ml, row.volume_ml
mean_col = [c for c in df.columns if c.startswith("intensity_mean")][0]
assert abs(row[mean_col] - im[lab == 1].mean()) < 1e-3 * abs(im[lab == 1].mean()) + 1e-6'

# --- segment / run / validate (docs/metrics.md, on 2 ACDC patients) ---------------------------
medcnn segment "$A/patient001_ED.nii.gz" --model cardiac-cine-mri --out "$OUT/segment" >"$OUT/segment.stdout" 2>&1
check "segment exits 0" test $? -eq 0
pycheck "segment: label map on the input grid (nibabel affine and shape), LV found" '
import os, numpy as np, nibabel as nib
src = nib.load(os.environ["DATA"] + "/acdc/patient001_ED.nii.gz")
lab = nib.load(os.environ["OUT"] + "/segment/patient001_ED_labels.nii.gz")
assert lab.shape == src.shape and np.allclose(lab.affine, src.affine, atol=1e-3)
a = np.asarray(lab.dataobj); assert set(np.unique(a)) <= {0, 1, 2, 3} and (a == 1).sum() > 100'
medcnn run "$A"/patient00[14]_E[DS].nii.gz --model cardiac-cine-mri --out "$OUT/acdc" --no-progress \
  >"$OUT/run.stdout" 2>&1
check "run exits 0" test $? -eq 0
check "run wrote volumes.csv, report.html and one label map per scan" \
  test -s "$OUT/acdc/volumes.csv" -a -s "$OUT/acdc/report.html" \
  -a -s "$OUT/acdc/cases/patient004/patient004_ES_labels.nii.gz"
"$PY" scripts/acdc_pairs.py "$A/dataset.json" --pred-dir "$OUT/acdc" \
  --pred-pattern 'cases/{subject}/{stem}_labels.nii.gz' --out "$OUT/acdc/pairs_all.csv" >"$OUT/pairs.stdout" 2>&1
check "acdc_pairs.py exits 0" test $? -eq 0
OUT="$OUT" "$PY" -c '
import os, pandas as pd
o = os.environ["OUT"] + "/acdc/"; df = pd.read_csv(o + "pairs_all.csv")
df[df.pred.map(lambda p: os.path.isfile(p if os.path.isabs(p) else o + p))].to_csv(o + "pairs.csv", index=False)'
medcnn validate --pairs "$OUT/acdc/pairs.csv" --out "$OUT/acdc/validation" >"$OUT/validate.stdout" 2>&1
check "validate exits 0" test $? -eq 0
pycheck "validate: 4 cases; LV Dice in metrics.csv = Dice recomputed with nibabel from the label maps" '
import os, numpy as np, nibabel as nib, pandas as pd
o = os.environ["OUT"]; d = os.environ["DATA"]
m = pd.read_csv(o + "/acdc/validation/metrics.csv")
assert m.case_id.nunique() == 4, m.case_id.unique()
row = m[(m.case_id.astype(str).str.contains("patient004_ES")) & (m.label.astype(str) == "1")].iloc[0]
p = np.asarray(nib.load(o + "/acdc/cases/patient004/patient004_ES_labels.nii.gz").dataobj).round() == 1
r = np.asarray(nib.load(d + "/acdc/patient004_ES_gt.nii.gz").dataobj).round() == 1
dice = 2 * (p & r).sum() / (p.sum() + r.sum())
assert abs(row.dice - dice) < 1e-6 and 0.7 < dice <= 1, (row.dice, dice)'

# --- a bad input: one error line naming the file, exit 2, no output written -------------------
printf 'not a scan' >"$OUT/broken.nii.gz"
medcnn segment "$OUT/broken.nii.gz" --model cardiac-cine-mri --out "$OUT/bad" >"$OUT/bad.stdout" 2>"$OUT/bad.stderr"
rc=$?
check "bad input: exit 2" test $rc -eq 2
check "bad input: one error line, naming the file and what was expected" \
  bash -c "[ \$(grep -c 'error:' '$OUT/bad.stderr') -eq 1 ] && grep 'error:' '$OUT/bad.stderr' | grep -q 'broken.nii.gz: expected'"
check "bad input: no output file written" bash -c "[ -z \"\$(find '$OUT/bad' -type f 2>/dev/null)\" ]"
if [ -d "$OUT/bad" ]; then echo "note: a failed segment still leaves an empty output folder ($OUT/bad)"; fi

echo "first hour: $n_ok checks passed, $n_fail failed, ${SECONDS}s (outputs in $OUT)"
[ "$n_fail" -eq 0 ]
