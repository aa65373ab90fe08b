"""carsearch.detection.detect: vehicle boxes from a transformers detector, offline (tiny random-init
RT-DETR, a tiny OWLv2 saved to a folder), in the project's `boxes` contract."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    CLIPTokenizer,
    Owlv2Config,
    Owlv2ForObjectDetection,
    Owlv2ImageProcessorPil,
    Owlv2Processor,
    YolosConfig,
    YolosForObjectDetection,
    YolosImageProcessorPil,
)

from carsearch.core.errors import CarsearchError
from carsearch.detection import detect as d

KEYS = {"frame", "x1", "y1", "x2", "y2", "class", "score", "source"}
SIZES = [(200, 100), (150, 300), (64, 64), (640, 480)]  # (width, height)


def _image(i: int, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    w, h = size
    return Image.fromarray(np.random.RandomState(i).randint(0, 255, (h, w, 3), np.uint8)).convert(mode)


@pytest.fixture(scope="module")
def tiny():
    return d.load_detector({"model": None, "tiny": True})


@pytest.fixture(scope="module")
def images():
    return [_image(i, s, mode) for i, (s, mode) in enumerate(zip(SIZES, ["RGB", "L", "RGBA", "RGB"]))]


def _check_contract(per_image, images, frames, source):
    assert len(per_image) == len(images)
    for boxes, im, frame in zip(per_image, images, frames):
        for b in boxes:
            assert set(b) == KEYS
            assert b["frame"] == frame and b["source"] == source
            assert all(isinstance(b[k], float) for k in ("x1", "y1", "x2", "y2", "score"))
            assert 0.0 <= b["x1"] < b["x2"] <= im.width and 0.0 <= b["y1"] < b["y2"] <= im.height
            assert 0.0 <= b["score"] <= 1.0


def test_tiny_detector_boxes_follow_the_contract(tiny, images):
    model, processor = tiny
    assert type(processor).__name__ == "RTDetrImageProcessorPil"  # the PIL processor: no torchvision
    assert not model.training
    frames = [f"cam1/{i:04d}" for i in range(len(images))]
    every = d.detect(model, processor, images, threshold=0.0, classes=None, frame_ids=frames)
    _check_contract(every, images, frames, "detector:tiny-rtdetr")
    assert all(every), "threshold 0 keeps the top queries of every frame"
    vehicles = d.detect(model, processor, images, threshold=0.0, frame_ids=frames)
    _check_contract(vehicles, images, frames, "detector:tiny-rtdetr")
    assert vehicles == [[b for b in boxes if b["class"] in d.VEHICLE_CLASSES] for boxes in every]
    assert any(b["class"] not in d.VEHICLE_CLASSES for boxes in every for b in boxes)  # person, boat, ... dropped
    cars = d.detect(model, processor, images, threshold=0.0, classes=("car",))
    assert all(b["class"] == "car" for boxes in cars for b in boxes)
    assert d.detect(model, processor, images[:1], threshold=0.0, classes=None, source="auto")[0][0]["source"] == (
        "auto:tiny-rtdetr"
    )


def test_frames_without_detections_are_kept_as_empty_lists(tiny, images):
    model, processor = tiny
    assert d.detect(model, processor, images, threshold=1.01) == [[], [], [], []]
    assert d.detect(model, processor, []) == []
    default_ids = d.detect(model, processor, images, threshold=0.0, classes=None)
    assert [{b["frame"] for b in boxes} for boxes in default_ids] == [{"0"}, {"1"}, {"2"}, {"3"}]


def test_batch_size_does_not_change_boxes(tiny, images):
    model, processor = tiny
    one = d.detect(model, processor, images, threshold=0.0, classes=None, batch_size=1)
    many = d.detect(model, processor, images, threshold=0.0, classes=None, batch_size=3)
    assert [len(b) for b in one] == [len(b) for b in many]
    for a, b in zip((x for boxes in one for x in boxes), (x for boxes in many for x in boxes)):
        assert a["class"] == b["class"] and a["frame"] == b["frame"]
        assert [a[k] for k in ("x1", "y1", "x2", "y2", "score")] == pytest.approx(
            [b[k] for k in ("x1", "y1", "x2", "y2", "score")], abs=1e-3
        )


def test_bad_detect_arguments_are_one_line_errors(tiny, images):
    model, processor = tiny
    with pytest.raises(d.DetectorError, match="2 frame ids for 4 images"):
        d.detect(model, processor, images, frame_ids=["a", "b"])
    with pytest.raises(d.DetectorError, match="batch_size"):
        d.detect(model, processor, images, batch_size=0)
    with pytest.raises(d.DetectorError, match="detect.prompts"):
        d.load_detector({"tiny": True, "prompts": ["a photo of a car"]})
    with pytest.raises(d.DetectorError, match="detect.model"):
        d.load_detector({"model": None, "tiny": False})


def test_save_load_round_trip_gives_identical_boxes(tiny, images, tmp_path):
    model, processor = tiny
    d.save_detector(model, processor, tmp_path / "det")
    model2, processor2 = d.load_detector({"model": str(tmp_path / "det")})
    assert type(processor2).__name__ == "RTDetrImageProcessorPil"
    before = d.detect(model, processor, images, threshold=0.0, classes=None)
    assert d.detect(model2, processor2, images, threshold=0.0, classes=None) == before  # source name kept too


def test_seed_decides_the_random_init():
    a, _ = d.load_detector({"tiny": True}, seed=0)
    b, _ = d.load_detector({"tiny": True}, seed=0)
    c, _ = d.load_detector({"tiny": True}, seed=1)
    pa, pb, pc = (next(iter(m.parameters())) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


@pytest.mark.parametrize("name", ["nobody/no-such-detector", "/no/such/detector/dir", "./no-such-dir"])
def test_missing_checkpoint_is_a_one_line_error_naming_detect_model(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(d.DetectorError) as e:
        d.load_detector({"model": name})
    msg = str(e.value)
    assert isinstance(e.value, CarsearchError)
    assert "\n" not in msg and msg.startswith("detect.model:") and name in msg
    assert "save_pretrained" in msg


def test_a_folder_without_a_detector_is_a_one_line_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "clip"}')
    with pytest.raises(d.DetectorError, match=r"^detect\.model: cannot load detector") as e:
        d.load_detector({"model": str(tmp_path)})
    assert "\n" not in str(e.value)


def test_class_filter_on_a_post_processed_result():
    result = {
        "scores": torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]),
        "labels": torch.tensor([0, 1, 2, 3, 1]),
        "boxes": torch.tensor(
            [[1.0, 1.0, 5.0, 5.0], [-10.0, 5.0, 50.0, 120.0], [2.0, 3.0, 4.0, 5.0], [10, 10, 20, 20], [300, 5, 400, 9]]
        ),
    }
    labels = {0: "person", 1: "car", 2: "Motorbike", 3: "traffic light"}
    boxes = d.vehicle_boxes(result, labels, (100, 80), "f1", "detector:x", d.VEHICLE_CLASSES)
    assert [b["class"] for b in boxes] == ["car", "motorcycle"]  # person, traffic light, the off-frame car dropped
    assert boxes[0] == {
        "frame": "f1",
        **{"x1": 0.0, "y1": 5.0, "x2": 50.0, "y2": 80.0},  # clipped to the 100x80 frame
        "class": "car",
        "score": pytest.approx(0.8),
        "source": "detector:x",
    }
    assert len(d.vehicle_boxes(result, labels, (100, 80), "f1", "s", None)) == 4  # None keeps every label


@pytest.mark.parametrize(
    "label,name",
    [
        ("Car", "car"),
        ("motorbike", "motorcycle"),
        ("a photo of a car", "car"),
        ("an image of a pickup truck", "pickup"),
    ],
)
def test_canonical_class(label, name):
    assert d.canonical_class(label) == name


def _tiny_owlv2(path):
    """A tiny random-init OWLv2 with a letter-level CLIP tokenizer, saved as a hub checkpoint would be."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {t: i for i, t in enumerate([c + e for c in letters for e in ("", "</w>")])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})  # OWL masks queries whose bos is 0
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    text.update(max_position_embeddings=16, bos_token_id=len(vocab) - 2, eos_token_id=len(vocab) - 1, pad_token_id=0)
    vision = dict(image_size=64, patch_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    cfg = Owlv2Config(text_config=text, vision_config={**vision, "num_attention_heads": 2}, projection_dim=32)
    torch.manual_seed(0)
    model = Owlv2ForObjectDetection(cfg)
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessorPil(size={"height": 64, "width": 64}), tokenizer=tok)
    d.save_detector(model, processor, path)


def test_zero_shot_owlv2_with_prompts_round_trips(tmp_path, images):
    _tiny_owlv2(tmp_path / "owl")
    prompts = ["a photo of a car", "a photo of a bus", "a photo of a person"]
    model, processor = d.load_detector({"model": str(tmp_path / "owl"), "prompts": prompts})
    assert type(processor.image_processor).__name__ == "Owlv2ImageProcessorPil"
    source = f"detector:{tmp_path / 'owl'}"
    every = d.detect(model, processor, images, threshold=0.0, classes=None)
    _check_contract(every, images, ["0", "1", "2", "3"], source)
    assert any(every) and {b["class"] for boxes in every for b in boxes} <= {"car", "bus", "person"}
    vehicles = d.detect(model, processor, images, threshold=0.0)
    assert vehicles == [[b for b in boxes if b["class"] != "person"] for boxes in every]
    d.save_detector(model, processor, tmp_path / "owl2")
    model2, processor2 = d.load_detector({"model": str(tmp_path / "owl2")})
    assert model2.config.detect_prompts == prompts
    assert d.detect(model2, processor2, images, threshold=0.0, classes=None) == every


def test_module_is_small_and_documented():
    text = open(d.__file__).read()
    assert text.count("\n") < 250 and d.__doc__ and "from __future__ import annotations" in text
    assert os.path.basename(d.__file__) == "detect.py"


def test_yolos_padded_batches_run_one_image_at_a_time(tmp_path, images):
    """YOLOS pads a batch to its largest image and takes no pixel mask: each image runs alone, so a
    batch gives the boxes each image gets on its own."""
    labels = dict(enumerate(d.TINY_LABELS))
    cfg = YolosConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    cfg.update(dict(image_size=[64, 64], patch_size=16, num_detection_tokens=10, id2label=labels))
    torch.manual_seed(0)
    d.save_detector(
        YolosForObjectDetection(cfg), YolosImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96}), tmp_path
    )
    model, processor = d.load_detector({"model": str(tmp_path)})
    assert type(processor).__name__ == "YolosImageProcessorPil"
    batched = d.detect(model, processor, images, threshold=0.0, classes=None)
    _check_contract(batched, images, ["0", "1", "2", "3"], f"detector:{tmp_path}")
    assert any(batched)
    assert batched == [
        d.detect(model, processor, [im], frame_ids=[str(i)], threshold=0.0, classes=None)[0]
        for i, im in enumerate(images)
    ]
