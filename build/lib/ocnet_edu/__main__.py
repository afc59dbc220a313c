"""Command line: ``python -m ocnet_edu {train,evaluate,predict} ...`` (also ``ocnet-edu`` once installed).

Examples::

    python -m ocnet_edu train --config configs/synthetic.yaml
    python -m ocnet_edu train --config configs/synthetic.yaml --resume schedule.max_iters=40
    torchrun --nproc_per_node=8 -m ocnet_edu train --config configs/cityscapes/table2_base_oc_isa.yaml
    python -m ocnet_edu evaluate --config runs/synthetic/config.yaml --checkpoint runs/synthetic/final.pt --flip
    python -m ocnet_edu predict --config runs/paper/x/config.yaml --checkpoint runs/paper/x/final.pt --split test --out preds

Trailing ``key.sub=value`` arguments override the config (checked like the file itself).
"""

from __future__ import annotations

import argparse
import json
import sys


def _add_inference_options(command: argparse.ArgumentParser) -> None:
    """The flags ``evaluate`` and ``predict`` share: config, checkpoint, test scales, flip, sliding window."""
    command.add_argument("--config", required=True)
    command.add_argument("--checkpoint", required=True)
    command.add_argument("--scales", type=float, nargs="+", default=[1.0], help="test scales, e.g. 0.75 1 1.25 1.5 1.75")
    command.add_argument("--flip", action="store_true", help="add the horizontally flipped prediction")
    command.add_argument("--sliding", action="store_true", help="sliding-window inference with the crop size")


def _parser() -> argparse.ArgumentParser:
    """The command line: ``train``, ``evaluate`` and ``predict``, each taking ``key.sub=value`` overrides."""
    parser = argparse.ArgumentParser(prog="python -m ocnet_edu", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model from a YAML config")
    train.add_argument("--config", required=True, help="YAML config (see configs/)")
    train.add_argument("--resume", action="store_true", help="continue from <out_dir>/checkpoint.pt")
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

    A bad config key or value is a usage error (exit status 2, with the message). Rank 0 prints
    the training summary or the scores (without the per-class IoU) as JSON; every process prints
    how many predictions it wrote.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    from ocnet_edu.config import load_config
    from ocnet_edu.engine import distributed

    try:
        cfg = load_config(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    if args.command == "train":
        from ocnet_edu.engine.train import train as run_training

        report = json.dumps(run_training(cfg, resume=args.resume, progress=not args.no_progress))
    elif args.command == "predict":
        from ocnet_edu.engine.predict import predict as run_prediction

        written = run_prediction(cfg, args.checkpoint, args.out, args.split, args.scales, args.flip, args.sliding,
                                 args.train_ids)
        report = f"wrote {len(written)} prediction(s) to {args.out}"
    else:
        from ocnet_edu.engine.evaluate import evaluate as run_evaluation

        result = run_evaluation(cfg, args.checkpoint, args.scales, args.flip, args.sliding, args.split, args.out)
        report = json.dumps({k: v for k, v in result.items() if k != "iou"}, indent=2)
    if distributed.is_main() or args.command == "predict":  # each process writes (and counts) its share
        print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
