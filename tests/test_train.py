"""Training: texts and positives, loss, locking, schedule, determinism, resume after a kill, bad input."""

import math

import numpy as np
import pytest
import torch

from carsearch.model.clip import ModelConfigError, load_clip
from carsearch.sources.labels import same_model_relevance
from carsearch.training.checkpoint import load_checkpoint, save_checkpoint
from carsearch.training.loop import train_clip
from carsearch.training.loss import multi_positive_loss, same_model_loss
from carsearch.training.optim import apply_lock, autocast_dtype, lr_lambda
from carsearch.training.texts import positives, text_variants
from testkit import TINY, section, write_pairs


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return root, write_pairs(root, {"train": 16, "val": 12, "test": 6}, size=40)


def _cfg(**kw):
    """The composed `train` section (conf/train/default.yaml) made small and fast."""
    return section(
        "train", **{"lr": 2e-3, "epochs": 2, "batch_size": 8, "seed": 3, "augment": {"shift": 2, "flip": True}, **kw}
    )


def test_text_variants_and_positives():
    pair = {
        "caption": "A red Demo Sedan A sedan seen from the front.",
        "labels": {
            "model_id": "a",
            "make": "Demo",
            "model": "Sedan A",
            "body_type": "sedan",
            "color": "red",
            "view": "front",
        },
    }
    v = text_variants(pair)
    texts = [t for t, _ in v]
    assert texts[0] == pair["caption"] and "a red sedan seen from the front" in texts and "a red car" in texts
    assert "a red Demo Sedan A sedan seen from the front" in texts
    assert text_variants(pair, "caption") == v[:1]
    labels = [{"color": "red", "view": "front"}, {"color": "red", "view": "side"}, {"color": "blue", "view": "front"}]
    pos = positives(labels, [{"color": "red"}, {"color": "red", "view": "side"}, {}])
    assert pos.tolist() == [[True, False, False], [True, True, False], [False, False, True]]


def test_multi_positive_loss_is_clip_loss_on_identity():
    torch.manual_seed(0)
    img, txt = (
        torch.nn.functional.normalize(torch.randn(5, 8), dim=-1),
        torch.nn.functional.normalize(torch.randn(5, 8), dim=-1),
    )
    scale = torch.tensor(10.0)
    logits = scale * img @ txt.t()
    ref = (
        torch.nn.functional.cross_entropy(logits, torch.arange(5))
        + torch.nn.functional.cross_entropy(logits.t(), torch.arange(5))
    ) / 2
    assert torch.allclose(multi_positive_loss(img, txt, scale, torch.eye(5, dtype=torch.bool)), ref, atol=1e-6)


def test_same_model_loss():
    f = torch.nn.functional.normalize
    a, b, c = f(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]), dim=-1)
    scale = torch.tensor(10.0)
    keys = same_model_relevance([{"model_id": k} for k in ("m1", "m1", "m2", "m2")])
    together = torch.stack([a, a, b, b])  # same model -> same embedding
    apart = torch.stack([a, b, a, b])  # each image nearest to the other model
    lo, hi = same_model_loss(together, scale, keys), same_model_loss(apart, scale, keys)
    assert lo < 0.01 < 1.0 < hi
    # one positive per row and no other candidates: exactly -log softmax over the 3 others
    x = f(torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    logits = scale * x @ x.t()
    ref = torch.stack(
        [-(torch.log_softmax(logits[i][[j for j in range(4) if j != i]], 0)[[0, 0, 2, 2][i]]) for i in range(4)]
    ).mean()
    assert torch.allclose(same_model_loss(x, scale, keys), ref, atol=1e-5)
    # nobody has a partner (or unknown models): no signal, still differentiable
    z = same_model_loss(
        torch.stack([a, b, c]).requires_grad_(),
        scale,
        same_model_relevance([{"model_id": "m1"}, {}, {"model_id": "m3"}]),
    )
    assert float(z.detach()) == 0.0 and z.requires_grad


def test_lock_towers():
    model, _ = load_clip(TINY)
    total = sum(p.numel() for p in model.parameters())
    c = apply_lock(model, {"image": "all", "text": "none"})
    assert not any(p.requires_grad for p in model.vision_model.parameters())
    assert all(p.requires_grad for p in model.text_model.parameters())
    assert c["total_params"] == total and c["trainable_params"] < total
    model, _ = load_clip(TINY)
    apply_lock(model, {"image": 1, "text": 0})
    layers = model.vision_model.encoder.layers
    assert not any(p.requires_grad for p in layers[0].parameters()) and all(
        p.requires_grad for p in layers[-1].parameters()
    )
    assert all(p.requires_grad for p in model.visual_projection.parameters())
    assert not any(p.requires_grad for p in model.text_model.encoder.parameters())
    with pytest.raises(ValueError, match="has 2"):
        apply_lock(load_clip(TINY)[0], {"image": 5})
    with pytest.raises(ValueError, match="unknown tower"):
        apply_lock(load_clip(TINY)[0], {"audio": "all"})


def test_cosine_schedule_with_warmup():
    f = lr_lambda(100, 10, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert (
        f(10) == pytest.approx(1.0)
        and f(55) == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-6)
        and f(100) == pytest.approx(0.1)
    )
    assert autocast_dtype("fp32", torch.device("cpu")) is None and autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(ValueError, match=r"^train.precision: 'fp8' \(expected auto, bf16 or fp32\)$"):
        autocast_dtype("fp8", torch.device("cpu"))


def _train(root, pairs, **kw):
    model, proc = load_clip(TINY, seed=0)
    from carsearch.evaluation.protocol import validation_fn

    val = validation_fn(proc, pairs["val"], root, section("eval", ks=[1, 5]))
    res = train_clip(model, proc, pairs["train"], root, _cfg(**kw), validate=val)
    return model, res


def test_deterministic_and_learns(data, tmp_path):
    """Two trainings from scratch, each with its own checkpoint folder (neither can resume the
    other's): the same losses, history and weights, and the model learns."""
    root, pairs = data
    m1, r1 = _train(root, pairs, epochs=3, checkpoint_dir=str(tmp_path / "a"))
    m2, r2 = _train(root, pairs, epochs=3, checkpoint_dir=str(tmp_path / "b"))
    assert r1.resumed_from_epoch == r2.resumed_from_epoch == 0 and len(r1.losses) == len(r2.losses) == 6
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert r1.losses == r2.losses and strip(r1.history) == strip(r2.history)
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert "t2i_recall@5" in r1.history[0] and "val_recall@5" in r1.history[0]
    assert r1.best_epoch == 1 + int(np.argmax([h["val_recall@5"] for h in r1.history]))
    # it learns: the epoch loss falls and validation recall rises above the untrained model's
    from carsearch.evaluation.protocol import validation_fn

    untrained, proc = load_clip(TINY, seed=0)
    before = validation_fn(proc, pairs["val"], root, section("eval", ks=[1, 5]))(untrained)["val_recall@5"]
    loss = [h["loss"] for h in r1.history]
    assert loss[-1] < loss[0], loss
    assert r1.best_score > before, (before, [h["val_recall@5"] for h in r1.history])


def test_accumulation_checkpointing_bf16_and_early_stop(data):
    root, pairs = data
    _, r = _train(
        root,
        pairs,
        epochs=3,
        grad_accum=2,
        grad_checkpointing=True,
        precision="bf16",
        image_loss_weight=0.5,
        early_stopping={"metric": "val_recall@5", "patience": 1, "min_delta": 10.0},
    )
    assert all(math.isfinite(x) for x in r.losses)
    assert r.stopped_early and len(r.history) == 2 and r.best_epoch == 1  # nothing beats epoch 1 by 10


def test_resume_after_kill_equals_uninterrupted(data, tmp_path):
    root, pairs = data
    m_ref, r_ref = _train(root, pairs, epochs=3, checkpoint_dir=str(tmp_path / "ref"))

    class Killed(Exception):
        pass

    def kill(epoch, info):
        if epoch == 2:
            raise Killed

    from carsearch.evaluation.protocol import validation_fn

    model, proc = load_clip(TINY, seed=0)
    val = validation_fn(proc, pairs["val"], root, section("eval", ks=[1, 5]))
    with pytest.raises(Killed):
        train_clip(
            model,
            proc,
            pairs["train"],
            root,
            _cfg(epochs=3, checkpoint_dir=str(tmp_path / "ck")),
            on_epoch=kill,
            validate=val,
        )
    assert (tmp_path / "ck" / "last.pt").is_file()
    # the process died: a new model object, from the checkpoint
    model, proc = load_clip(TINY, seed=0)
    res = train_clip(
        model, proc, pairs["train"], root, _cfg(epochs=3, checkpoint_dir=str(tmp_path / "ck")), validate=val
    )
    assert res.resumed_from_epoch == 1
    assert res.losses == r_ref.losses
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m_ref.state_dict().values()))


def test_checkpoint_from_another_architecture(tmp_path):
    small, _ = load_clip(TINY)
    save_checkpoint(tmp_path, {"model": small.state_dict(), "arch": None})
    other, _ = load_clip({**TINY, "vision_width": 48})
    with pytest.raises(ModelConfigError, match="does not fit the configured model"):
        load_checkpoint(tmp_path / "last.pt", other)
    from carsearch.training.checkpoint import architecture

    save_checkpoint(tmp_path, {"model": small.state_dict(), "arch": architecture(small)})
    with pytest.raises(ModelConfigError, match="another architecture"):
        load_checkpoint(tmp_path / "last.pt", other)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ModelConfigError, match="not a carsearch training checkpoint"):
        load_checkpoint(tmp_path / "junk.pt", other)


class _Killed(Exception):
    pass


def _killed_at_epoch_2(root, pairs, cfg, spec=TINY) -> None:
    """Train until epoch 2 ends (its checkpoint holds epoch 1), then die."""

    def kill(epoch, info):
        if epoch == 2:
            raise _Killed

    model, proc = load_clip(spec, seed=0)
    with pytest.raises(_Killed):
        train_clip(model, proc, pairs["train"], root, cfg, on_epoch=kill)


def test_relative_checkpoint_dir_is_the_roots_and_a_finished_training_removes_it(data, tmp_path, monkeypatch):
    """train.checkpoint_dir (relative, as configured) lives under the root trained from, whatever the
    current directory; a resumed, finished training removes it."""
    root, pairs = data
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cfg = _cfg(epochs=2)
    assert cfg.checkpoint_dir == "models/checkpoints/finetune_clip"  # the configured default
    ck = root / cfg.checkpoint_dir
    _killed_at_epoch_2(root, pairs, cfg)
    assert (ck / "last.pt").is_file() and not list(cwd.iterdir())
    model, proc = load_clip(TINY, seed=0)
    res = train_clip(model, proc, pairs["train"], root, cfg)
    assert res.resumed_from_epoch == 1 and len(res.history) == 2
    assert not ck.exists() and not list(cwd.iterdir())  # finished: nothing to resume, nothing left


def test_finished_training_removes_its_checkpoint(data, tmp_path):
    root, pairs = data
    model, proc = load_clip(TINY, seed=0)
    res = train_clip(model, proc, pairs["train"], root, _cfg(epochs=1, checkpoint_dir=str(tmp_path / "ck")))
    assert res.resumed_from_epoch == 0 and len(res.history) == 1
    assert not (tmp_path / "ck").exists()


def test_checkpoint_of_another_architecture_or_run_is_moved_aside(data, tmp_path, capfd):
    """Not a hard stop: a checkpoint that is not this run's is renamed aside with one line naming
    the reason, and training starts from scratch; only a matching checkpoint is resumed."""
    root, pairs = data
    ck = tmp_path / "ck"
    _killed_at_epoch_2(root, pairs, _cfg(epochs=2, checkpoint_dir=str(ck)))
    capfd.readouterr()
    other, proc2 = load_clip({**TINY, "text_width": 48}, seed=0)
    res = train_clip(other, proc2, pairs["train"], root, _cfg(epochs=1, checkpoint_dir=str(ck)))
    err = [line for line in capfd.readouterr().err.splitlines() if line.startswith("train:")]
    assert res.resumed_from_epoch == 0 and len(err) == 1, err
    assert "another architecture (vision 2x32 @32px, text 2x32, dim 16)" in err[0] and "text 2x48" in err[0]
    aside = sorted(p.name for p in ck.iterdir())
    assert len(aside) == 1 and aside[0].startswith("last.pt.mismatch-") and aside[0] in err[0], (aside, err)
    # another run of the same model (other params): moved aside too, never resumed
    _killed_at_epoch_2(root, pairs, _cfg(epochs=2, checkpoint_dir=str(ck)))
    capfd.readouterr()
    model, proc = load_clip(TINY, seed=0)
    res = train_clip(model, proc, pairs["train"], root, _cfg(epochs=2, lr=1e-3, checkpoint_dir=str(ck)))
    err = [line for line in capfd.readouterr().err.splitlines() if line.startswith("train:")]
    assert res.resumed_from_epoch == 0 and len(err) == 1 and "other params/data" in err[0], err
    assert len(list(ck.glob("last.pt.mismatch-*"))) == 2 and not (ck / "last.pt").exists()
    # a file that is no checkpoint at all: the same
    (ck / "last.pt").write_text("not a checkpoint")
    res = train_clip(model, proc, pairs["train"], root, _cfg(epochs=1, checkpoint_dir=str(ck)))
    err = [line for line in capfd.readouterr().err.splitlines() if line.startswith("train:")]
    assert res.resumed_from_epoch == 0 and "not a carsearch training checkpoint" in err[0], err
    assert len(list(ck.glob("last.pt.mismatch-*"))) == 3


@pytest.mark.parametrize("n", [0, 1])
def test_empty_or_one_pair_train_split(data, n):
    root, pairs = data
    model, proc = load_clip(TINY)
    with pytest.raises(ValueError, match=f"train split has {n} pair"):
        train_clip(model, proc, pairs["train"][:n], root, _cfg())


def test_unknown_model_config():
    with pytest.raises(ModelConfigError, match="unknown kind"):
        load_clip({"kind": "tiny-ish"})


def test_unknown_labels_are_no_constraint():
    """An image without a colour label is neither a positive nor a negative for "a red car"."""
    from carsearch.training.texts import unknowns

    labels = [{"color": "red"}, {"view": "side"}, {"color": "blue", "view": "side"}]
    cons = [{"color": "red"}, {"color": "red", "view": "side"}, {"view": "side"}]
    unk = unknowns(labels, cons)
    # image 0 (red, view unknown) vs "red side": unknown; image 1 (side, colour unknown) vs "red": unknown
    assert unk.tolist() == [[False, True, True], [True, True, False], [False, False, False]]
    torch.manual_seed(0)
    img, txt = (
        torch.nn.functional.normalize(torch.randn(3, 8), dim=-1),
        torch.nn.functional.normalize(torch.randn(3, 8), dim=-1),
    )
    pos = positives(labels, cons)
    scale = torch.tensor(10.0)
    base = multi_positive_loss(img, txt, scale, pos)
    masked = multi_positive_loss(img, txt, scale, pos, unk)
    assert torch.isfinite(masked) and not torch.allclose(base, masked)
    # moving an ignored text does not change the loss of the rows that ignore it... and gradients stay finite
    img.requires_grad_(True)
    multi_positive_loss(img, txt, scale, pos, unk).backward()
    assert torch.isfinite(img.grad).all()
