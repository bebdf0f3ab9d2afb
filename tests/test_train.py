"""The demo recipe: the committed model's accuracy, training on any manifest, the oracle's exclusion."""

import json

from click.testing import CliRunner

from razor.cli import main
from razor.data import read_manifest
from razor.demo import DEMO_CLIP as DEMO_MODEL
from razor.families.clip.adapter import load_clip
from razor.families.clip.zeroshot import accuracy, image_embeddings, label_embeddings, ranks
from razor.pairs import Pairs


def test_committed_demo_model_is_at_least_90_percent_zero_shot_on_each_axis(demo_manifest):
    adapter = load_clip("demo")
    m = read_manifest(demo_manifest, verify=False)
    test = Pairs.load(m.split("test"), adapter.preprocess, m.labels())
    top = ranks(image_embeddings(adapter, test.pixels), label_embeddings(adapter, m.labels(), m.prompts))
    acc = accuracy(top, test.label_ids)
    assert min(acc.values()) >= 0.9, acc
    size = sum(p.stat().st_size for p in DEMO_MODEL.iterdir())
    assert size < 20 * 2**20 and (DEMO_MODEL / "model.safetensors").is_file()


def test_train_on_an_imported_folder_and_exclude_a_label(tmp_path):
    from razor.demo import world

    for label, kind in (("star", ("star", "solid")), ("moon", ("moon", "striped"))):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(12):
            world.sample(1, i, "shape", kind).image.save(tmp_path / "imgs" / label / f"{i}.png")
    runner = CliRunner()
    res = runner.invoke(main, ["data", "import", str(tmp_path / "imgs"), "--out", str(tmp_path / "m.parquet")])
    assert res.exit_code == 0 and "24 images, 2 labels" in res.output
    res = runner.invoke(main, ["demo", "train", "--data", str(tmp_path / "m.parquet"), "--out", str(tmp_path / "model"),
                               "--exclude", "moon", "--steps", "3"])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "model" / "training.json").read_text())
    m = read_manifest(tmp_path / "m.parquet")
    assert record["exclude"] == "moon" and record["train_items"] == len(m.filter(lambda r: r["split"] == "train" and r["label"] == "star"))
    load_clip(str(tmp_path / "model"))  # loads back from safetensors, offline
