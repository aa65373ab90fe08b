"""The docs site (mkdocs.yml, docs/, scripts/gen_docs.py): it builds with `mkdocs build --strict`
(a broken link or a page missing from the nav fails), its generated pages come from the code and
metrics/ (config keys from conf/ + the schema, the CLI's own help, the app's OpenAPI, the results),
and every shell and Python example of the quick start runs, on a small index (a user's folder of
photos under a temporary $HOME)."""

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from testkit import write_pairs, write_params

BIN = Path(sys.executable).parent
QUICKSTART = REPO / "docs" / "quickstart.md"


def _mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "NO_MKDOCS_2_WARNING": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _text(page: Path) -> str:
    """A built page's text (code is split into highlighted spans)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    p = _mkdocs(REPO / "mkdocs.yml", out)
    assert p.returncode == 0, p.stderr[-4000:]
    return out


def test_site_builds_strict_with_every_nav_page(site):
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text().replace("!!python", "#"))["nav"]

    def pages(items):
        for item in items:
            for v in item.values() if isinstance(item, dict) else [item]:
                yield from pages(v) if isinstance(v, list) else [v]

    for page in pages(nav):
        built = site / (page[: -len(".md")] + "/index.html" if page != "index.md" else "index.html")
        assert built.is_file(), page
    text = _text(site / "quickstart/index.html")
    assert "make repro" in text and "carsearch index add ~/Pictures/cars" in text
    # offline: no page loads a script, style or font from the network
    remote = re.compile(r'<(?:script|link)[^>]+(?:src|href)="https?://', re.I)
    assert not [p for p in site.rglob("*.html") if remote.search(p.read_text())]


def test_readme_is_short_and_its_links_resolve():
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) < 10_000
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [l for l in links if "://" not in l]
    assert "docs/quickstart.md" in local and "docs/serve.png" in local
    assert not [l for l in local if not (REPO / l).exists()], local
    for cmd in ("make repro", "make test", "carsearch index add", "carsearch search --image", 'carsearch search "'):
        assert cmd in readme, cmd


def test_generated_reference_pages(site):
    config = (site / "reference/config/index.html").read_text()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    # every key of the composed defaults is listed, with its default and the schema's range
    assert "train.warmup_ratio" in config and "&gt;= 0, &lt;= 1" in config
    assert "linear warmup over this fraction" in config  # the meaning: conf/train/default.yaml's comment
    assert f"<code>{params['serve']['port']}</code>" in config and "serve.upload_rate_per_minute" in config
    assert "-S caption=bedrock_claude" in config  # the other options of a group
    # every key has a meaning: a key added to conf/ needs its comment there
    undocumented = re.findall(r"<tr>\s*<td><code>([\w.]+)</code></td>(?:(?!</tr>).)*<td>—</td>\s*</tr>", config, re.S)
    assert not undocumented, f"conf/ keys without a comment: {undocumented}"
    rows = re.findall(r"<tr>\s*<td><code>([\w.]+)</code></td>", config)
    assert "train.lr" in rows and "index.ray.actor_cpus" in rows and "caption.bedrock.role_arn" in rows
    cli = (site / "reference/cli/index.html").read_text()
    assert "--min-confidence" in cli and "carsearch index add" in cli
    spec = json.loads((site / "reference/openapi.json").read_text())
    assert "/api/v1/search" in spec["paths"] and spec["info"]["title"] == "carsearch"
    api = (site / "reference/api/index.html").read_text()
    assert "/api/v1/search/image" in api and 'href="../openapi.json"' in api


def test_results_page_is_built_from_metrics(site):
    results = (site / "results/index.html").read_text()
    summary = json.loads((REPO / "metrics/summary.json").read_text())
    assert f"{summary['t2i_R@5']:.3f}" in results
    commit = subprocess.run(
        ["git", "log", "-1", "--format=%h", "--", "metrics/summary.json"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    if commit:  # every table names the commit that wrote its file
        assert f"<code>{commit}</code>" in results


def test_a_broken_link_fails_the_build(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "docs", docs)
    (docs / "quickstart.md").write_text(QUICKSTART.read_text() + "\n[gone](no-such-page.md)\n")
    cfg = (REPO / "mkdocs.yml").read_text().replace("scripts/gen_docs.py", str(REPO / "scripts/gen_docs.py"))
    (tmp_path / "mkdocs.yml").write_text(cfg)
    p = _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert p.returncode != 0
    assert "no-such-page.md" in p.stderr and "quickstart.md" in p.stderr, p.stderr[-2000:]


# ------------------------------------------------------------------ the quick start's examples
def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", QUICKSTART.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A small built index (the base model: no training) in a repo folder, and a $HOME with a
    folder of photos in colour sub-folders, as a user would have after `make repro`."""
    root = tmp_path_factory.mktemp("qs")
    write_pairs(root, {"train": 8, "val": 4, "test": 8}, size=40)
    write_params(root, index={"promote": {"metric": "text_to_image.recall@5", "min_gain": 5.0}})
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics/eval.json").write_text(
        json.dumps({"base": {"text_to_image": {"recall@5": 0.5}}, "finetuned": {"text_to_image": {"recall@5": 0.1}}})
    )
    (root / ".venv").symlink_to(BIN.parent)
    mp = pytest.MonkeyPatch()
    mp.setenv("CARSEARCH_ROOT", str(root))
    from carsearch.sources.demo import demo_items
    from carsearch.stages import build_index

    build_index.main()
    mp.undo()
    home = tmp_path_factory.mktemp("home")
    for i, (_, data, labels, _) in enumerate(demo_items(12, 48, seed=5, colors=["red", "white", "blue"])):
        d = home / "Pictures/cars" / labels["color"]
        d.mkdir(parents=True, exist_ok=True)
        (d / f"IMG_{i:04d}.jpg").write_bytes(data)
    assert (home / "Pictures/cars/red/IMG_0001.jpg").is_file()  # the photo the quick start searches with
    env = {
        **os.environ,
        "HOME": str(home),
        "CARSEARCH_ROOT": str(root),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO / "src"),
    }
    return root, home, env


def test_the_two_commands_are_make_targets():
    (block,) = [b for b in _blocks("bash") if "make repro" in b]
    targets = [l.split()[1] for l in block.splitlines() if l.startswith("make ")]
    assert targets == ["repro", "test"]
    # `make -n`: what each would run (both run for real in CI: .ci/run runs `make test`; the
    # pipeline tests run `dvc repro`); here, that they exist and run what the page says
    recipes = {t: subprocess.run(["make", "-n", t], cwd=REPO, capture_output=True, text=True) for t in targets}
    assert all(r.returncode == 0 for r in recipes.values()), recipes
    assert "scripts/setup.sh" in recipes["repro"].stdout and "dvc repro" in recipes["repro"].stdout
    assert "pytest" in recipes["test"].stdout


def test_quickstart_shell_examples_run(user):
    root, home, env = user
    blocks = [b for b in _blocks("bash") if "make repro" not in b]
    assert len(blocks) == 3, "the three things to try"
    outputs = []
    for block in blocks:
        p = subprocess.run(["bash", "-e", "-c", block], cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, f"{block}\n{p.stdout}\n{p.stderr}"
        outputs.append(p.stdout)
    text, folder, image = outputs
    hit = re.compile(r"^1\t-?\d\.\d{4}\t\S+\t.+\tdata/raw/images/\S+\.jpg", re.M)  # rank score id caption path
    assert hit.search(text), text
    # the folder was added, and its photos are found (paths under $HOME, never copied)
    assert "index add: 12 added, 0 already indexed, 0 rejected" in folder, folder
    assert str(home / "Pictures/cars") in folder, folder
    lines = image.splitlines()
    assert re.match(rf"^1\t1\.0000\t\S+\t\t{re.escape(str(home))}/Pictures/cars/red/IMG_0001\.jpg", lines[0]), image
    paths = lines[5:]  # `-f`: only the originals' paths, one per line
    assert len(paths) == 5 and all(Path(l).is_file() for l in paths), image


def test_quickstart_python_example_runs(user):
    root, home, env = user
    (block,) = _blocks("python")
    p = subprocess.run([sys.executable, "-c", block], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 4 and lines[-1] == "3 hits for IMG_0001.jpg", p.stdout
