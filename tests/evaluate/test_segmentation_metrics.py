import numpy as np
import pandas as pd
import pytest

from morphospace.evaluate.segmentation import (
    foreground_iou, iou_matrix, match_instances, pooled_scores, segmentation_scores,
)


def test_iou_matrix_hand_computed():
    truth = np.array([[1, 1, 0, 2], [1, 1, 0, 2]])
    pred = np.array([[5, 0, 0, 9], [5, 5, 9, 9]])
    iou, t_ids, p_ids = iou_matrix(truth, pred)
    assert t_ids.tolist() == [1, 2] and p_ids.tolist() == [5, 9]
    np.testing.assert_allclose(iou, [[3 / 4, 0], [0, 2 / 3]])


def test_perfect_and_permuted_labels():
    truth = np.zeros((10, 10), int)
    truth[:3, :3], truth[5:, 5:] = 1, 2
    permuted = np.where(truth == 1, 7, np.where(truth == 2, 3, 0))
    match = match_instances(truth, permuted)
    assert (match.tp, match.fp, match.fn, match.f1) == (2, 0, 0, 1.0)
    assert foreground_iou(truth, permuted) == 1.0


def test_threshold_and_one_to_one_matching():
    truth = np.zeros((1, 10), int)
    truth[0, :4] = 1
    pred = np.zeros((1, 10), int)
    pred[0, :2], pred[0, 2:4] = 1, 2  # each half of the object: IoU 0.5 each
    assert match_instances(truth, pred, 0.5).tp == 1
    assert match_instances(truth, pred, 0.51).tp == 0


def test_empty_conventions():
    empty = np.zeros((5, 5), int)
    assert foreground_iou(empty, empty) == 1.0
    assert match_instances(empty, empty).f1 == 1.0
    one = empty.copy()
    one[2, 2] = 1
    assert match_instances(empty, one).fp == 1 and match_instances(one, empty).fn == 1
    assert foreground_iou(one, empty) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        iou_matrix(empty, np.zeros((4, 4)))


def test_pooled_scores():
    rows = pd.DataFrame([segmentation_scores(np.eye(4, dtype=int), np.eye(4, dtype=int)),
                         segmentation_scores(np.eye(4, dtype=int), np.zeros((4, 4), int))])
    summary = pooled_scores(rows)
    assert (summary["tp"], summary["fn"], summary["f1_pooled"], summary["f1_mean"]) == (1, 1, 2 / 3, 0.5)
