#!/usr/bin/env bash
# The GPU path in one short script: the SCE loss on CUDA (fp32 and autocast) against the CPU,
# a real training run with AMP + channels_last on a CIFAR-format dataset, a SIGTERM mid-run
# and its resume, and the step-throughput benchmark (ResNet-18/CIFAR and ResNet-50/ImageNet
# shapes), the multi-process path on one GPU (NCCL) and a short linear evaluation, each with
# its images/s; the device data path, the end-to-end epoch benchmark and the step options
# (docs/throughput.md). Usage: bash scripts/gpu_check.sh [log dir]   (needs a CUDA GPU; ~12 min)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-/tmp/sce_gpu_check}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Pure-Python dependencies that a bare GPU image may lack, as wheels in .whl/ when present.
if [ -d .whl ] && ! $PY -c "import hydra, submitit, optuna, kornia" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
log() { echo "== $*"; }
{
  log "device"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

  log "loss on CUDA vs CPU"
  $PY - <<'EOF'
import torch
from sce_sweeps.sce import sce_loss
g = torch.Generator().manual_seed(0)
z1, z2, q = (torch.randn(n, 128, generator=g) for n in (256, 256, 4096))
for coeff in (0.0, 0.5, 1.0):
    cpu = sce_loss(z1, z2, q, coeff, 0.1, 0.05).item()
    gpu = sce_loss(z1.cuda(), z2.cuda(), q.cuda(), coeff, 0.1, 0.05).item()
    with torch.autocast("cuda", dtype=torch.float16):
        amp = sce_loss(z1.cuda(), z2.cuda(), q.cuda(), coeff, 0.1, 0.05).float().item()
    print(f"coeff={coeff}: cpu {cpu:.6f} cuda {gpu:.6f} autocast {amp:.6f}")
    assert abs(cpu - gpu) < 1e-4 and abs(cpu - amp) < 5e-2, (cpu, gpu, amp)
print("ok")
EOF

  log "training on CUDA (AMP, channels_last), CIFAR-format data"
  DATA=/tmp/sce_gpu_data RUN=/tmp/sce_gpu_run
  rm -rf "$DATA" "$RUN"
  $PY -c "from sce_sweeps.data.synthetic import write_fake_dataset as w; w('cifar10', '$DATA', num_train=8192, num_test=1024)"
  ARGS=(dataset=cifar10 "dataset.root=$DATA" dataset.train_samples=null dataset.num_workers=8 model=resnet18_cifar
        trainer.epochs=3 trainer.eval_every=1 optim.warmup_epochs=1 tracker=none
        trainer.device=cuda "hydra.run.dir=$RUN")
  $PY -m sce_sweeps "${ARGS[@]}" &
  PID=$!
  for _ in $(seq 600); do [ -f "$RUN/checkpoint.pt" ] || ! kill -0 $PID 2>/dev/null && break; sleep 0.2; done
  sleep 2
  kill -TERM $PID || true
  wait $PID || echo "stopped with status $? (expected after SIGTERM)"
  $PY -c "import torch; s = torch.load('$RUN/checkpoint.pt', weights_only=False); print('checkpoint at epoch', s['epoch'], 'step', s['step_in_epoch'])"
  $PY -m sce_sweeps "${ARGS[@]}"
  $PY - "$RUN" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1] + "/result.json"))
print({k: r[k] for k in ("status", "epochs", "knn_top1", "loss", "wall_time_s")})
assert r["status"] == "completed" and r["epochs"] == 3
EOF

  log "step throughput: ResNet-18 CIFAR stem, 32px, batch 256"
  $PY benchmarks/step_throughput.py --steps 20 --rounds 3 dataset=cifar10 model=resnet18_cifar trainer.device=cuda
  log "step throughput: ResNet-50, 2x224px, batch 128, ImageNet settings"
  $PY benchmarks/step_throughput.py --steps 10 --rounds 3 dataset=imagenet model=resnet50 loss=sce_imagenet aug=two_strong optim=lars trainer.batch_size=128 trainer.device=cuda
  log "step throughput: ResNet-50 multi-crop 2x224 + 6x96, batch 64"
  $PY benchmarks/step_throughput.py --steps 10 --rounds 3 dataset=imagenet model=resnet50 loss=sce_imagenet aug=multi_crop optim=lars trainer.batch_size=64 trainer.device=cuda
  # --- data path and step options (docs/throughput.md) ----------------------------------------
  # The runs above took the device data path (trainer.data_path=auto's choice on CUDA).
  log "CPU data path on CUDA: 1 epoch with DataLoader workers (trainer.data_path=cpu)"
  $PY -m sce_sweeps "${ARGS[@]}" trainer.data_path=cpu trainer.epochs=1 "hydra.run.dir=$RUN-cpu"
  log "epoch throughput: ResNet-18/CIFAR-10 official recipe, CPU DataLoader (8 workers) vs device path"
  $PY benchmarks/epoch_throughput.py --epochs 2 experiment=cifar10 "dataset.root=$DATA" \
    dataset.num_workers=8 trainer.device=cuda
  for OPT in trainer.amp=true trainer.amp=false trainer.amp_dtype=bfloat16 trainer.fused_optimizer=true \
      trainer.channels_last=false; do
    log "step options, official CIFAR-10 recipe: $OPT (trainer.amp=true: the defaults)"
    $PY benchmarks/step_throughput.py --steps 20 --rounds 3 --no-breakdown experiment=cifar10 \
      "dataset.root=$DATA" trainer.device=cuda "$OPT"
  done
  log "step options, official CIFAR-10 recipe: trainer.compile=true (at most 5 minutes)"
  timeout 300 $PY benchmarks/step_throughput.py --steps 20 --rounds 3 --no-breakdown \
    experiment=cifar10 "dataset.root=$DATA" trainer.device=cuda trainer.compile=true \
    || echo "compile: no result within 5 minutes"
  # --- end data path and step options ---------------------------------------------------------
  # --- multi-process path (NCCL) and linear evaluation -------------------------------------
  log "DDP on one GPU: NCCL group of 1 (torchrun), DistributedDataParallel, shuffle BN across ranks"
  RUN_DDP=/tmp/sce_gpu_ddp
  rm -rf "$RUN_DDP"
  $PY -m torch.distributed.run --standalone --nproc_per_node 1 -m sce_sweeps dataset=cifar10 \
    "dataset.root=$DATA" dataset.train_samples=null dataset.num_workers=8 model=resnet18_cifar \
    model.target_bn=shuffle model.target_bn_splits=8 trainer.epochs=2 trainer.eval_every=0 \
    optim.warmup_epochs=1 tracker=none trainer.device=cuda "hydra.run.dir=$RUN_DDP"
  $PY - "$RUN_DDP" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1] + "/result.json"))
print({k: r[k] for k in ("status", "epochs", "knn_top1", "loss", "wall_time_s")})
assert r["status"] == "completed" and r["epochs"] == 2
EOF
  log "linear evaluation on CUDA: 2 epochs, batch 256, of the 3-epoch run above"
  $PY -m sce_sweeps.linear "$RUN" linear.epochs=2 trainer.device=cuda dataset.num_workers=8
  # --- end multi-process path and linear evaluation -------------------------------------------
  log "done"
} 2>&1 | tee "$OUT_DIR/gpu_check.log"
