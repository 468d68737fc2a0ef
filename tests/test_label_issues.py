"""Label issues alone: confident learning on constructed probabilities, the fold models' flags, and
out-of-fold probabilities from models that never saw the examples they score."""

import numpy as np
import pytest

from data import catalog, sources
from tests.helpers import make_config
from diagnosis import label_issues


def confident_probabilities(true_labels, num_classes=4, confidence=0.9, seed=0):
    rng = np.random.default_rng(seed)
    probabilities = np.full((len(true_labels), num_classes), (1 - confidence) / (num_classes - 1))
    probabilities[np.arange(len(true_labels)), true_labels] = confidence
    probabilities += rng.uniform(0, 0.01, probabilities.shape)
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def test_examples_whose_label_the_out_of_sample_model_contradicts_are_found_likeliest_first():
    true = np.arange(400) % 4
    stored = true.copy()
    flipped = np.array([7, 50, 123, 333])
    stored[flipped] = (true[flipped] + 1) % 4
    probabilities = confident_probabilities(true)
    probabilities[333] = [0.97, 0.01, 0.01, 0.01]  # The surest contradiction: ranked first.
    images = np.arange(400)[:, None, None] * np.ones((1, 2, 2))
    issues = label_issues.issues_in("test", images, stored, probabilities, stored_index=np.arange(400) + 1000)
    assert sorted(issues.indices.tolist()) == sorted((flipped + 1000).tolist())
    assert issues.indices[0] == 1333 and issues.labels[0] == 2 and issues.suggested[0] == 0
    assert issues.examined == 400 and issues.images[0, 0, 0] == 333 and issues.usable
    guessing = label_issues.issues_in("test", images, stored, confident_probabilities((true + 2) % 4))
    assert not guessing.usable and len(guessing.indices) == 0  # A model that is mostly wrong judges no label.


def test_the_review_queue_ranks_every_example_by_label_quality_flagged_or_not():
    true = np.arange(400) % 4
    stored = true.copy()
    stored[[7, 50]] = (true[[7, 50]] + 1) % 4
    probabilities = confident_probabilities(true)
    probabilities[200] = [0.45, 0.55, 0.0, 0.0]  # Labelled 0, a doubtful call: too close for confident learning.
    images = np.arange(400)[:, None, None] * np.ones((1, 2, 2))
    issues = label_issues.issues_in("test", images, stored, probabilities, np.arange(400) + 1000, review_count=5)
    review = issues.review
    assert 1200 not in issues.indices and review.indices[2] == 1200  # After the two flipped, before the rest.
    assert set(review.indices[:2]) == {1007, 1050} and len(review.indices) == 5
    given_probability = probabilities[np.arange(400), stored]
    assert np.allclose(review.scores, np.sort(given_probability)[:5])  # cleanlab's self-confidence.
    assert review.images[2, 0, 0] == 200 and review.labels[2] == 0 and review.suggested[2] == 1
    assert review.as_json()[2] == {"index": 1200, "score": pytest.approx(given_probability[200]), "label": 0,
                                   "suggested": 1}
    assert label_issues.issues_in("test", images, stored, probabilities).review is None  # None asked for.
    guessing = label_issues.issues_in("test", images, stored, confident_probabilities((true + 2) % 4), review_count=5)
    assert guessing.review is None  # A model that is mostly wrong queues nothing.


@pytest.mark.slow
def test_out_of_fold_probabilities_come_from_models_that_never_saw_the_example(tmp_path):
    images, labels = sources.synthetic_splits(catalog.SYNTHETIC)["train"]
    images, labels = images[:512], labels[:512].astype(np.int64)
    labels[:20] = (labels[:20] + 1) % 10  # Wrong labels the fold models cannot have learnt.
    config = make_config(tmp_path, "--model=mlp", "--model_width=64", "--batch_size=32")
    probabilities = label_issues.out_of_fold_probabilities(config, images, labels, catalog.SYNTHETIC.class_names,
                                                           "cheap")
    assert probabilities.shape == (512, 10) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    true = labels.copy()
    true[:20] = (true[:20] - 1) % 10
    assert np.mean(probabilities.argmax(axis=1)[:20] == true[:20]) >= 0.9  # They predict the true class...
    found = label_issues.ranked_issues(labels, probabilities)
    assert set(range(20)) <= set(found.tolist()) and len(found) <= 30  # ... so confident learning finds them.
