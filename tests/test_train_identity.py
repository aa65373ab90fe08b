"""Training's batch composition and the identity loss: texts per image, identity-paired batches,
IdentityLoss (same vehicle at another camera positive, same-type same-colour stranger negative)."""

import torch

from carsearch.training.batches import draw_texts, epoch_batches, identity_order
from carsearch.training.loop import train_clip
from carsearch.training.loss import IdentityLoss, identity_masks
from carsearch.training.texts import positives
from testkit import TINY, section, write_pairs


def _unit(x):
    return torch.nn.functional.normalize(torch.tensor(x, dtype=torch.float32), dim=-1)


LABELS = [
    {"identity": "a", "camera": "cam-1", "body_type": "sedan", "color": "white"},
    {"identity": "a", "camera": "cam-2", "body_type": "sedan", "color": "white"},
    {"identity": "b", "camera": "cam-2", "body_type": "sedan", "color": "white"},  # the stranger
    {"identity": "a", "camera": "cam-1", "body_type": "sedan", "color": "white"},  # same camera as 0
]


def test_identity_masks_other_camera_positive_same_camera_ignored():
    pos, ignore = identity_masks(LABELS)
    assert pos.tolist() == [
        [False, True, False, False],
        [True, False, False, True],
        [False, False, False, False],
        [False, True, False, False],
    ]
    assert ignore[0, 3] and ignore[3, 0] and ignore.diagonal().all() and not ignore[0, 2]


def test_identity_loss_pushes_the_same_type_same_colour_stranger_away():
    loss, scale = IdentityLoss(), torch.tensor(10.0)
    apart = _unit([[1, 0], [1, 0.1], [0, 1], [1, 0]])  # the stranger far from vehicle a
    close = _unit([[1, 0], [0, 1], [1, 0.1], [1, 0]])  # the stranger nearer than a's other camera
    assert float(loss(apart, scale, LABELS)) + 5 < float(loss(close, scale, LABELS))
    # the same-camera repeat (image 3) is out of image 0's softmax: as near to image 0 as it may be,
    # it costs nothing, where a stranger there would
    stranger = [*LABELS[:3], {**LABELS[3], "identity": "c"}]
    assert float(loss(apart, scale, LABELS[:3] + [{**LABELS[3], "camera": "cam-1"}])) < float(
        loss(apart, scale, stranger)
    )
    # no image with a positive: 0
    none = [{"identity": f"v{i}", "camera": "c"} for i in range(3)]
    assert float(loss(_unit([[1, 0], [0, 1], [1, 1]]), scale, none)) == 0.0


def test_identity_order_puts_each_vehicle_next_to_another_of_its_images():
    idents = ["a", "b", "a", None, "b", "c", "a"]
    out = identity_order(torch.tensor([0, 1, 2, 3, 4, 5, 6]), idents).tolist()
    assert sorted(out) == list(range(7))
    assert out == [0, 2, 1, 4, 3, 5, 6]
    batches = epoch_batches(7, 4, 1, torch.Generator().manual_seed(0), idents)
    assert sorted(i for b in batches for i in b.tolist()) == list(range(7))


def test_draw_texts_first_is_the_single_draw_then_distinct():
    variants = [[("x0", {}), ("x1", {}), ("x2", {})], [("y0", {})]]
    one = draw_texts(variants, 1, torch.Generator().manual_seed(5))
    three = draw_texts(variants, 3, torch.Generator().manual_seed(5))
    assert [v[0] for v in three] == [v[0] for v in one]
    assert sorted(t for t, _ in three[0]) == ["x0", "x1", "x2"] and [t for t, _ in three[1]] == ["y0"] * 3


def test_positives_with_several_texts_per_image():
    labels = [{"color": "red"}, {"color": "blue"}]
    pos = positives(labels, [{"color": "red"}, {}, {"color": "blue"}, {}], owners=[0, 0, 1, 1])
    assert pos.tolist() == [[True, True, False, False], [False, False, True, True]]


def test_texts_per_image_and_identity_loss_train_deterministically(tmp_path):
    pairs = write_pairs(tmp_path, {"train": 16, "val": 0, "test": 0}, size=40)["train"]
    for i, p in enumerate(pairs):  # 8 vehicles, each at two cameras
        p["labels"] = {**p["labels"], "identity": f"v{i // 2}", "camera": f"cam-{i % 2}"}
    cfg = section(
        "train", lr=2e-3, epochs=2, batch_size=8, seed=3, checkpoint_dir=None, texts_per_image=2,
        identity_loss_weight=0.5,
    )  # fmt: skip
    runs = []
    for _ in range(2):
        from carsearch.model.clip import load_clip

        model, proc = load_clip(TINY, seed=0)
        runs.append((train_clip(model, proc, pairs, tmp_path, cfg).losses, model.state_dict()))
    assert runs[0][0] == runs[1][0] and all(torch.isfinite(torch.tensor(runs[0][0])))
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1].values(), runs[1][1].values()))
    model, proc = load_clip(TINY, seed=0)
    plain = train_clip(
        model, proc, pairs, tmp_path, cfg.model_copy(update={"texts_per_image": 1, "identity_loss_weight": 0.0})
    )
    assert plain.losses != runs[0][0]  # the settings are used
