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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ocnet_edu", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model from a YAML config")
    train.add_argument("--config", required=True, help="YAML config (see configs/)")
    train.add_argument("--resume", action="store_true", help="continue from <out_dir>/checkpoint.pt")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("overrides", nargs="*", help="key.sub=value overrides")

    evaluate = commands.add_parser("evaluate", help="score a checkpoint on the validation split")
    evaluate.add_argument("--config", required=True)
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--scales", type=float, nargs="+", default=[1.0],
                          help="test scales, e.g. 0.75 1 1.25 1.5 1.75")
    evaluate.add_argument("--flip", action="store_true", help="add the horizontally flipped prediction")
    evaluate.add_argument("--sliding", action="store_true", help="sliding-window inference with the crop size")
    evaluate.add_argument("--split", default=None, help="split to score (default: data.val_split)")
    evaluate.add_argument("--out", default=None, help="write the scores as JSON here")
    evaluate.add_argument("overrides", nargs="*", help="key.sub=value overrides")

    predict = commands.add_parser("predict", help="write predicted label maps as PNG files (e.g. for a test server)")
    predict.add_argument("--config", required=True)
    predict.add_argument("--checkpoint", required=True)
    predict.add_argument("--out", required=True, help="folder for <image stem>.png")
    predict.add_argument("--split", default=None, help="split to predict (default: data.val_split), e.g. test")
    predict.add_argument("--scales", type=float, nargs="+", default=[1.0])
    predict.add_argument("--flip", action="store_true")
    predict.add_argument("--sliding", action="store_true")
    predict.add_argument("--train-ids", action="store_true",
                         help="write train ids 0..K-1 instead of the dataset's raw label ids")
    predict.add_argument("overrides", nargs="*", help="key.sub=value overrides")

    args = parser.parse_args(argv)
    from ocnet_edu.config import load_config

    try:
        cfg = load_config(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    if args.command == "train":
        from ocnet_edu.engine.train import train as run_training

        summary = run_training(cfg, resume=args.resume, progress=not args.no_progress)
        if summary.get("world_size", 1) == 1 or _is_main():
            print(json.dumps(summary))
        return 0
    if args.command == "predict":
        from ocnet_edu.engine.predict import predict as run_prediction

        written = run_prediction(cfg, args.checkpoint, args.out, args.split, args.scales, args.flip, args.sliding,
                                 args.train_ids)
        print(f"wrote {len(written)} prediction(s) to {args.out}")
        return 0
    from ocnet_edu.engine.evaluate import evaluate as run_evaluation

    result = run_evaluation(cfg, args.checkpoint, args.scales, args.flip, args.sliding, args.split, args.out)
    if _is_main():
        print(json.dumps({k: v for k, v in result.items() if k != "iou"}, indent=2))
    return 0


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    sys.exit(main())
