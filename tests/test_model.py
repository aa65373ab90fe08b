import numpy as np
import pytest
from PIL import Image

from carsearch.model.clip import (
    ModelConfigError,
    clip_tokenizer,
    encode_images,
    encode_texts,
    load_clip,
    load_pretrained,
    save_clip,
)

TINY = {
    "kind": "tiny",
    "image_size": 32,
    "patch_size": 8,
    "vision_width": 64,
    "vision_layers": 1,
    "vision_heads": 2,
    "text_width": 64,
    "text_layers": 1,
    "text_heads": 2,
    "max_text_len": 16,
    "projection_dim": 32,
}


def test_tokenizer_is_the_real_clip_vocabulary():
    tok = clip_tokenizer(77)
    assert len(tok) == 49408
    # ids of OpenAI CLIP's tokenizer: <|startoftext|> a red pickup ... <|endoftext|>
    assert tok("a red car")["input_ids"] == [49406, 320, 736, 1615, 49407]
    assert (
        tok.decode(tok("Red PICKUP seen from behind")["input_ids"], skip_special_tokens=True)
        == "red pickup seen from behind"
    )


def test_tiny_model_embeds_normalised_and_deterministic():
    m1, p1 = load_clip(TINY, seed=1)
    m2, _ = load_clip(TINY, seed=1)
    m3, _ = load_clip(TINY, seed=2)
    imgs = [Image.new("RGB", (50, 40), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    e1, e2, e3 = (encode_images(m, p1, imgs) for m in (m1, m2, m3))
    assert e1.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(e1, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(e1, e2)
    assert not np.allclose(e1, e3)
    t = encode_texts(m1, p1, ["a red car", "a blue van seen from the rear"])
    assert t.shape == (2, 32)
    assert encode_texts(m1, p1, []).shape == (0, 32)


def test_save_and_reload_is_identical(tmp_path):
    m, p = load_clip(TINY, seed=0)
    save_clip(m, p, tmp_path / "m")
    m2, p2 = load_pretrained(tmp_path / "m")
    txt = ["a silver suv seen from the side"]
    np.testing.assert_allclose(encode_texts(m, p, txt), encode_texts(m2, p2, txt), atol=1e-6)
    img = [Image.new("RGB", (64, 64), (120, 30, 30))]
    np.testing.assert_allclose(encode_images(m, p, img), encode_images(m2, p2, img), atol=1e-6)


def test_bad_model_specs_give_one_line(tmp_path):
    with pytest.raises(ModelConfigError, match="unknown kind 'resnet'"):
        load_clip({"kind": "resnet"})
    with pytest.raises(ModelConfigError) as e:
        load_pretrained(tmp_path / "missing")
    assert "cannot load CLIP model from" in str(e.value) and "\n" not in str(e.value)


def test_hub_id_offline_fails_cleanly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelConfigError, match="openai/clip-vit-base-patch32"):
        load_pretrained("openai/clip-vit-base-patch32")
