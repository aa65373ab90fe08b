"""The class-prompt loss (`train.prompt_loss_weight`): each image against every value's prompt of
an attribute ("a sedan", "a hatchback", ...), as zero-shot classification asks."""

import torch

from carsearch.training.loop import train_clip
from carsearch.training.loss import prompt_class_loss
from carsearch.training.texts import class_prompts
from testkit import TINY, section, write_pairs


def _unit(x):
    return torch.nn.functional.normalize(torch.tensor(x, dtype=torch.float32), dim=-1)


def test_class_prompts_one_per_value_and_targets_per_image():
    labels = [{"body_type": "van", "color": "red"}, {"body_type": "bus"}, {"body_type": "unknown", "view": "front"}]
    prompts, targets = class_prompts(labels)
    assert prompts == ["a bus", "a van"]  # colour and view have one value here: no classes to tell apart
    rows, t = targets["body_type"]
    assert prompts[rows] == ["a bus", "a van"] and t.tolist() == [1, 0, -1]
    assert set(targets) == {"body_type"}


def test_prompt_class_loss_prefers_the_right_prompt_and_skips_the_unlabelled():
    prompts = _unit([[1, 0], [0, 1]])  # "a bus", "a van"
    targets = {"body_type": (slice(0, 2), torch.tensor([1, 0, -1]))}
    right = _unit([[0, 1], [1, 0], [1, 0]])
    wrong = _unit([[1, 0], [0, 1], [1, 0]])
    scale = torch.tensor(10.0)
    assert float(prompt_class_loss(right, prompts, scale, targets)) + 5 < float(
        prompt_class_loss(wrong, prompts, scale, targets)
    )
    flip_unlabelled = _unit([[0, 1], [1, 0], [0, 1]])  # only the -1 image moved: same loss
    assert torch.isclose(
        prompt_class_loss(right, prompts, scale, targets), prompt_class_loss(flip_unlabelled, prompts, scale, targets)
    )
    none = {"body_type": (slice(0, 2), torch.tensor([-1, -1, -1]))}
    assert float(prompt_class_loss(right, prompts, scale, none)) == 0.0


def test_prompt_loss_trains_deterministically_and_is_used(tmp_path):
    pairs = write_pairs(tmp_path, {"train": 12, "val": 0, "test": 0}, size=40)["train"]
    assert len({p["labels"].get("color") for p in pairs}) >= 2
    cfg = section("train", lr=2e-3, epochs=2, batch_size=6, seed=3, checkpoint_dir=None, prompt_loss_weight=0.5)
    from carsearch.model.clip import load_clip

    runs = []
    for _ in range(2):
        model, proc = load_clip(TINY, seed=0)
        runs.append(train_clip(model, proc, pairs, tmp_path, cfg).losses)
    assert runs[0] == runs[1] and all(torch.isfinite(torch.tensor(runs[0])))
    model, proc = load_clip(TINY, seed=0)
    assert (
        train_clip(model, proc, pairs, tmp_path, cfg.model_copy(update={"prompt_loss_weight": 0.0})).losses != runs[0]
    )
