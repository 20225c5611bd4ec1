"""``python -m sce_sweeps.cli linear RUN_DIR [--random-init] [OVERRIDES...]``: linear evaluation
of a finished (or stopped) pretraining run, alone.

The run's config and linear protocol come from its checkpoint; OVERRIDES choose another
(``linear=cifar``, ``linear.epochs=10``, ``trainer.device=cuda``...). The stage resumes from
``<run dir>/linear/checkpoint.pt``, tracks into the run's Aim run and adds ``linear_top1``/
``linear_top5`` to its result.json (``--random-init``: the untrained network's, ``*_init``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from sce_sweeps.app import CONF_DIR
from sce_sweeps.config import ConfigError, validate
from sce_sweeps.engine.linear import run_linear
from sce_sweeps.runtime import record
from sce_sweeps.runtime.tracking import make_tracker


def run_dir_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """The run's config from its checkpoint (newer keys: their defaults) with the overrides
    applied: its own linear protocol unless an override chooses another (``linear=cifar``)."""
    state = record.load_checkpoint(run_dir / record.CHECKPOINT)
    if state is None:
        raise FileNotFoundError(f"{run_dir} holds no {record.CHECKPOINT}: nothing to evaluate")
    choice = [o for o in overrides if o.split("=")[0].lstrip("+~") == "linear"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        defaults = compose("config", overrides=choice)  # keys newer than the run get defaults
    OmegaConf.set_struct(defaults, False)
    own = OmegaConf.create(state["config"])
    if choice:
        own.pop("linear", None)
    rest = OmegaConf.from_dotlist([o.lstrip("+") for o in overrides if o not in choice])
    return OmegaConf.merge(defaults, own, rest)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sce_sweeps.cli linear", description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--random-init", action="store_true", help="the untrained network")
    parser.add_argument("overrides", nargs="*", help="e.g. linear=imagenet linear.epochs=10")
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = run_dir_config(args.run_dir, args.overrides)
        validate(cfg)
    except (FileNotFoundError, ConfigError, record.RunFileError) as e:
        print(f"sce_sweeps.cli linear: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    result = record.try_read_result(args.run_dir) or {}
    state = record.load_checkpoint(args.run_dir / record.CHECKPOINT)
    info = {k: v for k, v in result.items() if k in ("sweep_name", "job_num", "overrides")}
    tracker = make_tracker(cfg, args.run_dir, state.get("tracker_run_hash"), info)
    status = record.RunState.FAILED
    try:
        metrics = run_linear(cfg, args.run_dir, tracker, random_init=args.random_init)
        status = record.RunState(result.get("status", record.RunState.COMPLETED))
    finally:
        tracker.close(status.value)
    if result:
        record.write_result(args.run_dir, {**result, **metrics})
    suffix = "_init" if args.random_init else ""
    top1, speed = metrics[f"linear_top1{suffix}"], metrics[f"linear_images_per_s{suffix}"]
    print(f"linear top-1 {top1:.2f}% ({speed:.0f} img/s) [{args.run_dir}]")
