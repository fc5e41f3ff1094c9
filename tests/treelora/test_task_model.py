import pytest
import torch

from treelora.learner import ClassifierModel as FromLearner
from treelora.task_model import ClassifierModel, masked_logits


def test_masked_logits_keep_only_the_given_classes():
    logits = torch.tensor([[1.0, 5.0, 2.0, 3.0]])
    out = masked_logits(logits, torch.tensor([0, 2]))
    assert out[0, 0] == 1.0 and out[0, 2] == 2.0 and torch.isinf(out[0, 1]) and torch.isinf(out[0, 3])
    assert int(out.argmax()) == 2


def test_classifier_model_is_still_importable_from_the_learner_and_checks_the_backbone_kind():
    assert FromLearner is ClassifierModel
    with pytest.raises(ValueError, match="unsupported backbone kind"):
        ClassifierModel(torch.nn.Identity(), "audio", 4, 3)
