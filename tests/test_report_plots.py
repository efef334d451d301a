"""The report's plots, checked for what a reader would see: nothing clipped, nothing overlapping,
bars inside their axes, learning rates on a log axis. Synthetic frames, no training."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from condorml.monitor import class_plots, gather, image_plots, plots

pytest.importorskip("matplotlib")


# Class names as torchvision's datasets have them: long, with spaces and slashes
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")  # fmt: skip
MNIST = ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
         "7 - seven", "8 - eight", "9 - nine")  # fmt: skip


def _classes(n: int) -> list[str]:
    """``n`` class names, the long ones first (FashionMNIST's, MNIST's, then made up)."""
    names = [*FASHION, *MNIST]
    return (names + [f"a rather long class name {i}" for i in range(len(names), n)])[:n]


def _class_frames(rng: Any, members: list[str], classes: list[str]) -> dict[str, Any]:
    """The per-class frames: a confusion matrix, per-class scores of the members and the
    ensemble, a confidence table and the ensemble's mistakes."""
    import numpy as np

    from condorml.monitor.scoring import (
        confidence_table,
        confusion_frame,
        member_scores,
        mistakes,
        per_class_table,
    )

    c, n = len(classes), 40 * len(classes)
    y = np.arange(n) % c
    probs = {}
    for member in members:
        logits = rng.normal(0, 1, (n, c))
        logits[np.arange(n), y] += 2.0  # mostly right
        p = np.exp(logits)
        probs[member] = p / p.sum(axis=1, keepdims=True)
    scores = member_scores(probs, y, classes)
    ensemble = np.mean(list(probs.values()), axis=0)
    ids = [f"{i}" for i in range(n)]
    return {"confusion": confusion_frame(scores["ensemble"]), "per_class": per_class_table(scores),
            "confidence": confidence_table(ensemble, y),
            "mistakes": mistakes(ids, y, ensemble, classes)}  # fmt: skip


def _frames(n: int, long_ids: bool) -> dict[str, Any]:
    """The frames :mod:`condorml.monitor.plots` draws, for ``n`` members (2 learning rates, as the demo)."""
    import numpy as np
    import pandas as pd

    from condorml.sweep.accounting import LOST_CAUSES, lost_column

    rng = np.random.default_rng(0)
    ids = [f"lr{i % 2}_bs64_wd0_seed{i:03d}" if long_ids else f"m{i:03d}" for i in range(n)]
    members = pd.DataFrame({"member": ids, "lr": [0.001, 0.002] * (n // 2),
                            "optimizer": ["adam", "sgd"] * (n // 2),
                            "val_acc": rng.uniform(0.5, 0.95, n)})  # fmt: skip
    epochs = pd.DataFrame([{"member": m, "epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e,
                            "train_acc": 1 - 0.5 / e, "val_acc": 1 - 0.6 / e}
                           for m in ids for e in (1, 2, 3)])  # fmt: skip
    # log losses far from 0: an axis zoomed onto them cuts the bars off at the bottom
    scores = pd.DataFrame({"member": [*ids, "ensemble"], "accuracy": rng.uniform(0.6, 1, n + 1),
                           "log_loss": rng.uniform(0.5, 0.9, n + 1)})  # fmt: skip
    curve = pd.DataFrame({"k": range(1, n + 1), "added": ids, "accuracy": rng.uniform(0.7, 0.9, n),
                          "log_loss": rng.uniform(0.3, 0.5, n)})  # fmt: skip
    calibration = gather.calibration_table(rng.uniform(0, 1, 100), rng.integers(0, 2, 100))
    condor = pd.DataFrame({"member": ids, "committed_seconds": rng.uniform(100, 3000, n),
                           "setup_seconds": 5.0, "uncommitted_seconds": 0.0,
                           "evictions": rng.integers(0, 3, n)})  # fmt: skip
    for cause in LOST_CAUSES:
        condor[lost_column(cause)] = rng.uniform(0, 300, n)
    condor["lost_seconds"] = sum(condor[lost_column(c)] for c in LOST_CAUSES)
    image = np.full((30, 40, 3), 128, dtype=np.uint8)
    samples = [(f"{'a_long_test_image_id_' if long_ids else ''}{i}", image) for i in range(8)]
    # 4 members: FashionMNIST's 10 classes, numbered; 40: 25 classes, normalised, unnumbered
    classes = _classes(10 if n <= 10 else 25)
    return {"members": members, "epochs": epochs, "scores": scores, "curve": curve,
            "calibration": calibration, "condor": condor, "ids": ids, "samples": samples,
            "classes": classes, **_class_frames(rng, ids, classes)}  # fmt: skip


def _figures(n: int, long_ids: bool) -> dict[str, Any]:
    """Every plot of the report, drawn from :func:`_frames` (and their N-class variants)."""
    f = _frames(n, long_ids)
    probs = {fileid: 0.7 for fileid, _ in f["samples"]}
    classes = f["classes"]
    # every class equally likely but the last: "predicted: Ankle boot" (or the 25th class)
    per_class = {fileid: [0.5 / len(classes)] * (len(classes) - 1) + [0.5] for fileid in probs}
    labels = {fileid: i % len(classes) for i, fileid in enumerate(probs)}
    mistakes = f["mistakes"].head(len(f["samples"])).assign(fileid=[i for i, _ in f["samples"]])
    return {
        "confusion_matrix": class_plots.plot_confusion(f["confusion"]),
        "per_class_recall": class_plots.plot_per_class_recall(f["per_class"]),
        "misclassified": image_plots.plot_misclassified(f["samples"], mistakes),
        "calibration (confidence)": plots.plot_calibration(f["confidence"], None),
        "sample_images (classes)": image_plots.plot_sample_images(
            f["samples"], per_class, labels, classes
        ),
        "learning_curves": plots.plot_learning_curves(f["epochs"]),
        "hyperparameters": plots.plot_hyperparameters(f["members"], ["lr", "optimizer"]),
        "ensemble_vs_members": plots.plot_ensemble_vs_members(f["scores"], f["ids"]),
        "ensemble_size": plots.plot_ensemble_size(f["curve"]),
        "calibration": plots.plot_calibration(f["calibration"]),
        "sample_images": image_plots.plot_sample_images(
            f["samples"], probs, dict.fromkeys(probs, 1)
        ),
        "goodput": plots.plot_goodput(f["condor"]),
    }


def _inside(box: Any, outer: Any, slack: float = 1.0) -> bool:
    """Whether ``box`` lies within ``outer`` (pixels, give or take ``slack``)."""
    return (box.x0 >= outer.x0 - slack and box.x1 <= outer.x1 + slack
            and box.y0 >= outer.y0 - slack and box.y1 <= outer.y1 + slack)  # fmt: skip


def _shown(ticks: Any) -> list[Any]:
    """The tick labels an axis draws: inside its view, visible, not empty."""
    low, high = sorted(ticks.get_view_interval())
    pairs = zip(ticks.get_majorticklocs(), ticks.get_majorticklabels(), strict=True)
    return [label for at, label in pairs if low <= at <= high and label.get_visible() and label.get_text()]  # fmt: skip


def _overlap(a: Any, b: Any) -> bool:
    """Whether two boxes share area (touching edges do not count)."""
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize(
    ("n", "long_ids"),
    [
        pytest.param(4, False, id="4 members"),
        pytest.param(40, True, id="40", marks=pytest.mark.slow),
    ],
)
def test_nothing_is_clipped_or_overlaps_and_bars_fit_their_axes(n: int, long_ids: bool) -> None:
    figures = _figures(n, long_ids)
    assert {name.split(" ")[0] for name in figures} == set(plots.PLOTS)  # every plot is checked
    for name, fig in figures.items():
        _assert_laid_out(name, fig)
    # the ensemble's bar keeps its label however many members are thinned out
    assert _shown(figures["ensemble_vs_members"].axes[0].xaxis)[-1].get_text() == "ensemble"


def _assert_laid_out(name: str, fig: Any) -> None:
    """Nothing of the figure is clipped or overlaps, and its bars fit their axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # the PNG's renderer
    fig.draw_without_rendering()
    page = fig.bbox
    titles = [a.title for a in fig.axes if a.title.get_text()]
    for text in [*titles, *(t for legend in fig.legends for t in legend.get_texts())]:
        assert _inside(text.get_window_extent(renderer), page), (name, text.get_text())
    for a, b in combinations(titles, 2):
        assert not _overlap(a.get_window_extent(renderer), b.get_window_extent(renderer)), name
    for axis in fig.axes:
        if not axis.axison:
            continue
        for ticks in (_shown(axis.xaxis), _shown(axis.yaxis)):
            boxes = [t.get_window_extent(renderer) for t in ticks]
            for (i, a), (j, b) in combinations(enumerate(boxes), 2):
                assert not _overlap(a, b), (name, ticks[i].get_text(), ticks[j].get_text())
            for box in boxes:
                assert _inside(box, page), name
        for text in axis.texts:  # the counts in a confusion matrix's cells
            assert _inside(text.get_window_extent(renderer), axis.get_window_extent(renderer)), name
        (x0, x1), (y0, y1) = sorted(axis.get_xlim()), sorted(axis.get_ylim())
        for bar in axis.patches:  # the bars of bar and barh, in data coordinates
            left, bottom = bar.get_x(), bar.get_y()
            right, top = left + bar.get_width(), bottom + bar.get_height()
            assert x0 <= min(left, right) and max(left, right) <= x1 + 1e-9, name
            assert y0 <= min(bottom, top) and max(bottom, top) <= y1 + 1e-9, name


@pytest.mark.parametrize("n", [pytest.param(4, id="4 members"), pytest.param(27, id="27")])
def test_the_search_plots_are_laid_out_like_the_others(n: int) -> None:
    import pandas as pd

    from condorml.monitor import search_plots
    from condorml.monitor.searchview import SearchData
    from condorml.sweep.search import Halving, Search

    search = Search("random", n, "val_acc", halving=Halving(1, 3))
    states = ["complete", "stopped", "stopped", "failed", "running", "waiting"]
    trials = pd.DataFrame({"member": [f"m{i:03d}" for i in range(n)], "order": range(n),
                           "state": [states[i % len(states)] for i in range(n)], "rung": 1,
                           "rungs_done": [1 + i % 3 for i in range(n)], "epochs_trained": 1,
                           "value": [0.5 + i / (3 * n) for i in range(n)]})  # fmt: skip
    epochs = _frames(2 * ((n + 1) // 2), False)["epochs"]  # m000, m001, ...: epochs 1 to 3
    importance = pd.Series({"lr": 0.7, "weight_decay": 0.2, "batch_size": 0.1}).sort_values()
    data = SearchData(search, 9, trials, importance, n)
    figures = {
        "search_history": search_plots.plot_search_history(data),
        "search_curves": search_plots.plot_search_curves(data, epochs),
        "search_importance": search_plots.plot_search_importance(importance),
    }
    assert set(figures) == set(search_plots.SEARCH_PLOTS)  # every search plot is checked
    for name, fig in figures.items():
        _assert_laid_out(name, fig)
    rung_lines = [line for line in figures["search_curves"].axes[0].lines
                  if list(line.get_xdata()) in ([1, 1], [3, 3], [9, 9])]  # fmt: skip
    assert len(rung_lines) == 3  # every rung's epoch is marked


def _xscale(members: Any, name: str, log_scaled: set[str] | None = None) -> str:
    fig = plots.plot_hyperparameters(members, [name], *([log_scaled] if log_scaled else []))
    return fig.axes[0].get_xscale()


def test_learning_rates_and_log_uniform_hyperparameters_get_a_log_axis(tmp_path: Path) -> None:
    import pandas as pd

    # the demo's grid: 0.001 and 0.002, a factor 2 apart, still compared by ratio
    members = _frames(4, False)["members"]
    assert _xscale(members, "lr") == "log"
    ticks = plots.plot_hyperparameters(members, ["lr"]).axes[0].get_xticklabels()
    assert [t.get_text() for t in ticks] == ["0.001", "0.002"]  # the grid's values
    momentum = pd.DataFrame({"member": ["a", "b", "c"], "momentum": [0.5, 0.8, 0.99],
                             "val_acc": [0.6, 0.7, 0.8]})  # fmt: skip
    assert _xscale(momentum, "momentum") == "linear"
    # ... unless the spec draws it from log_uniform (read from the run folder's spec.toml)
    for name in ("train.zip", "test.zip"):
        (tmp_path / name).write_bytes(b"")
    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[data]\ntrain = "train.zip"\ntest = "test.zip"\n'
        "[random]\nsamples = 3\nmomentum = { log_uniform = [0.5, 0.99] }\nlr = [0.001, 0.01]\n"
    )
    assert plots.log_distributed(spec) == {"momentum"}
    assert _xscale(momentum, "momentum", plots.log_distributed(spec)) == "log"
    assert plots.log_distributed(tmp_path / "missing.toml") == set()
    # values two decades apart, all positive: log; with a zero: linear
    spread = momentum.assign(momentum=[1e-6, 1e-5, 1e-4])
    assert _xscale(spread, "momentum") == "log"
    assert _xscale(spread.assign(momentum=[0.0, 1e-5, 1e-4]), "momentum") == "linear"


def test_a_run_of_many_members_draws_a_bounded_number_of_bars_and_curve_points() -> None:
    """At 1,000 members a bar per member made the report's pictures unreadable (a goodput plot
    350 inches tall) and most of its time; each draws 50 chosen members, the curve ~100 sizes."""
    import numpy as np
    import pandas as pd

    from condorml.monitor.scoring import curve_sizes, ensemble_curve

    members = [f"m{i:04d}" for i in range(120)]
    scores = pd.DataFrame({"member": [*members, "ensemble"],
                           "accuracy": np.linspace(0.5, 0.9, 121), "log_loss": 0.5})  # fmt: skip
    fig = plots.plot_ensemble_vs_members(scores, members)
    assert [len(axis.patches) for axis in fig.axes] == [plots.MEMBER_BARS + 1] * 2
    lost = np.zeros(120)
    lost[[3, 77, 119]] = [5.0, 9.0, 1.0]
    condor = pd.DataFrame({"member": members, "lost_seconds": lost, "evictions": 0})
    shown = plots.goodput_shown(condor)
    assert len(shown) == plots.MEMBER_BARS and list(shown["member"]) == sorted(shown["member"])
    assert {"m0003", "m0077", "m0119"} <= set(shown["member"])
    assert curve_sizes(40) == set(range(1, 41))
    sizes = curve_sizes(1000)
    assert len(sizes) <= 100 and {1, 2, 25, 1000} <= sizes
    rng = np.random.default_rng(0)
    probs = {m: rng.random(10) for m in members}
    curve = ensemble_curve(probs, rng.integers(0, 2, 10), members)
    assert list(curve["k"]) == sorted(curve_sizes(120)) and curve["k"].iloc[-1] == 120
