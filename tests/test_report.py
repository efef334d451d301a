"""condorml report: tables, plots and one HTML page a user opens after a sweep, finished or not."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

import pytest
from typer.testing import CliRunner

from condorml.cli import app
from condorml.htcondor.events import Event
from condorml.monitor.plots import PLOTS
from condorml.monitor.report import ReportResult, make_report
from condorml.monitor.scoring import calibration_table, confidence_table, ensemble_curve
from condorml.sweep.accounting import job_time, read_job_times
from tests.helpers import condorml_cli

FIXTURES = Path(__file__).parent / "fixtures" / "htcondor"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MEMBERS = ["m000", "m001", "m002", "m003"]


# --- HTCondor time accounting ------------------------------------------------------------------


def test_committed_and_lost_time_of_a_real_checkpointed_and_evicted_job() -> None:
    jobs, times = read_job_times([FIXTURES / "checkpoint" / "ckpt.log"])
    (job,) = jobs
    spent = times[job.key]
    # 001 16:46:27, checkpoint 16:46:33 (6 s committed), evicted 16:46:37 (4 s lost);
    # 001 16:46:42, checkpoint 16:46:49 (7 s), final output and 005 at 16:46:55 (6 s)
    assert (spent.committed, spent.lost, spent.uncommitted) == (19.0, 4.0, 0.0)
    history = (FIXTURES / "checkpoint" / "history.ad").read_text()
    wall = float(re.search(r"^RemoteWallClockTime = ([\d.]+)", history, re.M).group(1))
    assert spent.execution == wall == 23.0  # the pool's own total execution time agrees
    assert (job.runs, job.checkpoints, job.evictions) == (2, 2, 1)


def test_lost_time_is_split_by_cause_and_a_removal_loses_the_checkpoints_too() -> None:
    from htcondor2 import FileTransferEventType as F
    from htcondor2 import JobEventType as T

    run = lambda at: Event(T.EXECUTE, at)  # noqa: E731
    back = lambda at: Event(T.FILE_TRANSFER, at, F.OUT_FINISHED)  # noqa: E731
    # a run, a checkpoint at 10, held at 15 (the spool keeps it), released: run at 20, checkpoint
    held = [run(0), back(10), Event(T.FILE_TRANSFER, 12, F.OUT_STARTED), Event(T.JOB_HELD, 15),
            Event(T.JOB_RELEASED, 18), run(20), back(22)]  # fmt: skip
    spent = job_time(held, now=22)
    assert (spent.committed, spent.lost_to["hold"], spent.uncommitted) == (12.0, 5.0, 0.0)
    # ... then removed (condor_rm deletes the spool): what it had committed is lost with it
    removed = job_time([*held, Event(T.JOB_ABORTED, 26)])
    assert (removed.committed, removed.lost, removed.execution) == (0.0, 21.0, 21.0)
    assert removed.lost_to == {"eviction": 0.0, "hold": 5.0, "removal": 16.0, "failure": 0.0}
    # a failed job: its checkpoints came back with its output, the work after them did not
    failed = job_time([run(0), back(10), back(14), Event(T.JOB_TERMINATED, 14, return_value=1)])
    assert (failed.committed, failed.lost_to["failure"]) == (10.0, 4.0)
    # a run starts with its input transfer: until execution it is set-up, not committed
    transfer_in = [
        Event(T.FILE_TRANSFER, 0, F.IN_STARTED),
        Event(T.FILE_TRANSFER, 1, F.IN_FINISHED),
    ]
    moved = job_time([*transfer_in, run(5), Event(T.JOB_TERMINATED, 15)])
    assert (moved.committed, moved.setup, moved.execution) == (10.0, 5.0, 15.0)
    running = job_time([run(100), back(130), Event(T.IMAGE_SIZE, 140)], now=150)
    assert (running.committed, running.lost, running.uncommitted) == (30.0, 0.0, 20.0)
    # an output transfer while the job is not running (after an eviction) commits nothing
    assert job_time([run(0), Event(T.JOB_EVICTED, 5), back(6)]).committed == 0.0


def _removed_and_rerun(run_dir: Path) -> None:
    """A member's training removed by a Ctrl-C of ``condorml run`` after two checkpoints (its
    spool deleted with it), then a new job that started over from epoch 0 and finished."""
    from condorml.backends.local.eventlog import EventLog, JobId

    (run_dir / "members" / "m000").mkdir(parents=True)
    (run_dir / "members.csv").write_text("member,seed\nm000,0\n")
    log, nodes = run_dir / "members" / "m000" / "train.log", run_dir / "sweep.dag.nodes.log"

    def job(cluster: int, start: int, checkpoints: tuple[int, ...], end: int, removed: bool):
        events = EventLog([log], JobId(cluster), "train_m000", nodes)
        clock = [start]
        events.clock = lambda: clock[0]
        events.submitted()
        events.transfer("input", finished=False)
        clock[0] += 1
        events.transfer("input", finished=True)
        events.executing(run_dir, 1, 128)
        for at in (*checkpoints, end):
            clock[0] = start + at
            if at == end and removed:
                events.evicted("Claim deactivated (the job was removed)")
                events.aborted("via condorml run (DAG interrupted or aborted)")
                return
            events.transfer("output", finished=False)
            events.transfer("output", finished=True)
        events.terminated(0)

    job(1, 1000, (61, 121), 134, removed=True)
    job(3, 2000, (61,), 101, removed=False)


def test_after_a_removal_the_lost_time_is_the_removals_with_the_checkpoints_it_deleted(
    tmp_path: Path,
) -> None:
    """It said "0 evictions; 13 s lost to evictions" and counted the deleted checkpoints'
    120 s as committed (goodput 0.94 for a member that started over)."""
    from condorml.monitor.gather import gather
    from condorml.monitor.report import render_html

    _removed_and_rerun(tmp_path)
    data = gather(tmp_path, use_defaults=False)
    row = data.condor.set_index("member").loc["m000"]
    assert (row["runs"], row["checkpoints"], row["evictions"]) == (2, 3, 0)
    assert (row["committed_seconds"], row["setup_seconds"]) == (100.0, 2.0)
    assert (row["lost_removal_seconds"], row["lost_eviction_seconds"]) == (133.0, 0.0)
    assert row["lost_seconds"] == 133.0 and row["goodput"] == pytest.approx(100 / 235)
    summary = re.search(r"<li>(Training jobs.*?)</li>", render_html(data, [], [], [])).group(1)
    assert summary == (
        "Training jobs of 1 member(s), in all: 2 runs, 3 checkpoints, 0 evictions; 235 s on "
        "execute points, 133 s (56.6%) lost (133 s to removals)."
    )


def test_ensemble_size_curve_adds_members_best_first_and_calibration_bins() -> None:
    import pandas as pd

    probs = pd.DataFrame({"a": [0.95, 0.0, 0.6, 0.4], "b": [0.1, 0.9, 0.8, 0.3]})
    y = [1, 0, 1, 0]
    curve = ensemble_curve(probs, y, ["b", "a"])
    assert curve["added"].tolist() == ["b", "a"]
    assert curve["accuracy"].tolist() == [0.5, 1.0]  # b alone, then the mean of b and a
    table = calibration_table([0.05, 0.07, 0.95, 1.0], [0, 1, 1, 1])
    assert table[["images", "fraction_dogs"]].values.tolist() == [[2, 0.5], [2, 1.0]]
    assert table["mean_prob"].tolist() == pytest.approx([0.06, 0.975])
    # N classes: the probability of the predicted class against the fraction predicted right
    probs = [[0.5, 0.3, 0.2], [0.1, 0.55, 0.35], [0.05, 0.05, 0.9], [0.2, 0.2, 0.6]]
    table = confidence_table(probs, [0, 2, 2, 1])
    assert table[["images", "fraction_correct"]].values.tolist() == [[2, 0.5], [1, 0.0], [1, 1.0]]
    assert table["mean_confidence"].tolist() == pytest.approx([0.525, 0.6, 0.9])


def test_a_folder_that_is_not_a_run_is_one_line_exit_2(tmp_path: Path) -> None:
    # (that `report --help` imports no heavy module is tested with every command in test_cli)
    proc = condorml_cli("report", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"condorml: error: {tmp_path}: no members.csv; not a sweep run folder (condorml sweep writes one)"
    )


# --- a real small run ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-member demo sweep (2 learning rates x 2 seeds), run on the local backend."""
    from condorml.sweep.demo import run_demo

    result = run_demo(
        tmp_path_factory.mktemp("demo"), n_train=64, n_test=10, epochs=2, image_size=48
    )
    assert result.exit_code == 0
    return result.run_dir


@pytest.fixture(scope="module")
def report(run_dir: Path) -> ReportResult:
    return make_report(run_dir)


@pytest.mark.slow
def test_a_finished_run_gets_every_plot_and_table(run_dir: Path, report: ReportResult) -> None:
    import pandas as pd

    out = run_dir / "report"
    assert report.html == out / "report.html"
    assert report.plots == _expected_plots(out)  # every plot, in page order
    for name in report.plots:
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # nothing is missing but what the report says (the run has its labels and images)
    assert report.missing == []

    leaderboard = pd.read_csv(out / "leaderboard.csv", dtype={"member": str})
    assert sorted(leaderboard["member"]) == MEMBERS
    members = pd.read_csv(out / "members.csv", dtype={"member": str})
    assert len(members) == 8 and set(members["epoch"]) == {1, 2}  # 4 members x 2 epochs
    assert {"lr", "seed", "val_acc", "train_loss", "lr_epoch"} <= set(members.columns)

    # the ensemble's scores are the collect step's (metrics.json), and the curve ends there
    scores = pd.read_csv(out / "scores.csv").set_index("member")
    collected = json.loads((run_dir / "metrics.json").read_text())
    assert scores.at["ensemble", "accuracy"] == pytest.approx(collected["accuracy"])
    assert scores.at["ensemble", "log_loss"] == pytest.approx(collected["log_loss"])
    curve = pd.read_csv(out / "ensemble_size.csv", dtype={"added": str})
    assert curve["k"].tolist() == [1, 2, 3, 4]
    assert curve["log_loss"].iloc[-1] == pytest.approx(collected["log_loss"])
    first = leaderboard.sort_values(["val_loss", "member"]).iloc[0]
    assert curve["added"].iloc[0] == first["member"]  # best first by the run's metric
    # cat/dog gets the per-class tables too: the collect step's confusion matrix, 2 x 2
    confusion = pd.read_csv(out / "confusion.csv", index_col="true")
    assert confusion.index.tolist() == confusion.columns.tolist() == ["cat", "dog"]
    assert confusion.values.tolist() == collected["confusion"]
    per_class = pd.read_csv(out / "per_class.csv", dtype={"member": str})
    assert set(per_class["member"]) == {*MEMBERS, "ensemble"}

    condor = pd.read_csv(out / "htcondor.csv", dtype={"member": str})
    assert condor["member"].tolist() == MEMBERS
    assert (condor["state"] == "done").all() and (condor["evictions"] == 0).all()
    assert (condor["committed_seconds"] == condor["execution_seconds"]).all()
    assert (condor["checkpoints"] == 1).all()  # epoch 1's exit 85; epoch 2 is the final output

    page = report.html.read_text()
    for member in MEMBERS:
        assert f"<td>{member}</td>" in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch


@pytest.mark.slow
def test_the_command_writes_where_asked_and_says_so(
    run_dir: Path, report: ReportResult, tmp_path: Path
) -> None:
    result = CliRunner().invoke(app, ["report", str(run_dir), "--output", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'r' / 'report.html'} ({len(report.plots)} plot(s))" in result.output
    assert (tmp_path / "r" / "report.html").exists()
    assert not list((tmp_path / "r").glob(".tmp-*"))  # atomic writes left nothing behind
    missing = CliRunner().invoke(app, ["report", str(run_dir), "--labels", str(tmp_path / "no.csv")])  # fmt: skip
    assert missing.exit_code == 2 and "--labels" in missing.output


@pytest.mark.slow
def test_a_partial_run_shows_what_exists_and_says_what_is_missing(
    run_dir: Path, tmp_path: Path
) -> None:
    import pandas as pd

    partial = tmp_path / "run"
    shutil.copytree(run_dir, partial, ignore=shutil.ignore_patterns(".condorml-local", "report"))
    shutil.copytree(run_dir.parent / "data", tmp_path / "data")  # where the run's files point
    (partial / "members" / "m003" / "out" / "dog_probs.csv").unlink()  # lost after the job
    (partial / "members" / "m002" / "ckpt" / "metrics.csv").unlink()
    shutil.rmtree(partial / "members" / "m001")  # nothing came back yet
    for name in ("leaderboard.csv", "dog_probs.csv", "metrics.json", "sweep.dag.nodes.log"):
        (partial / name).unlink()  # the collect step has not run; the DAG's log is gone

    report = make_report(partial)
    missing = "\n".join(report.missing)
    # the cause from the job's log, not a guess: its inference job did end well
    assert "m003: no predictions (inference finished but wrote no predictions)" in missing
    assert "m002: no training metrics" in missing
    assert "m001: no member folder" in missing and missing.count("m001:") == 1  # one note
    assert "no training job of m001 in the event logs" in missing

    out = partial / "report"
    leaderboard = pd.read_csv(out / "leaderboard.csv", dtype={"member": str}).set_index("member")
    assert sorted(leaderboard.index) == MEMBERS  # every member, finished or not
    assert leaderboard.at["m000", "status"] == "ok"
    assert leaderboard.at["m003", "status"].startswith("missing: no predictions")
    curve = pd.read_csv(out / "ensemble_size.csv", dtype={"added": str})
    assert sorted(curve["added"]) == ["m000", "m002"]  # the members with predictions
    condor = pd.read_csv(out / "htcondor.csv", dtype={"member": str}).set_index("member")
    assert condor.at["m001", "state"] == "not submitted"
    assert condor.at["m000", "state"] == "done"  # the jobs' own logs, without DAGMan's
    assert condor.at["m000", "checkpoints"] == leaderboard.at["m000", "checkpoints"] > 0
    page = report.html.read_text()
    assert "m003: no predictions (inference finished but wrote no predictions)" in page
    assert 'id="plot-learning_curves"' in page and 'id="plot-ensemble_size"' in page


def _expected_plots(out: Path) -> list[str]:
    """Every plot, in page order; the misclassified images only when the ensemble made a mistake
    (a tiny run may make none)."""
    import pandas as pd

    wrong = len(pd.read_csv(out / "misclassified.csv"))
    return [name for name in PLOTS if name != "misclassified" or wrong]


# --- N classes ----------------------------------------------------------------------------------

SHAPES_SPEC = """\
[data]
train = "data/train.zip"
test = "data/test.zip"

[train]
model = "cnn"
image_size = 40
epochs = 1
batch_size = 16

[grid]
lr = [0.001, 0.003]

[ensemble]
members = 1

[resources]
cpus = 1
memory = "1GB"
disk = "1GB"
"""


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-member sweep of 3 shape classes in class folders, run on the local backend;
    its test set is in class folders too, so it carries its labels (no labels file)."""
    from condorml.backends import choose_backend
    from condorml.job.synth import make_synthetic_dataset
    from condorml.sweep.plan import plan_sweep, write_sweep

    out = tmp_path_factory.mktemp("shapes")
    make_synthetic_dataset(out / "data", n_train=48, n_test=12, size=(40, 40), classes=3,
                           layout="folders", test_layout="folders", make_zips=True)  # fmt: skip
    (out / "spec.toml").write_text(SHAPES_SPEC)
    plan = plan_sweep(out / "spec.toml", out / "run")
    write_sweep(plan)
    handle = choose_backend("local").submit_dag(plan.dag_file)
    handle.wait()
    assert handle.result.exit_code == 0
    return out / "run"


def _folder_truth(test_zip: Path) -> dict[str, str]:
    """The true class of each test image: its folder (``test/<class>/<id>.jpg``)."""
    with zipfile.ZipFile(test_zip) as archive:
        names = [PurePosixPath(n) for n in archive.namelist() if n.endswith(".jpg")]
    return {name.stem: name.parent.name for name in names}


def _predicted(csv: Path) -> tuple[list[str], dict[str, str]]:
    """A probs.csv's classes and each image's most probable class, from the file itself."""
    import pandas as pd

    frame = pd.read_csv(csv, dtype={"fileid": str}).set_index("fileid")
    classes = list(frame.columns[1:])  # fileid, predicted, then a column per class
    return classes, frame[classes].idxmax(axis=1).to_dict()


@pytest.mark.slow
def test_a_three_class_run_shows_its_confusion_matrix_recall_per_class_and_mistakes(
    shapes_run: Path,
) -> None:
    import pandas as pd
    from sklearn.metrics import confusion_matrix, recall_score

    from condorml.monitor.class_plots import plot_confusion
    from condorml.monitor.gather import gather
    from condorml.monitor.image_plots import plot_misclassified
    from condorml.monitor.testimages import images_by_id

    report = make_report(shapes_run)
    out = shapes_run / "report"
    # the test set's own labels score it, as in the collect step: nothing is missing
    assert report.missing == []
    assert report.plots == _expected_plots(out)
    assert {"confusion_matrix", "per_class_recall", "calibration"} <= set(report.plots)

    truth = _folder_truth(shapes_run.parent / "data" / "test.zip")
    classes, ensemble = _predicted(shapes_run / "probs.csv")
    ids = sorted(truth, key=int)
    y_true, y_pred = [truth[i] for i in ids], [ensemble[i] for i in ids]
    expected = confusion_matrix(y_true, y_pred, labels=classes)
    confusion = pd.read_csv(out / "confusion.csv", index_col="true")
    assert confusion.index.tolist() == confusion.columns.tolist() == classes
    assert confusion.values.tolist() == expected.tolist()
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = gather(shapes_run)
    picture = plot_confusion(data.confusion)  # the numbers in its cells, row by row
    cells = [
        [int(t.get_text()) for t in picture.axes[0].texts][i * 3 : i * 3 + 3] for i in range(3)
    ]
    assert cells == expected.tolist()

    per_class = pd.read_csv(out / "per_class.csv", dtype={"member": str})
    recall = per_class.pivot(index="class", columns="member", values="recall").loc[classes]
    assert recall["ensemble"].tolist() == pytest.approx(
        recall_score(y_true, y_pred, labels=classes, average=None, zero_division=0).tolist()
    )
    for member in ("m000", "m001"):
        _, own = _predicted(shapes_run / "members" / member / "out" / "probs.csv")
        assert recall[member].tolist() == pytest.approx(recall_score(
            y_true, [own[i] for i in ids], labels=classes, average=None, zero_division=0
        ).tolist())  # fmt: skip

    scores = pd.read_csv(out / "scores.csv", dtype={"member": str}).set_index("member")
    assert list(scores.columns) == ["accuracy", "log_loss", "macro_f1", "images"]  # no AUC, top-5
    collected = json.loads((shapes_run / "metrics.json").read_text())
    assert scores.at["ensemble", "accuracy"] == pytest.approx(collected["accuracy"])
    assert scores.at["ensemble", "macro_f1"] == pytest.approx(collected["macro_f1"])

    wrong = pd.read_csv(out / "misclassified.csv", dtype={"fileid": str})
    assert sorted(wrong["fileid"], key=int) == [i for i in ids if truth[i] != ensemble[i]]
    assert all(wrong["true"] == wrong["fileid"].map(truth))
    assert all(wrong["predicted"] == wrong["fileid"].map(ensemble))
    if len(wrong):  # titled with the true and the predicted class names
        samples, notes = images_by_id(data.images, list(wrong["fileid"]))
        assert notes == [] and [i for i, _ in samples] == list(wrong["fileid"])
        titles = [a.title.get_text() for a in plot_misclassified(samples, wrong).axes if a.images]
        for title, row in zip(titles, wrong.itertuples(), strict=True):
            assert title.startswith(f"{row.fileid}\ntrue: {row.true}\npredicted: {row.predicted} ")

    page = report.html.read_text()
    assert f"<li>3 classes: {', '.join(classes)}.</li>" in page
    assert 'id="per-class-table"' in page and 'id="plot-confusion_matrix"' in page


@pytest.mark.slow
def test_the_report_of_a_partial_three_class_run(shapes_run: Path, tmp_path: Path) -> None:
    import pandas as pd

    partial = tmp_path / "run"
    shutil.copytree(shapes_run, partial, ignore=shutil.ignore_patterns(".condorml-local", "report"))
    shutil.copytree(shapes_run.parent / "data", tmp_path / "data")  # where the run's files point
    (partial / "members" / "m001" / "out" / "probs.csv").unlink()  # lost after the job
    for name in ("leaderboard.csv", "probs.csv", "probs.csv.json", "metrics.json"):
        (partial / name).unlink()  # the collect step has not run

    report = make_report(partial)
    assert "m001: no predictions (inference finished but wrote no predictions)" in report.missing
    out = partial / "report"
    scores = pd.read_csv(out / "scores.csv", dtype={"member": str})
    assert scores["member"].tolist() == ["m000", "ensemble"]  # the member with predictions
    per_class = pd.read_csv(out / "per_class.csv", dtype={"member": str})
    assert sorted(set(per_class["member"])) == ["ensemble", "m000"]
    assert {"confusion_matrix", "per_class_recall", "sample_images"} <= set(report.plots)


def _labelled_run(root: Path, classes: list[str]) -> tuple[Path, dict[str, int]]:
    """A run folder as two members' inference left it (no training files, no collect step): a
    test set in class folders whose file names repeat (ids ``<class>/<n>``), each class's
    images of their own grey; every member right on ``<class>/1`` and wrong on ``<class>/2``
    (taken for the next class)."""
    from PIL import Image

    from condorml.results.predictions import prediction_writer, write_sidecar
    from condorml.sweep.rundir import DataPath, RunInfo, write_run_info

    greys = {}
    for c, name in enumerate(classes):
        (root / "test" / name).mkdir(parents=True)
        greys[name] = 20 + 40 * c
        for n in (1, 2):
            Image.new("RGB", (24, 24), (greys[name],) * 3).save(root / "test" / name / f"{n}.png")
    run = root / "run"
    members = ("m000", "m001")
    for k, member in enumerate(members):
        out = run / "members" / member / "out"
        out.mkdir(parents=True)
        with prediction_writer(out / "probs.csv", False, classes) as write:
            for c, name in enumerate(classes):
                for n, guess in ((1, c), (2, (c + 1) % len(classes))):
                    sure = 0.6 + 0.1 * k
                    probs = [0.0] * len(classes)
                    probs[guess] = sure
                    if guess != c:  # the true class a close second: in the top 5
                        probs[c] = (1 - sure) / 2
                    others = [i for i in range(len(classes)) if i not in (c, guess)]
                    share = (1 - sum(probs)) / len(others)
                    for i in others:
                        probs[i] = share
                    write(f"{name}/{n}", probs)
        write_sidecar(out / "probs.csv", {"classes": classes,
                                          "images": {"layout": "folders", "labelled": True}})  # fmt: skip
    (run / "members.csv").write_text("member,seed\n" + "".join(f"{m},{i}\n" for i, m in enumerate(members)))  # fmt: skip
    test = DataPath("../../../test", str(root / "test"))
    write_run_info(run, RunInfo("0" * 64, members, 1, {"test": test}))
    return run, greys


def test_a_labelled_test_set_whose_names_repeat_is_scored_and_its_mistakes_shown(
    tmp_path: Path,
) -> None:
    """Six classes named as torchvision names MNIST's; ids are paths below the test set's root
    (``0 - zero/2``): the misclassified images are those files, not any ``2.png``."""
    import numpy as np
    import pandas as pd

    from condorml.monitor.gather import gather
    from condorml.monitor.image_plots import plot_misclassified
    from condorml.monitor.testimages import images_by_id

    classes = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five"]
    run, greys = _labelled_run(tmp_path, classes)
    data = gather(run)
    assert data.classes == tuple(classes)
    assert data.scores is not None and data.mistakes is not None  # labels: the test set's own
    scores = data.scores.set_index("member")
    assert "top5_accuracy" in scores and "roc_auc" not in scores  # 6 classes
    assert scores.at["ensemble", "accuracy"] == 0.5
    assert scores.at["ensemble", "top5_accuracy"] == 1.0  # each second guess is in the top 5
    recall = data.per_class.set_index(["member", "class"])["recall"]
    assert recall.loc["ensemble"].tolist() == [0.5] * 6
    assert data.confusion.values.tolist() == (np.eye(6, dtype=int) + np.roll(np.eye(6, dtype=int), 1, axis=1)).tolist()  # fmt: skip
    pairs = data.confused_pairs
    assert pairs[["true", "predicted", "images"]].values.tolist()[0] == ["0 - zero", "1 - one", 1]

    assert set(data.mistakes["fileid"]) == {f"{name}/2" for name in classes}
    samples, notes = images_by_id(data.images, list(data.mistakes["fileid"]))
    assert notes == [] and len(samples) == 6
    for fileid, image in samples:  # each one the file of its class folder
        assert image.getpixel((5, 5)) == (greys[fileid.split("/")[0]],) * 3
    titles = [
        a.title.get_text() for a in plot_misclassified(samples, data.mistakes).axes if a.images
    ]
    assert "0 - zero/2\ntrue: 0 - zero\npredicted: 1 - one 0.650" in titles  # mean of 0.6, 0.7

    report = make_report(run)
    assert {"confusion_matrix", "per_class_recall", "misclassified", "sample_images"} <= set(report.plots)  # fmt: skip
    out = run / "report"
    assert pd.read_csv(out / "confusion.csv", index_col="true").values.trace() == 6
    assert len(pd.read_csv(out / "misclassified.csv")) == 6
    assert pd.read_csv(out / "confused_pairs.csv")["fraction_of_true"].tolist()[0] == 0.5


def test_the_images_of_a_torchvision_test_set_are_found_by_their_index(tmp_path: Path) -> None:
    """MNIST's files hold pixels, not image files: an image's id is its index in the split."""
    from condorml.monitor.testimages import images_by_id, sample_images
    from tests.torchvision_files import write_root

    write_root(tmp_path / "mnist", "mnist", n_train=20, n_test=12)
    samples, notes = sample_images(tmp_path / "mnist", limit=3)
    assert notes == [] and [i for i, _ in samples] == ["0", "1", "2"]  # id order, numerically
    assert all(image.mode == "RGB" and image.size == (28, 28) for _, image in samples)
    found, _ = images_by_id(tmp_path / "mnist", ["11", "3", "no such id"])
    assert [i for i, _ in found] == ["11", "3"]


# --- the page in a real browser -----------------------------------------------------------------

_PAGE_FACTS = """(() => ({
  leaderboard: [...document.querySelectorAll('#leaderboard-table tbody tr')]
    .map(tr => tr.cells[0].textContent.trim()),
  images: [...document.images].map(i => ({alt: i.alt, loaded: i.complete && i.naturalWidth > 0})),
}))()"""


def inspect_page(page: Path, timeout: float = 30) -> dict:
    """Open ``page`` in headless Chromium (DevTools protocol); its errors, leaderboard and images.

    Errors are uncaught exceptions, console errors and browser log errors (a blocked or failed
    resource), collected from before the navigation until after the load event.
    """
    import websocket  # websocket-client, in the test extra

    # Chromium's helper processes may still write to the profile after the browser exits
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        browser = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            port_file, deadline = Path(profile) / "DevToolsActivePort", time.monotonic() + timeout
            while len(lines := _lines(port_file)) < 2:
                assert browser.poll() is None, f"chromium exited with {browser.returncode}"
                assert time.monotonic() < deadline, "chromium opened no DevTools port"
                time.sleep(0.05)
            with urllib.request.urlopen(f"http://127.0.0.1:{lines[0]}/json/list") as answer:
                target = next(t for t in json.load(answer) if t["type"] == "page")
            ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=timeout)
            try:
                return _drive(ws, page.resolve().as_uri(), deadline)
            finally:
                ws.close()
        finally:
            browser.terminate()
            try:
                browser.wait(10)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait()


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _drive(ws, url: str, deadline: float) -> dict:
    errors: list[str] = []
    calls = iter(range(1, 1000))

    def note(message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))  # fmt: skip
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(params["entry"]["text"])

    def call(method: str, **params) -> dict:
        ident = next(calls)
        ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while time.monotonic() < deadline:
            message = json.loads(ws.recv())
            if message.get("id") == ident:
                assert "error" not in message, message
                return message["result"]
            note(message)
        raise AssertionError(f"no answer to {method}")

    for domain in ("Runtime", "Log", "Page"):
        call(f"{domain}.enable")
    call("Page.navigate", url=url)
    while time.monotonic() < deadline:  # until the page and its images loaded
        message = json.loads(ws.recv())
        note(message)
        if message.get("method") == "Page.loadEventFired":
            break
    facts = call("Runtime.evaluate", expression=_PAGE_FACTS, returnByValue=True)
    return {**facts["result"]["value"], "errors": errors}


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (CI installs Debian's chromium package)"
)


@pytest.mark.slow
@needs_chromium
def test_the_page_opens_in_a_browser_without_errors_showing_the_leaderboard_and_every_plot(
    report: ReportResult,
) -> None:
    facts = inspect_page(report.html)
    assert facts["errors"] == []
    assert sorted(facts["leaderboard"]) == MEMBERS
    assert [image["alt"] for image in facts["images"]] == [PLOTS[name] for name in report.plots]
    assert all(image["loaded"] for image in facts["images"]), facts["images"]


@pytest.mark.slow
@needs_chromium
def test_the_browser_check_catches_a_broken_plot_and_a_resource_from_the_network(
    report: ReportResult, tmp_path: Path
) -> None:
    page = report.html.read_text()
    broken = tmp_path / "broken.html"
    payload = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page).group(1)
    garbage = base64.b64encode(b"not a png").decode()
    broken.write_text(page.replace(payload, garbage, 1))
    facts = inspect_page(broken)
    assert [image["loaded"] for image in facts["images"]].count(False) == 1

    online = tmp_path / "online.html"
    online.write_text(page.replace("</body>", '<img src="https://example.invalid/x.png"></body>'))
    facts = inspect_page(online)  # the page's policy refuses it: nothing is fetched, an error shows
    assert facts["errors"] and "example.invalid" in " ".join(facts["errors"])
