"""params.yaml is checked before any stage works: one line naming the key, the bad value and what
is allowed; through `dvc repro` the first stage stops with that line and no traceback."""

import copy
import sys

import pytest
import yaml

from carsearch.core.schema import ConfigError, validate_params
from conftest import REPO, copy_repo, run
from testkit import write_pairs, write_params

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def _set(params, dotted, value):
    p = copy.deepcopy(params)
    cur = p
    *parents, last = dotted.split(".")
    for k in parents:
        cur = cur[k]
    cur[last] = value
    return p


def test_committed_params_are_valid_and_unchanged():
    cfg = validate_params(PARAMS, root=REPO)
    assert cfg.as_dict() == PARAMS
    # typed: numbers are numbers, sections are read by attribute, and read-only
    assert isinstance(cfg.index.batch_size, int) and isinstance(cfg.train.lr, float)
    assert cfg.index.batch_size == PARAMS["index"]["batch_size"] and cfg.data.max_pixels == PARAMS["data"]["max_pixels"]
    with pytest.raises(Exception, match="frozen"):
        cfg.index.batch_size = 1


def test_extra_keys_allowed_where_people_add_them():
    p = _set(_set(_set(PARAMS, "data.max_pixels", 10), "index.corpus_path", "x"), "caption.cache_dir", "c")
    out = validate_params(p, root=REPO)
    assert out.index.corpus_path == "x" and out.data.max_pixels == 10 and out.caption.cache_dir == "c"


@pytest.mark.parametrize(
    "key,value,line",
    [
        ("epochs", -1, "params.yaml: epochs = -1: must be >= 1"),
        ("train.epochs", -1, "params.yaml: train.epochs = -1: must be >= 1"),
        ("lr", "abc", "params.yaml: lr = 'abc': not a number"),
        ("train.batch_size", 0, "params.yaml: train.batch_size = 0: must be >= 1"),
        ("train.precision", "fp16", "params.yaml: train.precision = 'fp16': must be one of 'auto', 'bf16' or 'fp32'"),
        ("train.epoch", 3, "params.yaml: train.epoch = 3: unknown key (did you mean 'epochs'?"),
        ("train.lock.image", "some", "params.yaml: train.lock.image = 'some': must be 'none', 'all' or a number"),
        (
            "data.source",
            "ftp",
            "params.yaml: data.source = 'ftp': must be one of 'street', 'torcs', 'demo', 'folder' or 's3'",
        ),
        ("data.folder.path", None, "params.yaml: data.folder.path = None: must be a folder path"),
        (
            "caption.backend",
            "gpt",
            "params.yaml: caption.backend = 'gpt': must be one of 'offline', 'bedrock' or 'openai'",
        ),
        ("caption.temperature", "hot", "params.yaml: caption.temperature = 'hot': not a number"),
        ("model.kind", "huge", "params.yaml: model.kind = 'huge': must be one of 'tiny', 'pretrained'"),
        ("model.image_size", 65, "params.yaml: model.image_size = 65: must be a multiple of patch_size (8)"),
        ("eval.split", "holdout", "params.yaml: eval.split = 'holdout': not a split of curate.splits"),
        ("index.metric", "ip", "params.yaml: index.metric = 'ip': must be one of 'cosine', 'l2' or 'dot'"),
        ("curate.splits.train", 1.5, "params.yaml: curate.splits.train = 1.5: must be <= 1"),
        ("train.grad_checkpointing", "maybe", "params.yaml: train.grad_checkpointing = 'maybe': must be true or false"),
    ],
)
def test_bad_value_one_line(key, value, line):
    with pytest.raises(ConfigError) as e:
        validate_params(_set(PARAMS, key, value), root=REPO)
    msg = str(e.value)
    assert msg.startswith(line) and "\n" not in msg, msg


def test_paths_checked(tmp_path):
    folder = _set(_set(PARAMS, "data.source", "folder"), "data.folder.path", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"data.folder.path = '.*nope': no such folder"):
        validate_params(folder, root=REPO)
    validate_params(_set(folder, "data.folder.path", str(tmp_path)), root=REPO)
    pre = _set(PARAMS, "model", {"name": "b32", "kind": "pretrained", "pretrained": "/no/such/clip"})
    with pytest.raises(ConfigError, match=r"model.pretrained = '/no/such/clip': no such directory"):
        validate_params(pre, root=REPO)
    validate_params(_set(pre, "model.pretrained", "openai/clip-vit-base-patch32"), root=REPO)
    validate_params(_set(pre, "model.pretrained", str(tmp_path)), root=REPO)


def test_stage_prints_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_set(PARAMS, "lr", "abc")))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    p = run(
        [sys.executable, "-m", "carsearch.stages.ingest"], tmp_path, check=False, env={"CARSEARCH_ROOT": str(tmp_path)}
    )
    assert p.returncode == 1 and p.stdout.strip() == "error: params.yaml: lr = 'abc': not a number", p.stdout


def test_torchrun_worker_failure_is_one_line(tmp_path):
    """finetune_clip starts torchrun itself: a failing worker ends in one line, not ChildFailedError."""
    write_pairs(tmp_path, {"train": 1, "val": 2, "test": 2}, size=32)
    write_params(tmp_path, train={"nproc_per_node": 2})
    p = run(
        [sys.executable, "-m", "carsearch.stages.finetune_clip"],
        tmp_path,
        check=False,
        env={"CARSEARCH_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert p.returncode == 1 and "Traceback" not in p.stdout and "ChildFailedError" not in p.stdout, p.stdout
    assert "error: finetune_clip: 2 of 2 torchrun worker(s) failed" in p.stdout
    write_params(tmp_path, train={"nproc_per_node": 0})
    p = run(
        [sys.executable, "-m", "carsearch.stages.finetune_clip"],
        tmp_path,
        check=False,
        env={"CARSEARCH_ROOT": str(tmp_path)},
    )
    assert p.returncode == 1 and p.stdout.strip() == "error: params.yaml: train.nproc_per_node = 0: must be >= 1", (
        p.stdout
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("cfg") / "repo")


def test_dvc_repro_stops_at_first_stage_with_one_line(repo):
    params = repo / "params.yaml"
    good = params.read_text()
    try:
        params.write_text(yaml.safe_dump(_set(PARAMS, "epochs", -1), sort_keys=False))
        p = run(["dvc", "repro"], repo, check=False, timeout=300)
        assert p.returncode != 0 and "Traceback" not in p.stdout and "IndexError" not in p.stdout, p.stdout
        assert "Running stage 'ingest'" in p.stdout and "error: params.yaml: epochs = -1: must be >= 1" in p.stdout
        assert "make_jsonl" not in p.stdout
        # a null folder path: DVC names the missing dependency instead of "unexpected error"
        params.write_text(yaml.safe_dump(_set(PARAMS, "data.folder.path", None), sort_keys=False))
        p = run(["dvc", "repro"], repo, check=False, timeout=300)
        assert p.returncode != 0 and "unexpected error" not in p.stdout and "None" in p.stdout, p.stdout
    finally:
        params.write_text(good)


# ----------------------------------------------------------------------------- one source of defaults
def _models(model, seen=None):
    """Every pydantic model the schema is made of (the sections and their sub-sections)."""
    import typing

    from pydantic import BaseModel

    seen = seen if seen is not None else {}
    if model.__name__ in seen:
        return seen
    seen[model.__name__] = model
    for f in model.model_fields.values():
        stack = [f.annotation]
        while stack:
            a = stack.pop()
            if isinstance(a, type) and issubclass(a, BaseModel):
                _models(a, seen)
            stack.extend(typing.get_args(a))
    return seen


def test_schema_has_no_default_of_its_own():
    """conf/ is the only home of defaults: every schema field must come from what conf/ composes."""
    from carsearch.core.schema import Params

    with_default = [
        f"{name}.{k}" for name, m in _models(Params).items() for k, f in m.model_fields.items() if not f.is_required()
    ]
    assert with_default == []


def _undeclared(d, model, path=""):
    """Keys of a composed dict that the schema does not type (an `extra="allow"` section lets them in)."""
    import typing

    from pydantic import BaseModel

    out = []
    for k, v in d.items():
        field = model.model_fields.get(k)
        if field is None:
            out.append(path + k)
            continue
        subs, stack = [], [field.annotation]
        while stack:
            a = stack.pop()
            if isinstance(a, type) and issubclass(a, BaseModel):
                subs.append(a)
            stack.extend(typing.get_args(a))
        if isinstance(v, dict) and subs:
            kind = [
                s
                for s in subs
                if "kind" in s.model_fields and typing.get_args(s.model_fields["kind"].annotation) == (v.get("kind"),)
            ]
            out += _undeclared(v, (kind or subs)[0], f"{path}{k}.")
    return out


def _compositions():
    import itertools

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    conf = REPO / "conf"
    groups = {
        g: sorted(p.stem for p in (conf / g).glob("*.yaml") if not p.stem.startswith("_"))
        for g in ("data", "caption", "model")
    }
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        for combo in itertools.product(*groups.values()):
            overrides = [f"{g}={o}" for g, o in zip(groups, combo)]
            yield overrides, OmegaConf.to_container(compose("config", overrides=overrides), resolve=True)


def test_every_composition_of_conf_is_complete_and_fully_typed():
    """Each data x caption x model choice composes to params the schema accepts with no key missing
    (nothing filled in silently) and no key it does not type."""
    from carsearch.core.schema import Params

    for overrides, params in _compositions():
        if params["data"]["source"] == "folder":  # the example folder need not exist here
            params["data"]["folder"]["path"] = str(REPO)
        if params["model"]["kind"] == "pretrained":  # a hub id is checked for its form only
            assert validate_params(params).as_dict() == params, overrides
        else:
            assert validate_params(params, root=REPO).as_dict() == params, overrides
        assert _undeclared(params, Params) == [], overrides


def test_a_key_missing_from_params_is_named():
    p = copy.deepcopy(PARAMS)
    del p["train"]["weight_decay"]
    with pytest.raises(ConfigError, match=r"^params.yaml: train.weight_decay: missing"):
        validate_params(p, root=REPO)


def test_eval_set_items_are_filled_from_conf():
    p = _set(
        PARAMS, "eval.sets", [{"name": "mine", "path": "data/x"}, {"name": "b", "path": "s3://b/p/", "source": "s3"}]
    )
    sets = validate_params(p, root=REPO).eval.sets
    assert sets[0].as_dict() == {"name": "mine", "path": "data/x", **PARAMS["eval"]["set_defaults"]}
    assert sets[1].source == "s3" and sets[1].labels_csv == PARAMS["eval"]["set_defaults"]["labels_csv"]


def test_sections_are_read_by_attribute_only():
    """No dict access on a section (the stopgap for code not yet migrated is gone): `section["key"]`,
    `"key" in section` and `.get(key, fallback)` fail loudly, naming the attribute to read instead;
    a fallback would be a second home for a default."""
    cfg = validate_params(PARAMS, root=REPO)
    with pytest.raises(
        TypeError, match=r"^Index is a typed config section: read \.batch_size \(not \['batch_size'\]\)"
    ):
        cfg.index["batch_size"]
    with pytest.raises(TypeError, match=r"^Params is a typed config section: read \.train"):
        cfg["train"]
    with pytest.raises(TypeError, match=r"^Serve is a typed config section: every key is set \(read \.port\)"):
        "port" in cfg.serve  # noqa: B015
    for section in (cfg.train, cfg.eval.bootstrap, cfg.caption.quotas, cfg.index.ray):
        assert not hasattr(section, "get") and not hasattr(section, "keys") and not hasattr(section, "items")
    assert cfg.caption.quotas.as_dict() == PARAMS["caption"]["quotas"]  # the plain mapping, when one is wanted


def test_an_eval_set_and_its_defaults_share_one_declaration():
    """`eval.set_defaults` and each `eval.sets` item declare their common block once (EvalSet extends it)."""
    from carsearch.core.schema import EvalSet, EvalSetDefaults

    assert issubclass(EvalSet, EvalSetDefaults)
    assert set(EvalSet.model_fields) - set(EvalSetDefaults.model_fields) == {"name", "path"}
