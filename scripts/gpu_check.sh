#!/usr/bin/env bash
# Acceptance test of a new GPU machine for sce_sweeps: every path that runs only on CUDA (or only
# with several processes) runs once, each step prints one PASS / FAIL / SKIP line (with its
# images/s where it measures one), then a summary; the exit status is non-zero on any FAIL.
# Sized for under 8 minutes on one GPU (not yet timed on one). The steps (docs/throughput.md lists which code each one runs):
#
#   loss        the SCE loss on CUDA, fp32 and fp16 autocast, against the CPU (CUDA only)
#   demo        the demo sweep (+sweep=demo: 3 jobs through the local launcher), shortened,
#               tracker=none, with the linear probe and kNN on the device
#   cifar_cpu   experiment=cifar10 for a few hundred steps on the CPU data path (PIL in
#               DataLoader workers, the official pipeline), images/s
#   cifar_dev   the same on the device data path (Kornia on whole batches), images/s
#   linear      python -m sce_sweeps.cli linear RUN_DIR (the standalone linear stage), 2 epochs
#   step_*      benchmarks/step_throughput.py: the plain step (fp32, contiguous, foreach SGD,
#               eager), then AMP bf16, AMP fp16 (the default), channels_last, fused SGD and
#               torch.compile, each with its images/s against the plain step (CUDA only)
#   ddp         2 processes sharing the device (gloo) through the DDP path: torchrun,
#               DistributedDataParallel, shuffle BN across ranks, kNN evaluation
#   resume      SIGTERM in the middle of a run, then the same command: it resumes and completes
#
# Usage:
#   PYTHON=python3 bash scripts/gpu_check.sh [work dir]           # on the GPU machine
#   GPU_CHECK_DEVICE=cpu PYTHON=.venv/bin/python bash scripts/gpu_check.sh   # dry run here:
#       tiny sizes on the CPU, every step but the CUDA-only ones (SKIP), a few minutes
#   GPU_CHECK_STEPS="cifar_cpu linear" ...   # only these steps (linear needs cifar_cpu's run)
#
# The data are tiny CIFAR-10 / Fashion-MNIST files in the real formats, written by
# tests/synthetic.py (the machine needs no dataset and no network). A bare GPU image
# with Python 3.12, torch and torchvision lacks the other dependencies: the script installs
# the cp312 wheels in .whl/ (into <work dir>/site, on PYTHONPATH) when an import fails.
# Fill .whl/ on a machine with network access with `bash scripts/gpu_wheels.sh`, which runs,
# for each line NAME==VERSION of scripts/gpu_wheels.txt:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl NAME==VERSION
# (and `pip wheel --no-deps -w .whl NAME==VERSION` for antlr4-python3-runtime 4.9.3, published
# only as a source archive).
#
# Last dry run on the CPU (2 shared cores, load ~10): 7 PASS, 6 SKIP (CUDA only) in 375 s.
set -uo pipefail
cd "$(dirname "$0")/.."
DEV=${GPU_CHECK_DEVICE:-cuda}
WORK=${1:-${OUT:-/tmp/sce_gpu_check}}
PY=${PYTHON:-python3}
rm -rf "$WORK" && mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export SCE_SWEEPS_CACHE="$WORK/cache"
MODULES="hydra, omegaconf, yaml, submitit, cloudpickle, optuna, kornia"
if ! $PY -c "import $MODULES" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:$WORK/site"
  fi
  $PY -c "import $MODULES" || { echo "FAIL setup: missing dependencies (bash scripts/gpu_wheels.sh fills .whl/)"; exit 1; }
fi

if [ "$DEV" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  $PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())" \
    || { echo "FAIL setup: torch sees no CUDA device (GPU_CHECK_DEVICE=cpu for the dry run)"; exit 1; }
  WORKERS=8 FM_TRAIN=5000 FM_TEST=1000 CIFAR_TRAIN=25600 CIFAR_TEST=1000
  DEMO=(trainer.epochs=2 dataset.train_samples=null dataset.test_samples=null)
  # 100 steps of 256 a epoch, 3 epochs: 300 steps, no evaluation (throughput only)
  EPOCHS=3 SCALE=1
  CIFAR=(trainer.epochs=$EPOCHS optim.warmup_epochs=1 trainer.eval_every=0
         trainer.eval_random_init=false)
  LINEAR=(linear.epochs=2)
  STEP=(--steps 20 --rounds 2 --no-breakdown experiment=cifar10)
  DDP=(dataset=cifar10 model=resnet18_cifar trainer.batch_size=256 trainer.epochs=2
       trainer.max_steps_per_epoch=40)
else
  WORKERS=2 FM_TRAIN=512 FM_TEST=256 CIFAR_TRAIN=512 CIFAR_TEST=128
  TINY=(model=resnet18_tiny loss.queue_size=128 trainer.batch_size=64 trainer.num_threads=1)
  DEMO=("${TINY[@]}" trainer.epochs=1 dataset.train_samples=null dataset.test_samples=null
        hydra.launcher.max_parallel=1)
  EPOCHS=3 SCALE=4  # a shared CPU: longer time limits
  CIFAR=("${TINY[@]}" trainer.epochs=$EPOCHS optim.warmup_epochs=1 trainer.max_steps_per_epoch=4
         trainer.eval_every=0 trainer.eval_random_init=false)
  LINEAR=(linear.epochs=2 linear.batch_size=64 linear.max_steps_per_epoch=3)
  STEP=(--steps 2 --rounds 1 --no-breakdown experiment=cifar10 "${TINY[@]}")
  DDP=(dataset=cifar10 "${TINY[@]}" trainer.epochs=2 trainer.max_steps_per_epoch=3)
fi
COMMON=(tracker=none "trainer.device=$DEV" "dataset.num_workers=$WORKERS")

PASSED=0 FAILED=0 SKIPPED=0 FAILURES=""
# step NAME TIMEOUT_S FUNCTION: runs FUNCTION with its output in <work dir>/NAME.log; the
# function may write a one-line note (a rate) to <work dir>/NAME.note.
step() {
  local name=$1 limit=$(($2 * SCALE)) fn=$3 start=$SECONDS status
  [ -z "${GPU_CHECK_STEPS:-}" ] || [[ " $GPU_CHECK_STEPS " == *" $name "* ]] || return 0
  if timeout --kill-after=10 "$limit" bash -c "set -o pipefail; $(declare -f); $(declare -p PY DEV WORK WORKERS EPOCHS DEMO CIFAR LINEAR STEP DDP COMMON); $fn" >"$WORK/$name.log" 2>&1; then
    status=PASS PASSED=$((PASSED + 1))
  else
    status=FAIL FAILED=$((FAILED + 1)) FAILURES="$FAILURES $name"
  fi
  printf '%s %-14s %4d s  %s\n' "$status" "$name" $((SECONDS - start)) "$(cat "$WORK/$name.note" 2>/dev/null)"
  [ "$status" = PASS ] || tail -5 "$WORK/$name.log" | sed 's/^/    | /'
}
skip() { SKIPPED=$((SKIPPED + 1)); printf 'SKIP %-14s        %s\n' "$1" "$2"; }
# ok PYTHON-EXPRESSION: fails the step unless the expression (over r, the result.json of the
# run dir $1) is true; prints the result's main keys.
ok() {
  $PY - "$@" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1] + "/result.json"))
print({k: r.get(k) for k in ("status", "epochs", "knn_top1", "probe_top1", "linear_top1", "wall_time_s")})
assert eval(sys.argv[2], {"r": r}), sys.argv[2]
EOF
}
# rate LOG: the images/s of the last training epoch printed in LOG
rate() { grep -o '[0-9.]* img/s' "$1" | tail -1; }

$PY -c "
from tests.synthetic import write_fake_dataset as w
w('fashion_mnist', '$WORK/fmnist', $FM_TRAIN, $FM_TEST)
w('cifar10', '$WORK/cifar', $CIFAR_TRAIN, $CIFAR_TEST)" || { echo "FAIL setup: data"; exit 1; }

loss() {  # the SCE loss on the device, in fp32 and under autocast, against the CPU's
  $PY - <<'PYEOF'
import torch
from sce_sweeps.sce import sce_loss
g = torch.Generator().manual_seed(0)
z1, z2, q = (torch.randn(n, 128, generator=g) for n in (256, 256, 4096))
for coeff in (0.0, 0.5, 1.0):
    cpu = sce_loss(z1, z2, q, coeff, 0.1, 0.05).item()
    dev = sce_loss(z1.cuda(), z2.cuda(), q.cuda(), coeff, 0.1, 0.05).item()
    with torch.autocast("cuda", dtype=torch.float16):
        amp = sce_loss(z1.cuda(), z2.cuda(), q.cuda(), coeff, 0.1, 0.05).float().item()
    print(f"coeff={coeff}: cpu {cpu:.6f} cuda {dev:.6f} autocast {amp:.6f}")
    assert abs(cpu - dev) < 1e-4 and abs(cpu - amp) < 5e-2, (cpu, dev, amp)
PYEOF
}
demo() {
  $PY -m sce_sweeps -m +sweep=demo "${COMMON[@]}" "dataset.root=$WORK/fmnist" "${DEMO[@]}" \
    "hydra.sweep.dir=$WORK/demo"
  for job in 0 1 2; do
    ok "$WORK/demo/$job" 'r["status"] == "completed" and r["probe_top1"] > 0 and r["knn_top1"] > 0' || return 1
  done
  echo "3 jobs, probe top-1 $($PY -c "import json; print(', '.join('%.1f' % json.load(open('$WORK/demo/%d/result.json' % j))['probe_top1'] for j in range(3)))")" >"$WORK/demo.note"
}
cifar() {  # cifar PATH
  local run="$WORK/cifar_$1"
  $PY -m sce_sweeps experiment=cifar10 "${COMMON[@]}" "dataset.root=$WORK/cifar" "${CIFAR[@]}" \
    "trainer.data_path=$1" "hydra.run.dir=$run" 2>&1 | tee "$run.log"
  ok "$run" 'r["status"] == "completed"' || return 1
  echo "$(rate "$run.log") (last epoch)" >"$WORK/cifar_$1.note"
}
cifar_cpu() { cifar cpu; }
cifar_device() { cifar device; }
linear() {
  $PY -m sce_sweeps.cli linear "$WORK/cifar_cpu" "${LINEAR[@]}" "trainer.device=$DEV" \
    "dataset.num_workers=$WORKERS" | tee "$WORK/linear.out"
  ok "$WORK/cifar_cpu" 'r["linear_top1"] >= 0 and "linear_top1_best" in r' || return 1
  grep -o '[0-9.]* img/s' "$WORK/linear.out" >"$WORK/linear.note"
}
step_bench() {  # step_bench NAME OVERRIDES...: full SCE step images/s, against the plain one
  local name=$1
  shift
  $PY benchmarks/step_throughput.py "${STEP[@]}" "dataset.root=$WORK/cifar" "trainer.device=$DEV" \
    trainer.amp=false trainer.channels_last=false "$@" | tee "$WORK/$name.out"
  local full plain=""
  full=$(awk '/full SCE step/ {print $(NF-1)}' "$WORK/$name.out")
  [ -n "$full" ] || return 1
  [ "$name" = step_plain ] || plain=$(awk '/full SCE step/ {print $(NF-1)}' "$WORK/step_plain.out")
  echo "$full images/s${plain:+ (plain step: $plain, x$($PY -c "print(round($full / $plain, 2))"))}" >"$WORK/$name.note"
}
step_plain() { step_bench step_plain; }
step_bf16() { step_bench step_bf16 trainer.amp=true trainer.amp_dtype=bfloat16; }
step_fp16() { step_bench step_fp16 trainer.amp=true; }
step_nhwc() { step_bench step_nhwc trainer.channels_last=true; }
step_fused() { step_bench step_fused trainer.fused_optimizer=true; }
step_compile() { step_bench step_compile trainer.compile=true; }
ddp() {
  SCE_SWEEPS_DIST_BACKEND=gloo $PY -m torch.distributed.run --standalone --nproc_per_node 2 \
    -m sce_sweeps "${COMMON[@]}" "dataset.root=$WORK/cifar" "${DDP[@]}" trainer.devices=2 \
    model.target_bn=shuffle model.target_bn_splits=8 trainer.eval_every=1 \
    trainer.data_path=cpu "hydra.run.dir=$WORK/ddp" 2>&1 | tee "$WORK/ddp.out"
  ok "$WORK/ddp" 'r["status"] == "completed" and r["epochs"] == 2 and r["knn_top1"] > 0' || return 1
  echo "2 ranks, $(rate "$WORK/ddp.out") (last epoch)" >"$WORK/ddp.note"
}
resume() {
  local run="$WORK/resume"
  local args=(experiment=cifar10 "${COMMON[@]}" "dataset.root=$WORK/cifar" "${CIFAR[@]}"
              trainer.checkpoint_every=1 "hydra.run.dir=$run")
  $PY -m sce_sweeps "${args[@]}" &
  local pid=$! status
  for _ in $(seq 1500); do  # the first checkpoint (end of epoch 1), then SIGTERM
    { [ -f "$run/checkpoint.pt" ] || ! kill -0 $pid 2>/dev/null; } && break
    sleep 0.2
  done
  kill -TERM $pid
  wait $pid
  status=$?
  echo "stopped with status $status"
  [ "$status" != 0 ] || { echo "the run ended before its stop signal"; return 1; }
  $PY -c "import torch; s = torch.load('$run/checkpoint.pt', weights_only=False); print('checkpoint at epoch', s['epoch'], 'step', s['step_in_epoch']); assert s['epoch'] < $EPOCHS"
  $PY -m sce_sweeps "${args[@]}"
  ok "$run" "r['status'] == 'completed' and r['epochs'] == $EPOCHS" || return 1
  echo "stopped (status $status), resumed, completed" >"$WORK/resume.note"
}

echo "sce_sweeps GPU check on $DEV, work dir $WORK"
if [ "$DEV" = cuda ]; then step loss 60 loss; else skip loss "CUDA only"; fi
step demo 150 demo
step cifar_cpu 90 cifar_cpu
step cifar_device 90 cifar_device
step linear 60 linear
step step_plain 40 step_plain
if [ "$DEV" = cuda ]; then
  step step_bf16 40 step_bf16
  step step_fp16 40 step_fp16
  step step_nhwc 40 step_nhwc
  step step_fused 40 step_fused
  step step_compile 150 step_compile
else
  for s in step_bf16 step_fp16 step_nhwc step_fused step_compile; do skip $s "CUDA only"; done
fi
step ddp 90 ddp
step resume 90 resume
echo "summary: $PASSED passed, $FAILED failed, $SKIPPED skipped on $DEV in $SECONDS s (logs: $WORK)${FAILURES:+; failed:$FAILURES}"
[ "$FAILED" = 0 ]
