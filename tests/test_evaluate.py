"""Evaluation numbers on a case checked by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from condorml.errors import CondormlError
from condorml.evaluate import evaluate_file, roc_auc
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


def test_predictions_without_labels_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("fileid,prob\n1,0.9\n7,0.1\n")
    (tmp_path / "l.csv").write_text("fileid,is_dog\n1,1\n")
    with pytest.raises(CondormlError, match=r"1 image\(s\) have no label"):
        evaluate_file(tmp_path / "p.csv", tmp_path / "l.csv")


def test_cli_prints_and_writes_the_scores(files: tuple[Path, Path], tmp_path: Path) -> None:
    proc = condorml_cli(
        "evaluate", str(files[0]), "--labels", str(files[1]), "-o", str(tmp_path / "m.json")
    )
    assert proc.returncode == 0, proc.stderr
    assert "accuracy  0.5000" in proc.stdout and "ROC AUC   0.7500" in proc.stdout
    assert (tmp_path / "m.json").exists()
    bad = condorml_cli("evaluate", str(files[0]), "--labels", str(tmp_path / "nope.csv"))
    assert bad.returncode == 2 and "no such file" in bad.stderr and "Traceback" not in bad.stderr
