"""Command line: ``python -m ocnet_edu {train,evaluate,predict,infer,export} ...`` (also ``ocnet-edu`` once installed).

Examples::

    python -m ocnet_edu train --config configs/synthetic.yaml
    python -m ocnet_edu train --config configs/synthetic.yaml --resume schedule.max_iters=40
    python -m ocnet_edu train --config configs/synthetic.yaml --overwrite   # replace the run in out_dir
    torchrun --nproc_per_node=8 -m ocnet_edu train --config configs/cityscapes/table2_base_oc_isa.yaml
    python -m ocnet_edu evaluate --config runs/synthetic/config.yaml --checkpoint runs/synthetic/final.pt --flip
    python -m ocnet_edu predict --config runs/paper/x/config.yaml --checkpoint runs/paper/x/final.pt --split test --out preds
    python -m ocnet_edu evaluate --published openseg:base_ocnet data/published/openseg/base_ocnet.pth \
        --data data/cityscapes --tta ms-flip        # a published model with its source's test pipeline
    python -m ocnet_edu export --config runs/synthetic/config.yaml --checkpoint runs/synthetic/final.pt --onnx model.onnx
    python -m ocnet_edu export --published openseg:isanet isanet.pth --onnx isanet.onnx

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
    """The flags ``evaluate`` and ``predict`` share: config and checkpoint (or a published model,
    its data and test pipeline), test scales, flip, sliding window."""
    command.add_argument("--config", help="our run's config (with --checkpoint)")
    command.add_argument("--checkpoint")
    command.add_argument("--published", nargs=2, metavar=("SOURCE:ARCH", "PATH"),
                         help="a published checkpoint instead of --config/--checkpoint, e.g. openseg:isanet isanet.pth")
    command.add_argument("--data", help="with --published: the dataset folder (official layout)")
    command.add_argument("--dataset", default="cityscapes", help="with --published: the dataset's name")
    command.add_argument("--tta", default="none", choices=["none", "ms-flip"],
                         help="with --published: single scale, or the source's multi-scale + flip test")
    command.add_argument("--num-classes", type=int, default=None, help="with --published (default: the dataset's)")
    command.add_argument("--device", default=None, help="with --published (default: cuda if present)")
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
    _add_infer_command(commands)
    _add_export_command(commands)
    return parser


def _add_export_command(commands) -> None:
    """``export (--config C --checkpoint P [overrides] | --published SOURCE:ARCH PATH) --onnx FILE``."""
    export = commands.add_parser("export", help="write the model as ONNX (dynamic batch, height and width)")
    export.add_argument("--config", help="our config, with --checkpoint")
    export.add_argument("--checkpoint")
    export.add_argument("--published", nargs=2, metavar=("SOURCE:ARCH", "PATH"),
                        help="a published checkpoint, e.g. openseg:isanet isanet.pth (see ocnet_edu.zoo.published)")
    export.add_argument("--num-classes", type=int, default=19, help="classes of the published model (19 or 150)")
    export.add_argument("--onnx", required=True, help="the .onnx file to write (its folder must exist)")
    export.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="example size to trace (default: data.crop_size, or 512 512 for --published)")
    export.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    export.add_argument("overrides", nargs="*", help="key.sub=value overrides of --config")


def _add_infer_command(commands) -> None:
    """``infer IMAGE... (--published SOURCE:ARCH PATH | --config C --checkpoint P) --out DIR``."""
    infer = commands.add_parser("infer", help="label map, overlay and relation map of image files (no labels)")
    infer.add_argument("images", nargs="+")
    infer.add_argument("--published", nargs=2, metavar=("SOURCE:ARCH", "PATH"),
                       help="a published checkpoint, e.g. openseg:isanet isanet.pth (see ocnet_edu.zoo.published)")
    infer.add_argument("--num-classes", type=int, default=19, help="classes of the published model (19 or 150)")
    infer.add_argument("--config", help="our config, with --checkpoint")
    infer.add_argument("--checkpoint")
    infer.add_argument("--out", required=True, help="output folder")
    infer.add_argument("--relation-at", help="pixel x,y whose relation map to draw")
    infer.add_argument("--device", default="cuda" if _cuda() else "cpu")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _run_infer(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The ``infer`` command: load the model (published or ours), write the maps."""
    from ocnet_edu.engine.infer import infer_images

    at = None
    if args.relation_at:
        try:
            at = tuple(int(v) for v in args.relation_at.split(","))
            assert len(at) == 2
        except (ValueError, AssertionError):
            parser.error(f"--relation-at takes x,y (two integers), got {args.relation_at!r}")
    if args.published:
        from ocnet_edu.zoo.published import load_published

        source, _, arch = args.published[0].partition(":")
        try:
            model = load_published(args.published[1], source, arch, args.num_classes)
        except ValueError as error:
            parser.error(str(error))
        preprocess = model.preprocess
    elif args.config and args.checkpoint:
        from ocnet_edu.config import load_config
        from ocnet_edu.data.transforms import Normalize
        from ocnet_edu.engine.evaluate import load_model

        model = load_model(load_config(args.config), args.checkpoint)
        normalize = Normalize()
        preprocess = lambda images: torch_stack([normalize(image * 255.0, None)[0] for image in images])  # noqa: E731
    else:
        parser.error("infer needs --published SOURCE:ARCH PATH, or --config and --checkpoint")
    written = infer_images(model, preprocess, args.images, args.out, at, args.device)
    print(f"wrote {len(written)} file(s) to {args.out}")
    return 0


def _run_export(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The ``export`` command: load the model (ours or published), write the ONNX file."""
    from ocnet_edu.engine.export import check_output_path, export_onnx, require_exporter

    if args.size is not None and min(args.size) < 1:
        parser.error(f"--size takes two positive ints H W, got {args.size}")
    require_exporter()  # before loading a large checkpoint
    check_output_path(args.onnx)
    if args.published and not (args.config or args.checkpoint or args.overrides):
        from ocnet_edu.zoo.published import load_published

        source, _, arch = args.published[0].partition(":")
        try:
            model = load_published(args.published[1], source, arch, args.num_classes)
        except ValueError as error:
            parser.error(str(error))
        size = args.size or (512, 512)
    elif args.config and args.checkpoint and not args.published:
        from ocnet_edu.engine.evaluate import load_model

        cfg = _config(parser, args)
        model = load_model(cfg, args.checkpoint)
        size = args.size or cfg.data.crop_size
    else:
        parser.error("export needs --published SOURCE:ARCH PATH, or --config and --checkpoint (with optional "
                     "key=value overrides), not both")
    metadata = export_onnx(model, args.onnx, size, args.opset)
    print(f"wrote {args.onnx}: " + json.dumps({k: metadata[k] for k in ("num_classes", "dynamic_ranges")}))
    return 0


def torch_stack(tensors):
    """``torch.stack`` (imported lazily, so that ``--help`` stays fast)."""
    import torch

    return torch.stack(tensors)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), load the config and run the command; 0 on success.

    A bad flag, config key or value is a usage error (exit status 2, with the message); a bad
    checkpoint, data file, run directory, a full disk or a process that stopped answering is
    reported in one line naming it (exit status 1). Rank 0 prints the training summary or the
    scores (without the per-class IoU) as JSON; every process prints how many predictions it wrote.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    # export: a missing exporter package (the message names the extra) or an output that is a folder
    errors = _user_errors() + ((ImportError, IsADirectoryError) if args.command == "export" else ())
    try:
        if args.command == "infer":
            return _run_infer(parser, args)
        if args.command == "export":
            return _run_export(parser, args)
        if args.command != "train" and _check_model_flags(parser, args):
            report = _run_published(args)
        else:
            report = _run_command(args, _config(parser, args))
    except errors as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 1
    if report is not None:
        print(report)
    return 0


def _check_model_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> bool:
    """Whether ``evaluate``/``predict`` runs a published model; a usage error (exit status 2)
    for a mix of the two ways of naming a model or a flag that does not fit the chosen one."""
    if args.published:
        mixed = [flag for flag, used in (("--config", args.config), ("--checkpoint", args.checkpoint),
                                          ("--scales", args.scales != [1.0]), ("--flip", args.flip),
                                          ("--sliding", args.sliding), ("key=value overrides", args.overrides)) if used]
        if mixed:
            parser.error(f"--published takes its test pipeline from --tta and its data from --data; "
                         f"drop {', '.join(mixed)}")
        if not args.data:
            parser.error("--published needs --data (the dataset folder)")
        return True
    if not (args.config and args.checkpoint):
        parser.error(f"{args.command} needs --config and --checkpoint, or --published SOURCE:ARCH PATH with --data")
    extra = [flag for flag, used in (("--data", args.data), ("--tta", args.tta != "none"),
                                     ("--num-classes", args.num_classes), ("--device", args.device)) if used]
    if extra:
        parser.error(f"{', '.join(extra)} only apply with --published (our runs take them from the config)")
    return False


def _run_published(args: argparse.Namespace) -> str:
    """``evaluate``/``predict`` of a published checkpoint (:mod:`ocnet_edu.engine.published`)."""
    from ocnet_edu.engine import published

    options = dict(dataset=args.dataset, split=args.split or "val", tta=args.tta, num_classes=args.num_classes,
                   device=args.device or ("cuda" if _cuda() else "cpu"))
    if args.command == "predict":
        written = published.predict_published(*args.published, args.data, args.out, train_ids=args.train_ids,
                                               **options)
        return f"wrote {len(written)} prediction(s) to {args.out}"
    result = published.evaluate_published(*args.published, args.data, out=args.out, **options)
    return json.dumps({k: v for k, v in result.items() if k != "iou"}, indent=2)


def _config(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The command's config; a bad file, key or value is a usage error (exit status 2)."""
    from ocnet_edu.config import load_config

    try:
        return load_config(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))


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
