"""``condorml data``: make and inspect image sets in the Kaggle layout."""

from __future__ import annotations

from pathlib import Path

import typer

from condorml.cli._common import call, setup_logging

app = typer.Typer(
    help="Make and inspect cat/dog image sets (Kaggle layout).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("synth")
def synth_command(
    out: Path = typer.Argument(..., help="Output folder (train/, test/, test_labels.csv)."),
    n_train: int = typer.Option(200, "--n-train", help="Training images, half cats and half dogs."),
    n_test: int = typer.Option(50, "--n-test", help="Test images, with labels in test_labels.csv."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same images."),
    size: str = typer.Option(
        "128x96", "--size", help="Nominal WIDTHxHEIGHT; each image varies by up to 20%."
    ),
    zip_: bool = typer.Option(
        False, "--zip", help="Also write train.zip and test.zip, as HTCondor jobs receive them."
    ),
    replace: bool = typer.Option(
        False, "--replace", help="Replace the data set already in OUT, whole (never mixed)."
    ),
) -> None:
    """Write a synthetic, learnable cat/dog set: OUT/train/cat.K.jpg, OUT/train/dog.K.jpg,
    OUT/test/K.jpg and OUT/test_labels.csv (fileid,is_dog). Cats are triangles, dogs ellipses.
    OUT must be new or empty (or --replace); the set appears there only when complete."""
    from condorml.job.synth import make_synthetic_dataset, parse_size

    setup_logging()
    summary = call(
        make_synthetic_dataset,
        out,
        n_train=n_train,
        n_test=n_test,
        seed=seed,
        size=call(parse_size, size),
        make_zips=zip_,
        replace=replace,
    )
    typer.echo(
        f"wrote {summary.n_cats} cats and {summary.n_dogs} dogs to {out / 'train'}, "
        f"{summary.n_test} test images to {out / 'test'}"
        + "".join(f", {path}" for path in summary.zips)
    )
