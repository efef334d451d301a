"""``condorml data``: make image sets (synthetic ones, and torchvision's dataset files as a zip)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from condorml.cli._common import call, setup_logging

# condorml.job.synth.LAYOUTS and TEST_LAYOUTS (not imported: --help stays instant)
SynthLayout = Literal["auto", "kaggle", "folders", "csv"]
SynthTestLayout = Literal["flat", "folders"]

app = typer.Typer(
    help="Make image sets: synthetic N-class sets (cat/dog by default) and zips of "
    "torchvision's dataset files.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("synth")
def synth_command(
    out: Path = typer.Argument(..., help="Output folder (train/, test/, test_labels.csv)."),
    n_train: int = typer.Option(
        200, "--n-train", help="Training images, split evenly over the classes."
    ),
    n_test: int = typer.Option(50, "--n-test", help="Test images, with labels in test_labels.csv."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same images."),
    size: str = typer.Option(
        "128x96", "--size", help="Nominal WIDTHxHEIGHT; each image varies by up to 20%."
    ),
    classes: int = typer.Option(
        2,
        "--classes",
        help="Number of classes, 2 to 20: cat (triangles) and dog (ellipses), or shapes: "
        "triangle, ellipse, square, cross, star, ... and their outlines.",
    ),
    layout: SynthLayout = typer.Option(
        "auto",
        "--layout",
        help="Training layout: kaggle (train/cat.K.jpg, 2 classes), folders "
        "(train/CLASS/K.jpg), csv (train/K.jpg and train/labels.csv); auto: kaggle for 2 "
        "classes, else folders.",
    ),
    test_layout: SynthTestLayout = typer.Option(
        "flat",
        "--test-layout",
        help="Test layout: flat (test/K.jpg) or folders (test/CLASS/K.jpg).",
    ),
    zip_: bool = typer.Option(
        False, "--zip", help="Also write train.zip and test.zip, as HTCondor jobs receive them."
    ),
    replace: bool = typer.Option(
        False, "--replace", help="Replace the data set already in OUT, whole (never mixed)."
    ),
) -> None:
    """Write a synthetic, learnable image set of N classes.

    Each class is a shape, in random colours, sizes and places. By default cat/dog in the Kaggle
    layout: OUT/train/cat.K.jpg, OUT/train/dog.K.jpg,
    OUT/test/K.jpg and OUT/test_labels.csv (fileid,is_dog); cats are triangles, dogs ellipses.
    With --classes N: class folders or a labels CSV, test labels as fileid,label.
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
        classes=classes,
        layout=layout,
        test_layout=test_layout,
    )
    if summary.layout == "kaggle" and summary.test_layout == "flat":
        wrote = f"wrote {summary.n_cats} cats and {summary.n_dogs} dogs to {out / 'train'}, "
    else:
        low, high = min(summary.train_counts), max(summary.train_counts)
        each = f"{low}" if low == high else f"{low}-{high}"
        wrote = (
            f"wrote {summary.n_train} training images of {len(summary.classes)} classes "
            f"({', '.join(summary.classes)}; {each} each) to {out / 'train'} "
            f"({summary.layout}), "
        )
    typer.echo(
        wrote
        + f"{summary.n_test} test images to {out / 'test'}"
        + (f" ({summary.test_layout})" if summary.test_layout != "flat" else "")
        + "".join(f", {path}" for path in summary.zips)
    )


@app.command("torchvision")
def torchvision_command(
    name: str = typer.Argument(..., help="The dataset: mnist, fashionmnist, cifar10 or cifar100."),
    source: Path = typer.Argument(
        ...,
        help="What you have: a torchvision root (as torchvision's download leaves it), a "
        "folder of the downloaded files (MNIST's four *-ubyte.gz, or unpacked; CIFAR's "
        "cifar-10-python.tar.gz, or its unpacked folder), or the CIFAR .tar.gz itself.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="The zip to write (FILE.zip)."),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Where the check unpacks the zip (default: condorml's cache, which training on "
        "this machine then reuses).",
    ),
) -> None:
    """Zip torchvision's files of a dataset (MNIST, CIFAR) as data.

    FILE.zip holds torchvision's root (MNIST/raw/..., cifar-10-batches-py/...), the data path
    that condorml trains and tests on. Nothing is downloaded: .gz and .tar.gz are unpacked, and the zip is checked by loading both splits
    with torchvision before it is written."""
    from condorml.job.torchvision_pack import pack_torchvision

    setup_logging()
    summary = call(pack_torchvision, name, source, out, cache_dir=cache_dir)
    shown = summary.classes if len(summary.classes) <= 20 else (*summary.classes[:10], "...")
    typer.echo(
        f"wrote {summary.out} ({summary.name}): {summary.counts['train']} training and "
        f"{summary.counts['test']} test images, {len(summary.classes)} classes "
        f"({', '.join(shown)})"
    )
