"""Evaluation numbers on a case checked by hand, what evaluate refuses, and merge's exactness."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from condorml.errors import CondormlError
from condorml.results.evaluate import evaluate_file, roc_auc
from tests.helpers import condorml_cli

# Truth 1, 0, 0, 1 with P(dog) 0.9, 0.2, 0.6, 0.4: at 0.5 the predictions are 1, 0, 1, 0.
PREDICTIONS = "fileid,prob\n1,0.9\n2,0.2\n3,0.6\n4,0.4\n"
LABELS = "fileid,is_dog\n1,1\n2,0\n3,0\n4,1\n5,1\n"  # 5 has no prediction (an undecodable image)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "p.csv").write_text(PREDICTIONS)
    (tmp_path / "l.csv").write_text(LABELS)
    return tmp_path / "p.csv", tmp_path / "l.csv"


def test_hand_checked_scores(files: tuple[Path, Path], tmp_path: Path) -> None:
    scores = evaluate_file(*files, output=tmp_path / "metrics.json")
    assert scores.n == 4 and scores.missing_predictions == 1
    assert scores.accuracy == 0.5  # right on 1 and 2
    # -(ln 0.9 + ln 0.8 + ln 0.4 + ln 0.4) / 4
    assert scores.log_loss == pytest.approx(
        -(math.log(0.9) + math.log(0.8) + 2 * math.log(0.4)) / 4
    )
    # dog/cat pairs ranked right: (0.9, 0.2), (0.9, 0.6), (0.4, 0.2); wrong: (0.4, 0.6)
    assert scores.roc_auc == 0.75
    assert scores.confusion == [[1, 1], [1, 1]]  # [[TN, FP], [FN, TP]]
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["accuracy"] == 0.5 and written["confusion"] == [[1, 1], [1, 1]]


def test_auc_counts_ties_as_half_and_is_undefined_for_one_class() -> None:
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert roc_auc([1, 1], [0.2, 0.9]) is None


def test_a_subset_either_way_scores_the_overlap_and_records_the_coverage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "p.csv").write_text("fileid,prob\n1,0.9\n2,0.2\n7,0.1\n")  # 7: no label
    (tmp_path / "l.csv").write_text("fileid,is_dog\n1,1\n2,0\n3,1\n")  # 3: no prediction
    scores = evaluate_file(tmp_path / "p.csv", tmp_path / "l.csv", tmp_path / "m.json")
    assert scores.n == 2 and scores.accuracy == 1.0 and scores.roc_auc == 1.0
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["missing_predictions"] == 1 and written["unlabelled_predictions"] == 1
    assert "1 of 3 labelled image(s) have no prediction" in caplog.text
    assert "1 of 3 prediction(s) have no label" in caplog.text
    (tmp_path / "q.csv").write_text("fileid,prob\n8,0.9\n")
    with pytest.raises(CondormlError, match="no image has both a prediction"):
        evaluate_file(tmp_path / "q.csv", tmp_path / "l.csv")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("1,0.9\n2,1.5\n", r"p.csv: line 3, fileid 2: prob 1.5 is not a probability"),
        ("1,nan\n2,0.2\n", r"p.csv: line 2, fileid 1: prob nan is not a probability"),
        ("1,-0.1\n", r"fileid 1: prob -0.1 is not a probability"),
        ("1,0.9\n2,0.2\n1,0.8\n", r"p.csv: fileid 1 is given more than once"),
    ],
)
def test_impossible_probabilities_and_duplicate_ids_are_refused(
    tmp_path: Path, rows: str, message: str
) -> None:
    (tmp_path / "p.csv").write_text("fileid,prob\n" + rows)
    (tmp_path / "l.csv").write_text(LABELS)
    with pytest.raises(CondormlError, match=message):
        evaluate_file(tmp_path / "p.csv", tmp_path / "l.csv")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("1,1\n2,x\n", r"--labels \S*l.csv: line 3, fileid 2: is_dog 'x' must be 0 or 1"),
        ("1,1\n2,\n", r"line 3, fileid 2: is_dog '' must be 0 or 1"),
        ("1,1\n2,0\n2,1\n4,0\n4,1\n", r"2 fileids are given more than once \(2, 4\)"),
    ],
)
def test_bad_and_duplicate_labels_are_refused(tmp_path: Path, rows: str, message: str) -> None:
    (tmp_path / "p.csv").write_text(PREDICTIONS)
    (tmp_path / "l.csv").write_text("fileid,is_dog\n" + rows)
    with pytest.raises(CondormlError, match=message):
        evaluate_file(tmp_path / "p.csv", tmp_path / "l.csv")


def test_a_zip_or_folder_where_a_csv_belongs_is_one_line(synth: Path, tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text(PREDICTIONS)
    for predictions, labels, message in (
        (synth / "test.zip", synth / "test_labels.csv", "test.zip: a zip archive"),
        (tmp_path / "p.csv", synth / "test.zip", "--labels .*test.zip: a zip archive"),
        (synth / "test", synth / "test_labels.csv", "test: is a folder, not a CSV"),
    ):
        with pytest.raises(CondormlError, match=message):
            evaluate_file(predictions, labels)


def test_cli_prints_and_writes_the_scores(files: tuple[Path, Path], tmp_path: Path) -> None:
    proc = condorml_cli(
        "evaluate", str(files[0]), "--labels", str(files[1]), "-o", str(tmp_path / "m.json")
    )
    assert proc.returncode == 0, proc.stderr
    assert "accuracy  0.5000" in proc.stdout and "ROC AUC   0.7500" in proc.stdout
    assert (tmp_path / "m.json").exists()
    bad = condorml_cli("evaluate", str(files[0]), "--labels", str(tmp_path / "nope.csv"))
    assert bad.returncode == 2 and "no such file" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("/proc/m.json", "--output /proc/m.json: cannot write in /proc"),
        ("{p}/m.json", "is a file, not a folder"),
        ("{tmp}", "is a folder; give a file name"),
    ],
)
def test_an_unwritable_output_is_refused_before_scoring(
    files: tuple[Path, Path], tmp_path: Path, output: str, message: str
) -> None:
    with pytest.raises(CondormlError, match=message):
        evaluate_file(*files, output=Path(output.format(p=files[0], tmp=tmp_path)))


@pytest.mark.slow
def test_merged_shards_are_byte_identical_to_the_unsharded_csv(
    synth: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """A model's float32 output for an image depends on the size of the batch it is in: shards
    of 3 images each (12 test images, 4 shards) computed 1 ULP off one batch of 12 before."""
    from condorml.job.infer import InferConfig, Shard, infer
    from condorml.job.train import TrainConfig, train
    from condorml.results.merge import merge_predictions
    from tests.helpers import IMAGE_SIZE

    config = TrainConfig(
        data_dir=synth, checkpoint_dir=tmp_path / "m", epochs=1, image_size=IMAGE_SIZE,
        batch_size=16, precision="fp32", cache_dir=cache_dir, exit_on_checkpoint=False,
    )  # fmt: skip
    train(config)
    model = (config.checkpoint_dir / "model.pth",)
    whole, parts = tmp_path / "whole.csv", []
    for batch_size, shards in ((256, 4), (5, 3), (8, 5)):
        infer(InferConfig(model, synth / "test", whole, precision="fp32", batch_size=batch_size))
        parts = [tmp_path / f"part{i}.csv" for i in range(shards)]
        for index, part in enumerate(parts):
            shard = Shard(index, shards)
            infer(InferConfig(model, synth / "test.zip", part, precision="fp32", batch_size=batch_size, shard=shard))  # fmt: skip
        merged = tmp_path / "merged.csv"
        merge_predictions(merged, parts)
        assert merged.read_text() == whole.read_text(), (batch_size, shards)
