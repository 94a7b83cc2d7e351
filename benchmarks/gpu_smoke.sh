#!/usr/bin/env bash
# Check that every `acvm train` model also trains on a CUDA GPU: a few steps each, weights written
# and loadable, the meta saying "cuda". Run on a GPU machine from the repository root:
#   OUT=/tmp/gpu bash benchmarks/gpu_smoke.sh [python]
# (the shipped weights are trained on the CPU; this only checks the GPU path works)
set -u
PY=${1:-python3}
OUT=${OUT:-/tmp/gpu_smoke}
mkdir -p "$OUT"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
status=0
for name in siamfc siamrpn mdnet iounet d3s stark-base stark; do
  start=$(date +%s)
  if PYTHONPATH=. "$PY" -m acvm train "$name" --steps 20 --device cuda --workers 4 --out "$OUT/$name.pt" > "$OUT/$name.log" 2>&1; then
    secs=$(( $(date +%s) - start ))
    "$PY" -c "
import torch, sys
m = torch.load('$OUT/$name.pt', map_location='cpu', weights_only=True)['meta']
ok = m.get('device') == 'cuda' and m.get('steps') == 20
print(f'$name: {\"ok\" if ok else \"WRONG\"} device={m.get(\"device\")} steps={m.get(\"steps\")} final_loss={m.get(\"final_loss\")} wall=${secs}s')
sys.exit(0 if ok else 1)" || status=1
  else
    echo "$name: FAILED"; tail -5 "$OUT/$name.log"; status=1
  fi
done
exit $status
