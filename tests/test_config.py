"""Every config in conf/ composes, resolves, and the committed params.yaml is the default composition."""

import itertools
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return OmegaConf.to_container(compose("config", overrides=list(overrides)), resolve=True)


def test_groups_one_per_concern():
    assert {"data", "caption", "model", "train", "eval", "index", "paths"} <= set(GROUPS)


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_config_composes(group, option):
    cfg = _compose([f"{group}={option}"])
    assert cfg[group] is not None
    # the swept hyperparameters flow into the train group
    assert cfg["train"]["lr"] == cfg["lr"] and cfg["train"]["epochs"] == cfg["epochs"]


def test_all_model_and_data_combinations_compose():
    for model, data in itertools.product(options("model"), options("data")):
        cfg = _compose([f"model={model}", f"data={data}"])
        assert cfg["model"]["kind"] in {"tiny", "pretrained"}


def test_sweep_override_reaches_train_group():
    cfg = _compose(["lr=1e-4", "epochs=2"])
    assert cfg["train"]["lr"] == 1e-4 and cfg["train"]["epochs"] == 2


def test_committed_params_yaml_is_the_default_composition():
    committed = yaml.safe_load((CONF.parent / "params.yaml").read_text())
    assert committed == _compose(), "params.yaml is stale: run `dvc exp run` (or `python scripts/compose_params.py`)"
