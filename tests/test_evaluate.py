"""Evaluation numbers on cases checked by hand (cat/dog and N classes), the labels evaluate
reads, what it refuses, and merge's exactness."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from condorml.errors import CondormlError
from condorml.results.evaluate import evaluate_file, read_labels, roc_auc
from tests.helpers import condorml_cli

# Truth 1, 0, 0, 1 with P(dog) 0.9, 0.2, 0.6, 0.4: at 0.5 the predictions are 1, 0, 1, 0.
PREDICTIONS = "fileid,prob\n1,0.9\n2,0.2\n3,0.6\n4,0.4\n"
LABELS = "fileid,is_dog\n1,1\n2,0\n3,0\n4,1\n5,1\n"  # 5 has no prediction (an undecodable image)

# Three classes: (truth, probabilities of bird, cat, dog) -> predicted, by the highest
# probability, the first of a tie (image 7).
THREE = [
    ("bird", (0.7, 0.2, 0.1)),  # 1: bird, right
    ("bird", (0.2, 0.5, 0.3)),  # 2: cat
    ("cat", (0.1, 0.8, 0.1)),  # 3: cat, right
    ("cat", (0.3, 0.3, 0.4)),  # 4: dog
    ("dog", (0.1, 0.1, 0.8)),  # 5: dog, right
    ("dog", (0.25, 0.25, 0.5)),  # 6: dog, right
    ("cat", (0.4, 0.4, 0.2)),  # 7: a tie of bird and cat: bird
]
CLASSES = ("bird", "cat", "dog")


def three_class_predictions(path: Path) -> Path:
    """probs.csv of THREE, with an ensemble's statistics columns (not probabilities)."""
    rows = [
        f"{i},{CLASSES[int(np.argmax(p))]},{','.join(map(str, p))},0.01,3"
        for i, (_, p) in enumerate(THREE, start=1)
    ]
    path.write_text("fileid,predicted,bird,cat,dog,prob_std,n_models\n" + "\n".join(rows) + "\n")
    return path


def class_folders(root: Path, labels: dict[str, str]) -> Path:
    """A test set in class folders, ``root/test/<class>/<fileid>.png``: tiny 8x8 images."""
    from PIL import Image

    for fileid, name in labels.items():
        (root / "test" / name).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (int(fileid) * 30 % 256, 0, 0)).save(
            root / "test" / name / f"{fileid}.png"
        )
    return root


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
    assert scores.threshold == 0.5 and scores.classes == ["cat", "dog"]
    assert scores.macro_f1 == 0.5 and scores.top5_accuracy is None
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["accuracy"] == 0.5 and written["confusion"] == [[1, 1], [1, 1]]
    assert written["roc_auc"] == 0.75 and written["missing_predictions"] == 1
    assert written["per_class"]["dog"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}


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


def test_a_zip_or_folder_where_a_csv_belongs_or_a_flat_test_set_is_one_line(
    synth: Path, tmp_path: Path
) -> None:
    (tmp_path / "p.csv").write_text(PREDICTIONS)
    for predictions, labels, message in (
        (synth / "test.zip", synth / "test_labels.csv", "test.zip: a zip archive"),
        (tmp_path / "p.csv", synth / "test.zip", "--labels .*test.zip: a test set without labels"),
        (synth / "test", synth / "test_labels.csv", "test: is a folder, not a CSV"),
    ):
        with pytest.raises(CondormlError, match=message):
            evaluate_file(predictions, labels)


def test_cli_prints_and_writes_the_scores(files: tuple[Path, Path], tmp_path: Path) -> None:
    proc = condorml_cli(
        "evaluate", str(files[0]), "--labels", str(files[1]), "-o", str(tmp_path / "m.json")
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:8] == [
        "images    4  (not scored: 1 labelled without a prediction)",
        "accuracy  0.5000",
        "log loss  0.5403",
        "ROC AUC   0.7500",
        "macro F1  0.5000",
        "confusion at 0.5:   predicted cat  predicted dog",
        "  cat                          1              1",
        "  dog                          1              1",
    ]
    assert (tmp_path / "m.json").exists()
    bad = condorml_cli("evaluate", str(files[0]), "--labels", str(tmp_path / "nope.csv"))
    assert bad.returncode == 2 and "no such file" in bad.stderr and "Traceback" not in bad.stderr


def test_three_classes_hand_checked(tmp_path: Path) -> None:
    predictions = three_class_predictions(tmp_path / "probs.csv")
    (tmp_path / "l.csv").write_text(
        "fileid,label\n" + "".join(f"{i},{t}\n" for i, (t, _) in enumerate(THREE, start=1))
    )
    scores = evaluate_file(predictions, tmp_path / "l.csv", output=tmp_path / "metrics.json")
    assert scores.n == 7 and scores.classes == ["bird", "cat", "dog"]
    assert scores.accuracy == pytest.approx(4 / 7)  # images 1, 3, 5, 6
    # rows: true bird, cat, dog; columns: predicted bird, cat, dog
    assert scores.confusion == [[1, 1, 0], [1, 1, 1], [0, 0, 2]]
    expected = {"bird": (1 / 2, 1 / 2, 2), "cat": (1 / 2, 1 / 3, 3), "dog": (2 / 3, 1.0, 2)}
    for name, (precision, recall, support) in expected.items():
        found = scores.per_class[name]
        assert (found.precision, found.recall, found.support) == pytest.approx(
            (precision, recall, support)
        ), name
    # F1: bird 1/2, cat 2 * (1/2 * 1/3) / (1/2 + 1/3) = 2/5, dog 2 * (2/3) / (5/3) = 4/5
    assert scores.macro_f1 == pytest.approx((0.5 + 0.4 + 0.8) / 3)
    true_probs = [p[CLASSES.index(t)] for t, p in THREE]
    assert scores.log_loss == pytest.approx(-sum(math.log(p) for p in true_probs) / 7)
    # no AUC nor threshold beyond two classes, no top-5 for three
    assert scores.roc_auc is None and scores.threshold is None and scores.top5_accuracy is None
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert (
        written["classes"] == ["bird", "cat", "dog"] and written["per_class"]["cat"]["support"] == 3
    )


def test_labels_by_index_by_name_and_as_a_labelled_test_set_agree(tmp_path: Path) -> None:
    predictions = three_class_predictions(tmp_path / "probs.csv")
    truth = {str(i): t for i, (t, _) in enumerate(THREE, start=1)}
    by_name, by_index = tmp_path / "names.csv", tmp_path / "indices.csv"
    by_name.write_text("fileid,label\n" + "".join(f"{i},{t}\n" for i, t in truth.items()))
    by_index.write_text(
        "fileid,label\n" + "".join(f"{i},{CLASSES.index(t)}\n" for i, t in truth.items())
    )
    folders = class_folders(tmp_path / "set", truth)
    zipped = Path(shutil.make_archive(str(tmp_path / "set"), "zip", folders))
    expected = {fileid: CLASSES.index(t) for fileid, t in truth.items()}
    for labels in (by_name, by_index, folders, zipped):
        assert read_labels(labels, classes=CLASSES).to_dict() == expected, labels
    scores = [evaluate_file(predictions, labels).to_dict() for labels in (by_name, folders, zipped)]
    assert scores[0] == scores[1] == scores[2]
    assert scores[0]["confusion"] == [[1, 1, 0], [1, 1, 1], [0, 0, 2]]


def test_a_cat_dog_class_folder_test_set_scores_dog_probs(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text(PREDICTIONS)
    folders = class_folders(tmp_path / "set", {"1": "dog", "2": "cat", "3": "cat", "4": "dog"})
    scores = evaluate_file(tmp_path / "p.csv", folders)
    assert scores.roc_auc == 0.75 and scores.confusion == [[1, 1], [1, 1]]
    assert scores.missing_predictions == 0


def test_more_than_five_classes_have_a_top5_accuracy(tmp_path: Path) -> None:
    """13 classes, image i of class i: 7 ranked first, 3 ranked third (in the top 5 only), 3
    ranked last; every mistake predicts c00."""
    classes = [f"c{i:02d}" for i in range(13)]
    rows, labels = [], []
    for i in range(13):
        weights = np.ones(13)
        if i < 7:
            weights[i] = 20.0
        elif i < 10:
            weights[[0, 1, i]] = 20.0, 19.0, 18.0
        else:
            weights[0], weights[i] = 20.0, 0.5
        p = weights / weights.sum()
        rows.append(f"{i},{classes[int(p.argmax())]},{','.join(map(repr, p.tolist()))}")
        labels.append(f"{i},{classes[i]}")
    (tmp_path / "probs.csv").write_text(
        f"fileid,predicted,{','.join(classes)}\n" + "\n".join(rows) + "\n"
    )
    (tmp_path / "l.csv").write_text("fileid,label\n" + "\n".join(labels) + "\n")
    scores = evaluate_file(tmp_path / "probs.csv", tmp_path / "l.csv")
    assert scores.accuracy == pytest.approx(7 / 13)
    assert scores.top5_accuracy == pytest.approx(10 / 13)
    assert scores.per_class["c00"].precision == pytest.approx(1 / 7)  # 1 right of 7 predicted
    proc = condorml_cli(
        "evaluate", str(tmp_path / "probs.csv"), "--labels", str(tmp_path / "l.csv")
    )
    assert proc.returncode == 0, proc.stderr
    assert "top-5 accuracy  0.7692" in proc.stdout.splitlines()
    # too many classes for a matrix: the confusions, most first
    assert "most frequent confusions (true -> predicted), 6 shown:" in proc.stdout
    assert "  c07 -> c00: 1" in proc.stdout.splitlines()
    assert "c01  c02" not in proc.stdout


def test_cli_prints_the_classes_table_and_matrix(tmp_path: Path) -> None:
    predictions = three_class_predictions(tmp_path / "probs.csv")
    labels = class_folders(tmp_path / "set", {str(i): t for i, (t, _) in enumerate(THREE, start=1)})
    proc = condorml_cli("evaluate", str(predictions), "--labels", str(labels))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "images          7",
        "accuracy        0.5714",
        f"log loss        {-sum(math.log(p[CLASSES.index(t)]) for t, p in THREE) / 7:.4f}",
        "macro F1        0.5667",
        "  class  precision     recall    support",
        "  bird      0.5000     0.5000          2",
        "  cat       0.5000     0.3333          3",
        "  dog       0.6667     1.0000          2",
        "confusion (rows: true class, columns: predicted class):",
        "         bird   cat   dog",
        "  bird      1     1     0",
        "  cat       1     1     1",
        "  dog       0     0     2",
    ]
    assert "top-5" not in proc.stdout and "ROC AUC" not in proc.stdout


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        ("fileid,label", "1,bird\n2,zebra\n3,cat\n4,yak\n",
         r"l.csv: the labels have classes the predictions do not: zebra, yak \(the predictions' "
         r"classes: bird, cat, dog\)"),
        ("fileid,label", "1,bird\n2,3\n", r"l.csv: line 3, fileid 2: label '3' is not a class index \(0 to 2\)"),
        ("fileid,label", "1,bird\n2, \n", r"l.csv: line 3, fileid 2: no label"),
        ("fileid,label", "1,bird\n1,cat\n", r"l.csv: fileid 1 is given more than once"),
        ("fileid,is_dog", "1,1\n", r"l.csv: is_dog labels are for cat/dog predictions"),
        ("fileid,class", "1,bird\n", r"l.csv: expected the columns fileid,label"),
    ],
)  # fmt: skip
def test_labels_that_are_no_class_of_the_predictions_are_refused(
    tmp_path: Path, header: str, rows: str, message: str
) -> None:
    predictions = three_class_predictions(tmp_path / "probs.csv")
    (tmp_path / "l.csv").write_text(f"{header}\n{rows}")
    with pytest.raises(CondormlError, match=message):
        evaluate_file(predictions, tmp_path / "l.csv")


def test_a_test_set_of_other_classes_is_refused(tmp_path: Path) -> None:
    predictions = three_class_predictions(tmp_path / "probs.csv")
    labels = class_folders(tmp_path / "set", {"1": "bird", "2": "emu"})
    with pytest.raises(
        CondormlError, match=r"set: the labels have classes the predictions do not: emu"
    ):
        evaluate_file(predictions, labels)
    proc = condorml_cli("evaluate", str(predictions), "--labels", str(labels))
    assert proc.returncode == 2 and "emu" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2,cat,0.2,0.5,0.2", r"probs.csv: line 3, fileid 2: the probabilities of the 3 classes sum to 0.9, not 1"),
        ("2,cat,0.2,0.5,0.302", r"line 3, fileid 2: the probabilities of the 3 classes sum to 1.002"),
        ("2,cat,-0.5,1.5,0", r"probs.csv: line 3, fileid 2: P\(bird\) -0.5 is not a probability \(0 to 1\)"),
        ("2,cat,0.2,nan,0.3", r"line 3, fileid 2: P\(cat\) nan is not a probability"),
    ],
)  # fmt: skip
def test_probs_rows_that_are_not_probabilities_are_refused(
    tmp_path: Path, row: str, message: str
) -> None:
    (tmp_path / "probs.csv").write_text(
        f"fileid,predicted,bird,cat,dog\n1,bird,0.7,0.2,0.1\n{row}\n"
    )
    (tmp_path / "l.csv").write_text("fileid,label\n1,bird\n2,cat\n")
    with pytest.raises(CondormlError, match=message):
        evaluate_file(tmp_path / "probs.csv", tmp_path / "l.csv")
    # within 1e-3 of 1 is rounding, not an error
    (tmp_path / "probs.csv").write_text(
        "fileid,predicted,bird,cat,dog\n1,bird,0.7,0.2,0.1\n2,cat,0.2,0.5,0.3008\n"
    )
    assert evaluate_file(tmp_path / "probs.csv", tmp_path / "l.csv").accuracy == 1.0


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
