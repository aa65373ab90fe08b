"""Vehicle boxes from any `transformers` object-detection checkpoint, one list of boxes per traffic frame.

- Closed-set detectors (RT-DETR `PekingU/rtdetr_r18vd`, DETR `facebook/detr-resnet-50`, YOLOS
  `hustvl/yolos-tiny`, ...): `AutoModelForObjectDetection` + `AutoImageProcessor`; labels come from
  `config.id2label` (COCO names) and only vehicle classes are kept.
- Zero-shot OWL-ViT / OWLv2 checkpoints (`config.model_type` owlvit / owlv2): text prompts such as
  "a photo of a car" (`spec["prompts"]`, or one per class); each prompt maps back to its vehicle class.
- `tiny: true`: a small random-init RT-DETR (ResNet backbone, no timm) built from a config with COCO
  vehicle names in `id2label`, and an image processor built directly: no download (tests, offline runs).

Every image processor is a PIL one (`backend="pil"`): the torchvision ("fast") processors of
transformers 5 need torchvision, which this project does not install.

A box is `{"frame", "x1", "y1", "x2", "y2", "class", "score", "source"}`: pixels of the original image,
clipped to it (pass upright frames: `carsearch.core.imaging.open_rgb`); `source` is `detector:<model name>`.
A frame with no vehicle gives an empty list.
"""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path
from typing import Iterable

import torch
import transformers  # a lazy module: the detector classes load when first used, not on import
from PIL import Image

from carsearch.core.errors import CarsearchError
from carsearch.core.vocab import VEHICLE_CLASSES  # COCO's road vehicles (airplane, train, boat left out) and more

SYNONYMS = {
    **dict.fromkeys(("motorbike", "motor bike", "scooter"), "motorcycle"),
    **dict.fromkeys(("bike", "cycle"), "bicycle"),
    **dict.fromkeys(("automobile", "sedan"), "car"),
    **dict.fromkeys(("pickup truck", "pick up truck"), "pickup"),
    "lorry": "truck",
    "minivan": "van",
    "coach": "bus",
    "cab": "taxi",
}
# The first COCO classes in detector order (RT-DETR / DETR id2label names): a tiny model's labels
# hold vehicles and non-vehicles, so the class filter has something to drop.
TINY_LABELS = ("person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat")
TINY_NAME = "tiny-rtdetr"
BOX_KEYS = ("frame", "x1", "y1", "x2", "y2", "class", "score", "source")  # the `boxes` contract
# zero-shot model types -> (model class, processor class) names in transformers
ZERO_SHOT = {
    "owlv2": ("Owlv2ForObjectDetection", "Owlv2Processor"),
    "owlvit": ("OwlViTForObjectDetection", "OwlViTProcessor"),
}
_PROMPT_PREFIX = re.compile(r"^(a |an |the )?((photo|picture|image) of (a |an |the )?)?")


class DetectorError(CarsearchError, ValueError):
    """A detector that cannot be built, loaded or run on the given input."""


def canonical_class(label: str) -> str:
    """A label or prompt as a vehicle class name: "Motorbike" -> "motorcycle", "a photo of a car" -> "car"."""
    s = re.sub(r"[\s_\-]+", " ", str(label).strip().lower()).strip(" .")
    s = _PROMPT_PREFIX.sub("", s).strip()
    return SYNONYMS.get(s, s)


def build_tiny_detector(seed: int = 0, image_size: int = 128):
    """A small random-init RT-DETR (about 0.5 M parameters) + PIL image processor, offline."""
    backbone = transformers.RTDetrResNetConfig(
        embedding_size=16,
        hidden_sizes=[16, 32, 64, 128],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )
    cfg = transformers.RTDetrConfig(
        backbone_config=backbone,
        encoder_in_channels=[32, 64, 128],
        encoder_hidden_dim=32,
        encoder_ffn_dim=64,
        encoder_attention_heads=2,
        d_model=32,
        decoder_in_channels=[32, 32, 32],
        decoder_ffn_dim=64,
        decoder_layers=1,
        decoder_attention_heads=2,
        num_queries=20,
        id2label=dict(enumerate(TINY_LABELS)),
        label2id={name: i for i, name in enumerate(TINY_LABELS)},
    )
    cfg.detector_name = TINY_NAME
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.RTDetrForObjectDetection(cfg)
    return model, transformers.RTDetrImageProcessorPil(size={"height": image_size, "width": image_size})


def load_pretrained_detector(name_or_path: str | os.PathLike):
    """A detector + processor from a hub id or a local `save_pretrained` dir, with a one-line error."""
    name = str(name_or_path)
    fix = "name a local save_pretrained dir of an object-detection checkpoint (or a hub id where the hub is reachable)"
    if name.startswith(("/", ".", "~")) and not Path(name).expanduser().is_dir():
        raise DetectorError(f"detect.model: {name} is not a directory; {fix}, or set detect.tiny: true")
    name = str(Path(name).expanduser()) if name.startswith("~") else name
    try:
        kind = transformers.AutoConfig.from_pretrained(name).model_type
        if kind in ZERO_SHOT:
            model_cls, processor_cls = (getattr(transformers, n) for n in ZERO_SHOT[kind])
            model = model_cls.from_pretrained(name)
            image_processor = transformers.AutoImageProcessor.from_pretrained(name, backend="pil")
            processor = processor_cls(
                image_processor=image_processor, tokenizer=transformers.AutoTokenizer.from_pretrained(name)
            )
        else:
            model = transformers.AutoModelForObjectDetection.from_pretrained(name)
            processor = transformers.AutoImageProcessor.from_pretrained(name, backend="pil")
    except (OSError, ValueError, KeyError, ImportError) as e:  # offline hub, missing files, not a detector
        first = str(e).strip().splitlines()[0].strip() if str(e).strip() else type(e).__name__
        raise DetectorError(
            f"detect.model: cannot load detector {name!r} ({first}); {fix}, or set detect.tiny: true"
        ) from None
    if not getattr(model.config, "detector_name", None):
        model.config.detector_name = name
    return model, processor


def load_detector(spec: dict, seed: int = 0):
    """(model, processor) in eval mode from a `detect` spec: `{"model": hub id | dir | None, "tiny": bool,
    "prompts": [...]}`. `prompts` (zero-shot checkpoints only) are kept in the model config, so they
    survive `save_detector`."""
    if spec.get("tiny"):
        model, processor = build_tiny_detector(seed=seed)
    elif spec.get("model"):
        model, processor = load_pretrained_detector(spec["model"])
    else:
        raise DetectorError(
            "detect.model: no detector named; set detect.model to a hub id or dir, or detect.tiny: true"
        )
    if spec.get("prompts"):
        if model.config.model_type not in ZERO_SHOT:
            raise DetectorError(
                f"detect.prompts: {model.config.model_type} is a closed-set detector; drop prompts or name an "
                "OWLv2 / OWL-ViT checkpoint in detect.model"
            )
        model.config.detect_prompts = [str(p) for p in spec["prompts"]]
    model.eval()
    return model, processor


def save_detector(model, processor, out_dir: str | os.PathLike) -> None:
    """Write model and processor with `save_pretrained`; `load_detector({"model": out_dir})` reads them back."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def detector_name(model) -> str:
    cfg = model.config
    return str(getattr(cfg, "detector_name", None) or getattr(cfg, "_name_or_path", "") or cfg.model_type)


def vehicle_boxes(
    result: dict, labels: dict[int, str], size: tuple[int, int], frame: str, source: str, classes: Iterable[str] | None
) -> list[dict]:
    """One post-processed result (`scores`, `labels` (ids), `boxes` xyxy) as contract boxes: vehicle
    classes only (`classes=None` keeps every label), clipped to the `size` = (width, height) image."""
    keep = None if classes is None else {canonical_class(c) for c in classes}
    width, height = size
    out = []
    for score, label, box in zip(result["scores"].tolist(), result["labels"].tolist(), result["boxes"].tolist()):
        name = canonical_class(labels.get(int(label), str(label)))
        if keep is not None and name not in keep:
            continue
        x1, x2 = (min(max(float(v), 0.0), float(width)) for v in (box[0], box[2]))
        y1, y2 = (min(max(float(v), 0.0), float(height)) for v in (box[1], box[3]))
        if x2 <= x1 or y2 <= y1:  # wholly outside the frame
            continue
        out.append(dict(zip(BOX_KEYS, (frame, x1, y1, x2, y2, name, float(score), source))))
    return out


def detect(
    model,
    processor,
    images: list[Image.Image],
    threshold: float = 0.5,
    classes: Iterable[str] | None = VEHICLE_CLASSES,
    batch_size: int = 8,
    frame_ids: list[str] | None = None,
    source: str = "detector",
) -> list[list[dict]]:
    """Vehicle boxes per image (same order and length as `images`; frame ids default to "0", "1", ...)."""
    frame_ids = [str(i) for i in range(len(images))] if frame_ids is None else [str(f) for f in frame_ids]
    if len(frame_ids) != len(images):
        raise DetectorError(f"detect: {len(frame_ids)} frame ids for {len(images)} images; give one id per image")
    if batch_size < 1:
        raise DetectorError(f"detect.batch_size: {batch_size} is not a positive number of images")
    zero_shot = model.config.model_type in ZERO_SHOT
    if zero_shot:
        prompts = list(
            getattr(model.config, "detect_prompts", None) or [f"a photo of a {c}" for c in classes or VEHICLE_CLASSES]
        )
        labels = dict(enumerate(prompts))
    else:
        labels = {int(k): str(v) for k, v in model.config.id2label.items()}
    accepted = set(inspect.signature(model.forward).parameters)
    if "pixel_mask" in getattr(processor, "model_input_names", ()) and "pixel_mask" not in accepted:
        batch_size = 1  # YOLOS pads a batch to its largest image but takes no mask: boxes would be off
    device = next(model.parameters()).device
    source = f"{source}:{detector_name(model)}"
    out: list[list[dict]] = []
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            chunk = [im.convert("RGB") for im in images[i : i + batch_size]]
            sizes = [(im.height, im.width) for im in chunk]
            if zero_shot:
                inputs = processor(text=[prompts] * len(chunk), images=chunk, truncation=True, return_tensors="pt")
            else:
                inputs = processor(images=chunk, return_tensors="pt")
            inputs = {k: v.to(device) for k, v in inputs.items() if k in accepted}
            outputs = model(**inputs)
            if zero_shot:
                results = processor.post_process_grounded_object_detection(
                    outputs, threshold=threshold, target_sizes=sizes
                )
            else:
                results = processor.post_process_object_detection(outputs, threshold=threshold, target_sizes=sizes)
            for res, (h, w), frame in zip(results, sizes, frame_ids[i : i + batch_size]):
                out.append(vehicle_boxes(res, labels, (w, h), frame, source, classes))
    return out
