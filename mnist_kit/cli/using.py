"""The commands that use a trained run: ``eval``, ``export``, ``predict``, ``serve``. Each parses its options,
calls the function of the same name in ``mnist_kit.api`` and prints what it returns."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mnist_kit import api
from mnist_kit.cli.group import cli
from mnist_kit.cli.options import Number, root_of, root_options, run_options, runtime_option
from mnist_kit.errors import UserError


@cli.command("eval")
@run_options(epoch_help="Evaluate this epoch's checkpoint (epochs count from 0).",
             last_help="Evaluate the last epoch's checkpoint instead of the best one.")
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option("--device", default="auto", show_default=True, help="cpu, gpu, gpu:N or auto.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--photos", type=click.IntRange(0, 10000), default=0, metavar="N",
              help="Also make N photos of test images (ink on tinted paper, off-centre, 40-260 px, blur, noise, "
                   "JPEG/PNG) and report how many the model reads right through predict's preprocessing.")
@click.option("--photo-seed", type=click.IntRange(0), default=0, show_default=True, help="Seed of the photos.")
@click.option("--save-photos", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the photos in this new (or empty) folder, named NNNN-label-K.ext.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also draw the pictures into this new (or empty) folder: evaluation.png (the confusion matrix "
                   "and the most confidently wrong images) and training.png (the run's curves per epoch).")
def evaluate(run_dir, root, root_config, epoch, last, split, device, as_json, photos, photo_seed, save_photos,
             plot_dir):
    """Measure a trained run: loss, accuracy, per-class precision/recall/F1, confusion matrix; with
    --photos N, also its accuracy on photos made from the test set."""
    from mnist_kit.evaluation import metrics
    from mnist_kit.logbook import figures
    from mnist_kit.util.files import check_new_folder

    if epoch is not None and last:  # before --root's config is read: the options alone are wrong
        raise UserError("--epoch and --last exclude each other")
    if plot_dir is not None:
        check_new_folder(plot_dir, "--plot")
    done = api.evaluate(run_dir, epoch, last, split, device, photos, photo_seed, save_photos,
                        root=root_of(root, root_config))
    result = done.to_dict()
    if photos and result["photos"]["count"] < photos:
        click.echo(f"note: --photos {photos}, but the test split holds {result['photos']['count']} images: one "
                   "photo was made of each", err=True)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(f"run {result['run']}")
        click.echo(metrics.format_report(result, result["classes"]))
    if plot_dir is not None:
        plot_dir.mkdir(parents=True, exist_ok=True)
        for name, figure in (("evaluation.png", done.plot()), ("training.png", api.Run(result["run"]).plot())):
            click.echo(f"wrote {figures.save(figure, plot_dir / name)}", err=True)


@cli.command()
@run_options(epoch_help="Export this epoch's checkpoint (default: the best one).",
             last_help="Export the last epoch's checkpoint.")
@click.option("--best", is_flag=True, help="Export the best checkpoint (the default).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default: RUN/export/CHECKPOINT); replaced only by a complete, checked export.")
@click.option("--format", "fmt", type=click.Choice(["auto", "paddle", "onnx", "pdparams"]), default="auto",
              show_default=True,
              help="auto: the Paddle inference program, and model.onnx where paddle2onnx and onnxruntime are "
                   "installed (predict and serve then run without paddle); paddle: the program only; onnx: model.onnx "
                   "or an error; pdparams: as auto, and the model's and the optimizer's state dicts (paddle.save "
                   "pickles), for paddle.load and set_state_dict.")
def export(run_dir, root, root_config, epoch, last, best, out, fmt):
    """Freeze a trained run into an inference model, checked against the trained network."""
    if sum([epoch is not None, last, best]) > 1:
        raise UserError("--epoch, --last and --best exclude each other")
    done = api.export(run_dir, epoch, last, out, fmt, root=root_of(root, root_config))
    meta, c = done.meta, done.meta["checks"]
    click.echo(f"exported {done.run} ({meta['source']['checkpoint']}) to {meta['path']}")
    click.echo(f"checked: max logit difference {c['max_abs_logit_difference']:.2g} on {c['parity_images']} images "
               f"(tolerance {c['tolerance']:g}); {c['split']} accuracy {c['val_accuracy']:.2%} = checkpoint's "
               f"{c['val_accuracy_checkpoint']:.2%} on {c['val_images']} images")
    if "onnx" in meta:
        o = meta["onnx"]
        click.echo(f"ONNX: {meta['path']}/model.onnx, checked with {o['runtime']}: max logit difference "
                   f"{o['max_abs_logit_difference']:.2g}, {o['split']} accuracy {o['val_accuracy']:.2%}")
    elif "onnx_skipped" in meta:
        click.echo(f"note: no model.onnx ({meta['onnx_skipped']}); predict and serve will use Paddle Inference",
                   err=True)
    if "pdparams" in meta:
        click.echo(f"state dicts: {meta['path']}/model.pdparams and model.pdopt (pickles: load only files you "
                   f"trust), loaded back: max logit difference {meta['pdparams']['max_abs_logit_difference']:.2g}")
    if meta.get("replaced_files"):
        dropped = meta["replaced_files"]
        click.echo(f"note: the earlier export in {meta['path']} held {' and '.join(dropped)}, which this export "
                   "does not write: they went with the earlier export"
                   + ("; --format pdparams writes model.pdparams and model.pdopt" if "model.pdopt" in dropped else ""),
                   err=True)
    click.echo(f"predict with: mnist-kit predict --model {meta['path']} IMAGE...")


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              help="Exported model folder (default: the newest export under --root).")
@root_options("the newest export")
@click.option("--topk", type=click.IntRange(1), default=3, show_default=True)
@click.option("--min-confidence", type=Number(0, 1), default=0.6, show_default=True,
              help="Flag predictions below this probability as low confidence.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image (errors included).")
@click.option("--save-preprocessed", type=click.Path(file_okay=False, path_type=Path),
              help="Write the inputs the model saw (the images after preprocessing) into this folder.")
@click.option("--device", default="cpu", show_default=True, help="cpu, gpu or gpu:N.")
@runtime_option
def predict(paths, model_dir, root, root_config, topk, min_confidence, as_json, save_preprocessed, device, runtime):
    """Predict the class of each image (files, folders or globs); any failed file makes the exit code 1."""
    from mnist_kit.deploy.predict import format_result

    found = api.predict(model_dir, list(paths), topk, min_confidence, save_preprocessed, device, runtime,
                        root=root_of(root, root_config) if model_dir is None else None, errors="keep")
    results = [p.to_dict() for p in found]
    click.echo("\n".join(json.dumps(r) for r in results) if as_json else "\n".join(map(format_result, results)))
    failed = sum("error" in r for r in results)
    if failed:
        click.echo(f"{failed} of {len(results)} file(s) failed", err=True)
        raise SystemExit(1)


@cli.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              help="Exported model folder (default: the newest export under --root).")
@root_options("the newest export")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback lets anyone who reaches it use the model, without "
                   "authentication.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0: any free port.")
@click.option("--threads", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Requests handled at the same time (they share one model).")
@click.option("--device", default="cpu", show_default=True, help="cpu, gpu or gpu:N (a GPU takes Paddle Inference).")
@runtime_option
@click.option("--cors", metavar="ORIGIN",
              help="Let pages of ORIGIN (e.g. http://localhost:3000, or * for any) call the API from a browser; "
                   "off by default.")
def serve(model_dir, root, root_config, host, port, threads, device, runtime, cors):
    """Serve an exported model: a drawing pad at / and an HTTP API (POST /api/predict, /api/predict/batch,
    GET /api/model, /healthz) until Ctrl-C."""
    from mnist_kit.deploy.serve import check_origin

    check_origin(cors)  # a usage error, before --root's config is read or a model looked for
    api.serve(model_dir, host, port, threads, device, runtime, cors,
              root=root_of(root, root_config) if model_dir is None else None, say=lambda m: click.echo(m, err=True))
