"""`trainlab`: a thin argparse layer over the library. Bad input ends in one line on stderr and a
non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from trainlab.errors import TrainlabError
from trainlab.launch import EXIT_LOST_PEER

EXIT_BAD_INPUT = 2


def cmd_train(args: argparse.Namespace) -> None:
    from trainlab.config import flatten, load_config, parse_override
    from trainlab.dispatch import train
    from trainlab.io import read_json

    overrides = [
        f"{key}={value}"
        for key, value in (
            ("data.dataset", args.dataset),
            ("model.name", args.model),
            ("task.name", args.task),
            ("train.epochs", args.epochs),
            ("data.batch_size", args.batch_size),
            ("optim.lr", args.lr),
            ("optim.name", args.optimizer),
            ("train.seed", args.seed),
            ("train.device", args.device),
            ("data.limit_train", args.limit_train),
            ("data.augment", json.dumps(args.augment) if args.augment is not None else None),
            ("train.diagnose", "true" if args.diagnose else None),
            ("log.tensorboard", "true" if args.tensorboard else None),
        )
        if value is not None
    ] + list(args.set)
    if args.resume:
        for flag, given in (("--out", args.out), ("--recipe", args.recipe), ("--overwrite", args.overwrite)):
            if given:
                raise TrainlabError(
                    f"{flag} cannot be combined with --resume {args.resume}: a resumed run keeps its "
                    "directory and config.json (--epochs and --set change what a resume may change)"
                )
        config_path = Path(args.resume) / "config.json"
        if not config_path.exists():
            raise TrainlabError(f"{args.resume}: no config.json (expected a run directory to resume)")
        # through load_config, as a new run's config is: the saved config, then the overrides
        saved = dict(flatten(read_json(config_path)))
        cfg = load_config(None, {**saved, **dict(map(parse_override, overrides))})
        out = Path(args.resume)
    else:
        from trainlab.vision_run import DEFAULT_RECIPES  # a vision task's own recipe, unless one is named

        cfg = load_config(args.recipe or DEFAULT_RECIPES.get(args.task, "default"), overrides)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = (
            Path(args.out)
            if args.out
            else Path("runs")
            / f"{cfg.data.dataset.replace(':', '_').replace('/', '_')}-{cfg.model.name}-{stamp}"
        )
    from trainlab.vision_run import is_vision_run

    vision = is_vision_run(cfg)  # a scenes dataset or a vision task: trainlab/vision_run.py
    if vision and args.nproc is not None:
        raise TrainlabError(f"--nproc: a {cfg.task.name} run trains on one process")
    if args.nproc is not None:  # the ranks run this command again, each with its own process
        from trainlab.launch import launch, worker_command

        if distributed_rank() is not None:
            raise TrainlabError("--nproc: this process is a rank of a torchrun job already; drop --nproc")
        from trainlab.training.distributed import check_global_batch

        check_global_batch(cfg.data.batch_size, args.nproc)
        launch(args.nproc, worker_command(args.argv, str(out), bool(args.resume)))
        return
    result = train(cfg, out, resume=bool(args.resume), overwrite=args.overwrite, progress=not args.quiet)
    if distributed_rank() not in (None, 0):  # rank 0 speaks for a distributed run
        return
    for note in result.notes:
        print(note)
    s = result.summary
    tested = "  ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in s.items() if k.startswith("test_"))
    print(f"{tested or 'no test split, so no test metrics'}  ({s['epochs_run']} epochs, {s['device']})")
    if result.model is None:  # a finished run, left as it was
        return
    compiled = f", compile warm-up {s['compile_seconds']:.1f}s" if s["compile_seconds"] else ""
    print(
        f"time to result {s['time_to_result_seconds']:.2f}s (epochs {s['train_seconds']:.2f}s, "
        f"final test evaluation {s['eval_seconds']:.2f}s); data loading {s['load_seconds']:.1f}s"
        f"{compiled}; {s['total_seconds']:.1f}s in all"
    )
    print(f"predictions drawn: {out / 'predictions.png'}" if vision else f"report: {out / 'report.html'}")


def cmd_eval(args: argparse.Namespace) -> None:
    from trainlab.ensemble.evaluate import evaluate_directory
    from trainlab.vision_predict import evaluate_vision_run, is_vision_dir

    if is_vision_dir(args.run_dir):  # a scenes run: trainlab/vision_predict.py
        result = evaluate_vision_run(args.run_dir, args.device, args.coco_json)
        shown = {k: v for k, v in result.items() if k.startswith("test_")}
        text = "  ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in shown.items())
        print(json.dumps(result, indent=2) if args.json else text)
        if args.coco_json and not args.json:
            print(f"detections in COCO's results format: {args.coco_json}")
        return
    if args.coco_json:
        raise TrainlabError(f"--coco-json: {args.run_dir} is not a detection run (no boxes to export)")
    result = evaluate_directory(args.run_dir, args.device)  # a run, or an ensemble (docs/ensembles.md)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    shown = [k for k in result if k.startswith("test_") or k == "temperature"]
    print("  ".join(f"{k.replace('_', ' ')} {result[k]:.4f}" for k in shown))
    if "member_test_accuracy" in result:
        members = ", ".join(f"{a:.4f}" for a in result["member_test_accuracy"])
        print(
            f"{result['ensemble_members']} members: test accuracy {members}; disagreement "
            f"{result['member_disagreement']:.4f}; deep-ensemble equivalent "
            f"{result['deep_ensemble_equivalent']:.2f}"
        )
    if "confusion_matrix" not in result:
        return
    print()
    print(f"{'class':>14} {'precision':>9} {'recall':>7} {'f1':>6}")
    for i, name in enumerate(result["classes"]):
        print(f"{name:>14} {result['precision'][i]:9.4f} {result['recall'][i]:7.4f} {result['f1'][i]:6.4f}")
    print("\nconfusion matrix (rows: true class, columns: predicted)")
    for row in result["confusion_matrix"]:
        print(" ".join(f"{c:5d}" for c in row))


def cmd_predict(args: argparse.Namespace) -> None:
    from trainlab.ensemble.evaluate import load_directory
    from trainlab.predict import predict_files
    from trainlab.vision_predict import is_vision_dir, predict_vision_files

    if is_vision_dir(args.run_dir):  # boxes or masks: trainlab/vision_predict.py
        results = predict_vision_files(args.run_dir, args.files, args.out, args.device)
        if args.json:
            print(json.dumps(results, indent=2))
        for item in results:
            if "error" in item:
                print(f"trainlab: error: {item['error']}", file=sys.stderr)
            elif not args.json:
                found = zip(item.get("classes", []), item.get("scores", []), item.get("boxes", []))
                objects = [f"{c} {s:.2f} [{', '.join(f'{v:.1f}' for v in b)}]" for c, s, b in found]
                objects += [f"{seg['class']}" for seg in item.get("segments", [])]
                print(f"{item['file']}: {'; '.join(objects) or 'nothing found'}")
        if args.out and not any("error" in item for item in results):
            print(f"drawn: {args.out}")
        failed = sum("error" in item for item in results)
        if failed:
            raise TrainlabError(f"{failed} of {len(results)} files could not be predicted (see above)")
        return
    if args.out:
        raise TrainlabError(f"--out draws boxes or masks: {args.run_dir} is not a scenes run")
    if args.top_k < 1:
        raise TrainlabError(f"--top-k must be at least 1, got {args.top_k}")
    results = predict_files(load_directory(args.run_dir, args.device), args.files, args.top_k)
    if args.json:
        print(json.dumps(results, indent=2))
    for item in results:
        if "error" in item:
            print(f"trainlab: error: {item['error']}", file=sys.stderr)
        elif args.json:
            continue
        elif "outputs" in item:
            print(f"{item['file']}: {', '.join(f'{v:.4f}' for v in item['outputs'])}")
        else:
            ranked = ", ".join(f"{p['label']} {p['probability']:.3f}" for p in item["predictions"])
            print(f"{item['file']}: {ranked}")
    failed = sum("error" in item for item in results)
    if failed:  # the others are predicted above; the exit status still says that not all were
        raise TrainlabError(f"{failed} of {len(results)} files could not be predicted (see above)")


def cmd_ensemble(args: argparse.Namespace) -> None:
    from trainlab.ensemble.build import build_ensemble
    from trainlab.io import read_json

    manifest = build_ensemble(args.run_dirs, args.out, args.combine, args.overwrite)
    print(f"ensemble of {len(read_json(manifest)['members'])} members: {manifest}")


def cmd_export(args: argparse.Namespace) -> None:
    from trainlab.export import export_onnx

    e = export_onnx(args.run_dir, args.out, progress=not args.quiet)
    shape = ", ".join(map(str, e.input_shape))
    print(
        f"{e.path}: uint8 images [{shape}] -> {e.output}, preprocessing {e.preprocess}"
        f"{f', TTA {e.tta}' if e.tta else ''}; onnxruntime agrees with torch to {e.max_abs_diff:.2g} "
        f"(outputs up to {e.max_abs_output:.2g})"
    )


def list_rows(family: str) -> list[dict]:
    """Rows for `trainlab list FAMILY`: a name per row, plus whatever the family describes."""
    from trainlab import catalog

    return catalog.rows(family)


def cmd_list(args: argparse.Namespace) -> None:
    rows = list_rows(args.family)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def cmd_data(args: argparse.Namespace) -> None:
    if args.action == "preview":
        from trainlab.report.scenes import preview_command

        print(preview_command(args.name, args.split, args.out or "scenes-preview.png", args.n))
        return
    if args.action == "export":
        from trainlab.data.scenes_coco import export_command

        if not args.out:
            raise TrainlabError("data export needs --out DIR (the folder for the PNG files and the JSON)")
        print(export_command(args.name, args.split, args.format, args.out, args.n))
        return
    if args.action == "fetch":
        from trainlab.data.fetch import fetch_dataset

        dest = fetch_dataset(args.name, args.dest, progress=not args.quiet)
        print(f"{args.name}: downloaded and verified into {dest}")
        return
    from trainlab.data.datasets import load_dataset
    from trainlab.data.preprocess import channel_mean_std
    from trainlab.data.splits import check_splits

    data = load_dataset(args.name)
    check_splits(data)  # what training would refuse (an empty training split), not nan statistics
    mean, std = channel_mean_std(data.train_images)
    info = {
        "name": data.name,
        "location": str(data.root),
        "train_size": len(data.train_images),
        "test_size": len(data.test_images),
        "image_shape": list(data.image_shape),
        "num_classes": data.num_classes,
        "classes": data.classes,
        "channel_mean": [round(v, 4) for v in mean.flatten().tolist()],
        "channel_std": [round(v, 4) for v in std.flatten().tolist()],
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:>13}: {', '.join(map(str, value)) if isinstance(value, list) else value}")


def cmd_summary(args: argparse.Namespace) -> None:
    from trainlab.models.summary import summary_command

    print(summary_command(args.model, args.input, args.num_classes, args.json))


def cmd_augment(args: argparse.Namespace) -> None:
    from trainlab.config import SEED_MAX
    from trainlab.data.augment.preview import preview_command

    if not 0 <= args.seed <= SEED_MAX:
        raise TrainlabError(f"--seed {args.seed}: expected an int in [0, {SEED_MAX}], as train.seed")
    print(preview_command(args.dataset, args.image, args.augment, args.out, seed=args.seed))


def cmd_experiment(args: argparse.Namespace) -> None:
    from trainlab.experiments import run_experiment

    options = dict(quick=args.quick, out=args.out, device=args.device, seeds=args.seeds)
    result = run_experiment(args.name, **options, progress=not args.quiet)
    print(result["message"])


def cmd_transfer(args: argparse.Namespace) -> None:
    from trainlab.transfer_run import run_transfer

    out = args.out or f"runs/transfer-{args.scenario}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    result = run_transfer(
        args.scenario, args.dataset, args.source, out, args.set, args.keep, args.overwrite, not args.quiet
    )
    accuracies = ", ".join(f"{k} {v:.4f}" for k, v in result["runs"].items() if v is not None)
    chosen = f"; kept {result['chosen']} (better validation accuracy)" if len(result["runs"]) > 1 else ""
    print(f"{args.scenario} from {result['source']}: test accuracy {accuracies}{chosen} -> {out}")


def cmd_compare(args: argparse.Namespace) -> None:
    from trainlab.report.compare import compare_runs

    print(f"comparison of {len(args.runs)} runs: {compare_runs(args.runs, args.out)}")


def cmd_scratch(args: argparse.Namespace) -> None:
    from trainlab.scratch_run import ScratchSettings, gradcheck_rows, parse_widths, scratch_train

    if args.action == "gradcheck":
        rows = gradcheck_rows(samples=None if args.all else args.samples)
        if args.json:
            print(json.dumps(rows, indent=2))
            return
        print("the lecture MLP 784-100-50-10, ReLU, float64: backprop against centred differences")
        for r in rows:
            shape = "x".join(map(str, r["shape"]))
            error = r["relative_error"]
            print(f"{r['layer']:>3} {r['module']:<32} {r['param']:<2} {shape:>8}  relative error {error:.2e}")
        return
    if args.model == "lenet5" and args.widths is not None:
        raise TrainlabError("--widths sets the MLP's hidden layers; lenet5's are fixed (drop --widths)")
    given = {
        key: value
        for key, value in (
            ("dataset", args.dataset), ("model", args.model), ("act", args.act), ("epochs", args.epochs),
            ("batch_size", args.batch_size), ("lr", args.lr), ("optimizer", args.optimizer),
            ("seed", args.seed), ("limit_train", args.limit_train), ("val_size", args.val_size),
            ("widths", parse_widths(args.widths) if args.widths is not None else None),
        )
        if value is not None
    }  # fmt: skip
    settings = ScratchSettings(**given)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("runs") / f"scratch-{settings.model}-{stamp}"
    progress = not args.quiet and not args.json
    summary = scratch_train(settings, out, overwrite=args.overwrite, progress=progress)
    if args.json:
        print(json.dumps({**summary, "out": str(out)}, indent=2, allow_nan=False))
        return
    print(
        f"test accuracy {summary['test_accuracy']:.4f}  test loss {summary['test_loss']:.4f}  "
        f"({summary['epochs_run']} epochs, {summary['train_images_per_s']:.0f} images/s)  -> {out}"
    )


class OneLineParser(argparse.ArgumentParser):
    """argparse, whose usage errors are one line like every other bad input (argparse adds the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"trainlab: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="trainlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (the default recipe with no arguments)")
    p.add_argument(
        "--recipe", help="recipe name (see `trainlab list recipes`) or a .toml path (default: default)"
    )
    p.add_argument("--dataset")
    p.add_argument("--model")
    p.add_argument("--task", help="classification or regression (see `trainlab list tasks`)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--limit-train", type=int, metavar="N", help="train on the first N training images")
    p.add_argument("--augment", metavar="SPEC", help='augmentation spec, e.g. "hflip,translate=2"')
    p.add_argument("--diagnose", action="store_true", help="record activation and gradient diagnostics")
    p.add_argument(
        "--tensorboard", action="store_true", help="write TensorBoard event files into RUN/tensorboard"
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable"
    )
    p.add_argument("--out", help="run directory (default: runs/<dataset>-<model>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    p.add_argument(
        "--resume", metavar="RUN_DIR", help="continue an interrupted run (--epochs N: a finished one, to N)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument(
        "--nproc", type=int, metavar="N", help="train on N processes through torchrun (docs/distributed.md)"
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval", help="test metrics by the run's own inference path; a classifier's confusion matrix"
    )
    p.add_argument("run_dir")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true")
    p.add_argument("--coco-json", metavar="FILE", help="a detection run: its test detections, COCO results")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="classify image files with a trained run")
    p.add_argument("run_dir")
    p.add_argument("files", nargs="+")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", metavar="PNG", help="a scenes run: the image with its boxes or masks drawn")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("ensemble", help="an ensemble of finished runs (same dataset and classes)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, help="the ensemble directory to write")
    p.add_argument("--combine", default="mean_prob", choices=["mean_prob", "mean_logit", "vote", "weighted"])
    p.add_argument("--overwrite", action="store_true", help="replace the ensemble already in --out")
    p.set_defaults(func=cmd_ensemble)

    p = sub.add_parser("export", help="write a run's model, preprocessing and TTA as one ONNX graph")
    p.add_argument("run_dir")
    p.add_argument("--format", choices=["onnx"], required=True)
    p.add_argument("--out", required=True, help="the file to write, e.g. model.onnx")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("list", help="list a registry: models, datasets, recipes, activations, ...")
    p.add_argument("family")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("data", help="fetch a dataset, show what is known about it, preview or export scenes")
    p.add_argument("action", choices=["fetch", "info", "preview", "export"])
    p.add_argument("name")
    p.add_argument("--dest", help="fetch: target folder (default: the first search location)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="preview, export")
    p.add_argument("--n", type=int, help="preview, export: scenes in the split (default: the split's size)")
    p.add_argument("--format", default="coco", choices=["coco"], help="export")
    p.add_argument("--out", help="preview: the PNG (default scenes-preview.png); export: the folder")
    p.add_argument("--quiet", action="store_true", help="fetch: no progress bars")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("summary", help="per-layer shapes, memory, parameters and multiply-accumulates")
    p.add_argument("model")
    p.add_argument("--input", default="1x28x28", metavar="CxHxW")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("augment", help="see what an augmentation spec does")
    p.add_argument("action", choices=["preview"])
    p.add_argument("--dataset", default=None)
    p.add_argument("--image", default=None)
    p.add_argument("--augment", required=True, metavar="SPEC")
    p.add_argument("--out", default="augment-preview.png")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_augment)

    p = sub.add_parser("experiment", help="measure one of the lectures' claims and draw its figure")
    p.add_argument("name", help="see `trainlab list experiments`")
    p.add_argument("--quick", action="store_true", help="a small CPU version (about a minute or less)")
    p.add_argument("--out", help="output folder (default: experiments/NAME)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seeds", type=int, help="number of seeds (default: 1 quick, 3 full)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines, only the result")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("transfer", help="a transfer-learning recipe of the lectures (docs/transfer.md)")
    p.add_argument("scenario", help="small-similar, small-different, large-similar or large-different")
    p.add_argument("--dataset", required=True, help="the target, e.g. digits or fashion-mnist:classes=5-9")
    p.add_argument("--source", metavar="RUN_DIR", help="default: cpu-fast on Fashion-MNIST 0-4, cached")
    p.add_argument("--keep", type=int, metavar="K", help="small-different: stages kept (default: half)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable"
    )
    p.add_argument("--out", help="run directory (default: runs/transfer-<scenario>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=cmd_transfer)

    p = sub.add_parser("compare", help="finished runs side by side: config diff, curves, CIs, confusion")
    p.add_argument("runs", nargs="+", metavar="RUN", help="two or more finished run directories")
    p.add_argument("--out", default="compare.html", help="the page to write (default: compare.html)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("scratch", help="the NumPy backpropagation engine: train it or check its gradients")
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("gradcheck", help="relative error of every layer's gradient, lecture MLP")
    q.add_argument("--samples", type=int, default=200, help="entries checked per array (default 200)")
    q.add_argument("--all", action="store_true", help="check every entry (slower)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_scratch)
    q = actions.add_parser("train", help="train an MLP or LeNet-5 from scratch, writing a run directory")
    q.add_argument("--dataset", help="default fashion-mnist")
    q.add_argument("--model", help="mlp (default) or lenet5")
    q.add_argument("--widths", help="the MLP's hidden layers, e.g. 100,50 (the default)")
    q.add_argument("--act", help="activation (default relu for mlp, tanh for lenet5)")
    q.add_argument("--epochs", type=int, help="default 10")
    q.add_argument("--batch-size", type=int, help="default 128")
    q.add_argument("--lr", type=float, help="default 0.02")
    q.add_argument("--optimizer", help="sgd, momentum (default, 0.9), nesterov or adam")
    q.add_argument("--seed", type=int)
    q.add_argument("--limit-train", type=int, metavar="N", help="train on the first N training images")
    q.add_argument("--val-size", type=int, metavar="N", help="images held out for validation (default 5000)")
    q.add_argument("--out", help="run directory (default: runs/scratch-<model>-<time>)")
    q.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    q.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.set_defaults(func=cmd_scratch)
    return parser


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"trainlab: warning: {message}\n"


def distributed_rank() -> int | None:
    """This process's rank when torchrun started it as one of several, else None (read from torchrun's
    environment, so that no command imports torch for it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    return int(os.environ.get("RANK", "0"))


def rank_prefix() -> str:
    rank = distributed_rank()
    return "" if rank is None else f"rank {rank}: "


def lost_peer(e: RuntimeError) -> bool:
    """A collective of a distributed run that failed because another rank died or timed out."""
    names = {cls.__name__ for cls in type(e).__mro__}
    return distributed_rank() is not None and bool(names & {"DistError"} or "gloo" in str(e))


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = one_line_warning
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what `train --nproc` hands the ranks
    try:
        args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is a BrokenPipeError below, not at exit
    except BrokenPipeError:
        # The reader went away (`trainlab eval RUN | head -1`): the Python docs' recipe, stdout to
        # devnull so that the interpreter's final flush does not fail again, and exit 1 quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except TrainlabError as e:
        print(f"trainlab: error: {rank_prefix()}{e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as e:
        if not lost_peer(e):
            raise
        # gloo's "[file.cc:537] Read error [host]:port: Connection reset by peer. This is typically ..."
        first = (str(e).strip() or type(e).__name__).splitlines()[0]
        first = re.sub(r"^\[[^\]]*\] ", "", first).split(". ")[0]
        print(f"trainlab: error: {rank_prefix()}lost contact with another rank ({first})", file=sys.stderr)
        return EXIT_LOST_PEER
    except OSError as e:
        print(f"trainlab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("trainlab: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
