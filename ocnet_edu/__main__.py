"""Command line: ``python -m ocnet_edu {train,evaluate,predict} ...`` (also ``ocnet-edu`` once installed).

Examples::

    python -m ocnet_edu train --config configs/synthetic.yaml
    python -m ocnet_edu train --config configs/synthetic.yaml --resume schedule.max_iters=40
    python -m ocnet_edu train --config configs/synthetic.yaml --overwrite   # replace the run in out_dir
    torchrun --nproc_per_node=8 -m ocnet_edu train --config configs/cityscapes/table2_base_oc_isa.yaml
    python -m ocnet_edu evaluate --config runs/synthetic/config.yaml --checkpoint runs/synthetic/final.pt --flip
    python -m ocnet_edu predict --config runs/paper/x/config.yaml --checkpoint runs/paper/x/final.pt --split test --out preds

Trailing ``key.sub=value`` arguments override the config (checked like the file itself).
Every number on the command line is checked too (a test scale must be finite and > 0). A bad
config, flag, checkpoint or data file ends the command with a one-line message naming it (exit
status 2 for the command line and the config, 1 for the rest) instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (argparse names the flag in the error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors that are about the user's input or environment, reported as one line."""
    from ocnet_edu.data import DatasetError
    from ocnet_edu.engine.checkpoint import CheckpointError
    from ocnet_edu.engine.distributed import DistributedError
    from ocnet_edu.engine.run_dir import RunDirectoryError, WriteError

    return (CheckpointError, DatasetError, DistributedError, RunDirectoryError, WriteError, FileNotFoundError,
            ValueError)


def _add_inference_options(command: argparse.ArgumentParser) -> None:
    """The flags ``evaluate`` and ``predict`` share: config, checkpoint, test scales, flip, sliding window."""
    command.add_argument("--config", required=True)
    command.add_argument("--checkpoint", required=True)
    command.add_argument("--scales", type=positive_float, nargs="+", default=[1.0],
                         help="test scales (finite, > 0), e.g. 0.75 1 1.25 1.5 1.75")
    command.add_argument("--flip", action="store_true", help="add the horizontally flipped prediction")
    command.add_argument("--sliding", action="store_true", help="sliding-window inference with the crop size")


def _parser() -> argparse.ArgumentParser:
    """The command line: ``train``, ``evaluate`` and ``predict``, each taking ``key.sub=value`` overrides."""
    parser = argparse.ArgumentParser(prog="python -m ocnet_edu", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model from a YAML config")
    train.add_argument("--config", required=True, help="YAML config (see configs/)")
    train.add_argument("--resume", action="store_true", help="continue from <out_dir>/checkpoint.pt")
    train.add_argument("--overwrite", action="store_true",
                       help="start from scratch even if runtime.out_dir holds a run (its files are deleted)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    evaluate = commands.add_parser("evaluate", help="score a checkpoint on the validation split")
    _add_inference_options(evaluate)
    evaluate.add_argument("--split", default=None, help="split to score (default: data.val_split)")
    evaluate.add_argument("--out", default=None, help="write the scores as JSON here")

    predict = commands.add_parser("predict", help="write predicted label maps as PNG files (e.g. for a test server)")
    _add_inference_options(predict)
    predict.add_argument("--out", required=True, help="folder for <image stem>.png")
    predict.add_argument("--split", default=None, help="split to predict (default: data.val_split), e.g. test")
    predict.add_argument("--train-ids", action="store_true",
                         help="write train ids 0..K-1 instead of the dataset's raw label ids")
    for command in (train, evaluate, predict):
        command.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), load the config and run the command; 0 on success.

    A bad flag, config key or value is a usage error (exit status 2, with the message); a bad
    checkpoint, data file, run directory, a full disk or a process that stopped answering is
    reported in one line naming it (exit status 1). Rank 0 prints the training summary or the
    scores (without the per-class IoU) as JSON; every process prints how many predictions it wrote.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    from ocnet_edu.config import load_config

    try:
        cfg = load_config(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    try:
        report = _run_command(args, cfg)
    except _user_errors() as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 1
    if report is not None:
        print(report)
    return 0


def _run_command(args: argparse.Namespace, cfg) -> str | None:
    """Run ``args.command`` on ``cfg``; the text this process prints (``None``: nothing)."""
    from ocnet_edu.engine import distributed

    if args.command == "train":
        from ocnet_edu.engine.train import train as run_training

        report = json.dumps(run_training(cfg, resume=args.resume, progress=not args.no_progress,
                                         overwrite=args.overwrite))
    elif args.command == "predict":
        from ocnet_edu.engine.predict import predict as run_prediction

        written = run_prediction(cfg, args.checkpoint, args.out, args.split, args.scales, args.flip, args.sliding,
                                 args.train_ids)
        return f"wrote {len(written)} prediction(s) to {args.out}"  # each process writes (and counts) its share
    else:
        from ocnet_edu.engine.evaluate import evaluate as run_evaluation

        result = run_evaluation(cfg, args.checkpoint, args.scales, args.flip, args.sliding, args.split, args.out)
        report = json.dumps({k: v for k, v in result.items() if k != "iou"}, indent=2)
    return report if distributed.is_main() else None


if __name__ == "__main__":
    sys.exit(main())
