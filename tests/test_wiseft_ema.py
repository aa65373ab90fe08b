"""Fine-tuning that transfers: WiSE-FT weight interpolation (alpha 0 = the base, 1 = the
fine-tuned model), the promotion gate over every candidate, and `train.ema` (the averaged
weights are what training keeps)."""

from __future__ import annotations

import pytest
import torch

from carsearch.index.promotion import promotion_decision
from carsearch.model.clip import load_clip
from carsearch.model.wiseft import interpolate
from carsearch.training.loop import train_clip
from testkit import TINY, section, write_pairs


def _state(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_interpolation_at_0_is_the_base_and_at_1_the_fine_tuned_model():
    base, _ = load_clip(TINY, seed=0)
    ft, _ = load_clip(TINY, seed=1)  # other weights, same architecture
    sb, sf = _state(base), _state(ft)
    floats = [k for k, v in sf.items() if v.is_floating_point() and not torch.equal(sb[k], v)]
    assert floats  # the two models do differ
    at0, at1, half = _state(interpolate(base, ft, 0.0)), _state(interpolate(base, ft, 1.0)), interpolate(base, ft, 0.5)
    assert all(torch.equal(at0[k], sb[k]) for k in floats) and all(torch.equal(at1[k], sf[k]) for k in sf)
    sh = _state(half)
    assert all(torch.allclose(sh[k], (sb[k] + sf[k]) / 2) for k in floats)
    # the inputs are left as they were
    assert all(torch.equal(base.state_dict()[k], sb[k]) and torch.equal(ft.state_dict()[k], sf[k]) for k in sf)
    with pytest.raises(ValueError, match="not in \\[0, 1\\]"):
        interpolate(base, ft, 1.5)


def _eval_json(base=0.50, ft=0.60, wise=(0.55, 0.70, 0.58), set_figures=None):
    ev = {
        "base": {"text_to_image": {"recall@5": base}},
        "finetuned": {"text_to_image": {"recall@5": ft}},
        "candidates": {
            f"wise_ft_{a:g}": {"alpha": a, "text_to_image": {"recall@5": v}} for a, v in zip((0.25, 0.5, 0.75), wise)
        },
    }
    if set_figures:  # {candidate: precision@5} on the eval set "photos"
        ev["sets"] = {
            "photos": {
                name: {"text_to_image": {"precision@5": v}, "image_to_image": {"precision@5": 0.0}}
                for name, v in set_figures.items()
            }
        }
    return ev


def test_the_gate_indexes_the_best_candidate_and_records_all_of_them():
    d = promotion_decision(_eval_json(), "text_to_image.recall@5")
    assert d["use"] == "wise_ft_0.5" and d["alpha"] == 0.5
    assert d["candidates"] == {
        "base": 0.5,
        "finetuned": 0.6,
        "wise_ft_0.25": 0.55,
        "wise_ft_0.5": 0.7,
        "wise_ft_0.75": 0.58,
    }
    assert "wise_ft_0.5" in d["reason"] and "best candidate" in d["reason"]
    # the fine-tuned model is best: no interpolation is chosen
    assert promotion_decision(_eval_json(wise=(0.52, 0.55, 0.59)), "text_to_image.recall@5")["use"] == "finetuned"
    # nothing beats the base by min_gain: the base model
    assert promotion_decision(_eval_json(), "text_to_image.recall@5", min_gain=0.25)["use"] == "base"
    # the deciding set decides, not the test split (where wise_ft_0.5 is best)
    sets = {"base": 0.4, "finetuned": 0.5, "wise_ft_0.25": 0.8, "wise_ft_0.5": 0.6, "wise_ft_0.75": 0.3}
    d = promotion_decision(_eval_json(set_figures=sets), "text_to_image.precision@5", set_name="photos")
    assert d["use"] == "wise_ft_0.25" and d["candidates"] == sets and d["set"] == "photos"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ema")
    return root, write_pairs(root, {"train": 16, "val": 6, "test": 6}, size=40)


def _train(root, pairs, ema):
    """Train the tiny model; the raw weights after every optimizer step are recorded."""
    model, proc = load_clip(TINY, seed=0)
    cfg = section("train", lr=2e-3, epochs=2, batch_size=8, seed=3, ema=ema, checkpoint_dir=None, early_stopping=None)
    steps = []
    train_clip(model, proc, pairs["train"], root, cfg, on_step=lambda *_: steps.append(_state(model)))
    return steps, _state(model)


def test_ema_keeps_the_exponential_average_of_the_weights(data):
    root, pairs = data
    steps, raw = _train(root, pairs, None)
    assert len(steps) >= 3 and all(torch.equal(raw[k], steps[-1][k]) for k in raw)  # no EMA: the last weights
    d = 0.6
    steps_e, kept = _train(root, pairs, d)
    assert all(torch.equal(steps[-1][k], steps_e[-1][k]) for k in raw)  # EMA does not change the training itself
    avg = dict(steps_e[0])  # e_1 = w_1, e_t = d e_(t-1) + (1 - d) w_t (torch.optim.swa_utils' EMA)
    for w in steps_e[1:]:
        avg = {k: d * avg[k] + (1 - d) * w[k] if w[k].is_floating_point() else w[k] for k in w}
    floats = [k for k in kept if kept[k].is_floating_point()]
    assert all(torch.allclose(kept[k], avg[k], atol=1e-6) for k in floats)
    assert any(not torch.allclose(kept[k], raw[k]) for k in floats)  # and that is not the last weights
