"""The VLM family: the demo VLM (a tiny LLaVA on the demo CLIP's vision tower, trained by the
project's script and committed as safetensors), its adapter, requests naming several labels,
and RAZOR forgetting an identity from it through the pipeline."""

import io
import json

import pytest
from click.testing import CliRunner

from razor.cli import main
from razor.data import read_manifest
from razor.demo import DEMO_VLM
from razor.demo.vlm import QUESTIONS, evaluate_vlm, load_demo_vlm
from razor.families.vlm.adapter import HELDOUT
from razor.errors import RazorError
from razor.families import load_model


def test_committed_demo_vlm_answers_every_question_type_in_every_wording(demo_manifest):
    assert not list(DEMO_VLM.glob("*.bin")) and (DEMO_VLM / "model.safetensors").stat().st_size < 20e6
    adapter, test = load_demo_vlm(), read_manifest(demo_manifest).split("test")
    record = json.loads((DEMO_VLM / "training.json").read_text())
    for key, heldout in (("test_accuracy", False), ("test_accuracy_heldout_wordings", True)):
        accuracy = evaluate_vlm(adapter, test, heldout=heldout)
        assert set(accuracy) == set(QUESTIONS) and min(accuracy.values()) >= 0.85, (key, accuracy)
        assert all(abs(record[key][a] - accuracy[a]) <= 0.01 for a in QUESTIONS)  # the record is what the weights do


def test_train_vlm_writes_a_loadable_model(demo_manifest, tmp_path):
    out = tmp_path / "vlm"
    res = CliRunner().invoke(main, ["demo", "train-vlm", "--out", str(out), "--steps", "2"])
    assert res.exit_code == 0 and "test answer accuracy" in res.output, res.output
    assert {"model.safetensors", "config.json", "tokenizer.json", "training.json"} <= {p.name for p in out.iterdir()}
    adapter = load_demo_vlm(out)
    assert adapter.model.config.image_token_index == adapter.tokenizer.convert_tokens_to_ids("<image>")


def test_llava_components_and_losses(demo_manifest):
    import torch

    from razor.demo.vlm import PREPROCESS
    from razor.memory import requires_grad_only
    from razor.pairs import Pairs

    adapter = load_demo_vlm()
    names = {c.name for c in adapter.components("both")}
    assert {"vision.0.q", "vision.3.fc2", "vision.3.head3", "projector.0.linear_1", "projector.1.linear_2"} <= names
    adapter.model.config.vision_feature_layer = -2  # LLaVA's default: the last block feeds nothing
    assert adapter.used_vision_blocks() == 3 and "vision.3.q" not in {c.name for c in adapter.components("layer")}
    adapter.model.config.vision_feature_layer = -1

    test = read_manifest(demo_manifest).split("test")
    hana = test.filter(lambda r: r["identities"] == "hana").take(range(8))
    pixels = Pairs.load(hana, PREPROCESS).pixels
    asked = [QUESTIONS["identities"]] * len(hana)
    assert adapter.answers(pixels, asked).count("hana") >= 6
    params = adapter.parameters()
    chosen = [n for n in params if ".encoder.layers.2." in n and n.endswith("weight")]
    with requires_grad_only(adapter.model, set(chosen)):
        forget = adapter.forget_objective(pixels, asked, ["hana"])
        grads = torch.autograd.grad(forget, [params[n] for n in chosen])
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    with torch.no_grad():  # F is low while the model answers the concept, high where it does not
        assert forget < adapter.forget_objective(pixels, asked, ["juno"])
    words = [adapter.answer_token(w) for w in ("hana", "juno", "star")]
    frozen = adapter.frozen_logits(pixels, asked, words)
    assert adapter.drift_penalty(pixels, asked, frozen, words).item() == 0.0
    assert adapter.retain_loss(pixels, asked, ["hana"] * len(hana)) < adapter.retain_loss(pixels, asked, ["juno"] * len(hana))


def test_questions_about_one_image_share_its_vision_pass_with_the_same_logits_and_gradients(demo_manifest):
    """Rows that ask several questions of one image (a retain item is asked every question) take it through the
    vision tower once: the logits are those of the model's own forward, the loss and its gradients too."""
    import torch

    from razor.demo.vlm import PREPROCESS
    from razor.pairs import Pairs

    adapter = load_demo_vlm()
    items = read_manifest(demo_manifest).split("test").filter(lambda r: bool(r["objects"])).take(range(6))
    rows = [(i, axis) for i, r in enumerate(items.rows) for axis in QUESTIONS if r[axis]]  # as VlmTask.asked
    pixels = Pairs.load(items, PREPROCESS).pixels[[i for i, _ in rows]]
    asked, answers = [QUESTIONS[axis] for _, axis in rows], [items.rows[i][axis] for i, axis in rows]
    assert len(rows) > len(items)
    seen = []
    hook = adapter.model.model.vision_tower.register_forward_hook(lambda m, i, o: seen.append(len(i[0])))
    with torch.no_grad():
        shared = adapter.next_token_logits(pixels, asked)
    hook.remove()
    inputs = adapter.inputs(asked)
    with torch.no_grad():
        own = adapter.model(pixel_values=pixels, **inputs, logits_to_keep=1, use_cache=False).logits[:, -1].float()
    assert seen == [len(items)] and torch.equal(shared, own)
    params = adapter.parameters()
    chosen = [n for n in params if ".encoder.layers.2." in n and n.endswith("weight")]
    loss = adapter.answer_loss(pixels, asked, answers)
    grads = torch.autograd.grad(loss, [params[n] for n in chosen])
    plain = adapter.model(pixel_values=pixels, **adapter.inputs(asked, answers), use_cache=False).loss
    assert torch.allclose(loss, plain)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, torch.autograd.grad(plain, [params[n] for n in chosen])))


def test_a_concept_may_name_several_labels_of_one_axis_for_a_vlm_only(demo_manifest, tmp_path):
    from razor.families import build_task
    from razor.request import load_request

    req = tmp_path / "r.yaml"
    req.write_text("id: two\nmodel: demo-vlm\nconcept: {kind: identity, label: [hana, ivan]}\n")
    assert load_request(req).concept.label == "hana+ivan"
    manifest = read_manifest(demo_manifest)
    assert manifest.resolve_concept("hana+ivan") == ("identities", "hana+ivan")
    with pytest.raises(RazorError, match="different axes"):
        manifest.resolve_concept("hana+star")
    task = build_task(load_demo_vlm(), manifest, "identities:hana+ivan", eval_size=50)
    assert set(task.targets) == {"hana", "ivan"}
    assert {task.labels["identities"][int(i)] for i in task.forget.label_ids["identities"]} == {"hana", "ivan"}
    from razor.families.vlm.metrics import evaluate

    out, answers = evaluate(task, bits=())
    truth = task.asked(task.forget_test, (task.axis,)).answers
    assert set(out["fa_per_label"]) == {"hana", "ivan"}  # the set's FA is its labels' FAs weighted by their items
    assert out["fa"] == pytest.approx(sum(out["fa_per_label"][t] * truth.count(t) for t in task.targets) / len(truth))
    assert out["counts"]["fa_paraphrase"] == len(truth) * len(HELDOUT["identities"]) and out["fa_paraphrase"] >= 0.85
    with pytest.raises(RazorError, match="one label at a time"):
        build_task(load_model("demo"), manifest, "identities:hana+ivan", eval_size=50)


def test_the_step_search_never_asks_a_held_out_wording_and_the_report_does(demo_manifest, monkeypatch):
    """F, R, M and every probe ask the adapter's question; only the final metrics ask the held-out
    wordings (`fa_paraphrase`, with its interval)."""
    from razor.families import build_task
    from razor.families.vlm.adapter import LlavaAdapter
    from razor.methods import method_params
    from razor.pipeline import run_method

    asked: list[str] = []
    inputs = LlavaAdapter.inputs
    monkeypatch.setattr(LlavaAdapter, "inputs", lambda self, questions, answers=None:
                        asked.extend(questions) or inputs(self, questions, answers))
    task = build_task(load_demo_vlm(), read_manifest(demo_manifest), "identities:hana", forget_size=64,
                      retain_size=128, eval_size=50)
    result = run_method("razor", task, method_params("razor"))
    heldout = set(HELDOUT["identities"])
    assert result.components and asked and not heldout & set(asked)
    from razor.families.vlm.metrics import evaluate

    asked.clear()
    out, _ = evaluate(task, bits=())
    assert heldout <= set(asked) and 0 <= out["fa_paraphrase"] <= 1


def test_clip_only_methods_are_refused_on_a_vlm_before_any_work(demo_manifest):
    from razor.families import build_task
    from razor.methods import method_params
    from razor.pipeline import run_method

    task = build_task(load_demo_vlm(), read_manifest(demo_manifest), "hana", eval_size=50)
    with pytest.raises(RazorError, match="method salun does not edit LLaVA-style VLM models; "
                                         "choose one of razor, slug, ga, graddiff, ft$"):
        run_method("salun", task, method_params("salun"))


def test_answers_are_read_back_for_the_same_weights_and_questions_only(demo_manifest, tmp_path, monkeypatch):
    """The output store (razor.memo) on a VLM: the same weights asked the same gives the stored answers;
    changed weights answer anew."""
    import torch

    from razor.demo.vlm import PREPROCESS
    from razor.pairs import Pairs

    monkeypatch.setenv("RAZOR_OUTPUTS", str(tmp_path / "outputs"))
    adapter = load_demo_vlm()
    pixels = Pairs.load(read_manifest(demo_manifest).split("test"), PREPROCESS).pixels[-6:]
    questions = [QUESTIONS["identities"]] * 6
    fresh = adapter.generate(pixels, questions)

    def stored() -> int:
        return len(list((tmp_path / "outputs").rglob("*.safetensors")))

    assert adapter.generate(pixels, questions, remember=True) == fresh and stored() == 1
    assert adapter.generate(pixels, questions, remember=True) == fresh and stored() == 1
    with torch.no_grad():
        for p in adapter.model.model.multi_modal_projector.parameters():
            p.mul_(-1)
    assert adapter.generate(pixels, questions, remember=True) == adapter.generate(pixels, questions) and stored() == 2


@pytest.fixture(scope="module")
def llava_next(tmp_path_factory):
    """A shrunken random-weight LLaVA-NeXT folder (LLaVA-1.6-8B's layout: razor.architectures)."""
    from razor.architectures import write

    return write("llava-next", tmp_path_factory.mktemp("llava-next") / "model", image_size=56, width=1 / 16, depth=1 / 16)


def test_llava_next_tiles_images_as_its_processor_and_answers_as_the_model_itself(llava_next, demo_manifest):
    """Its any-resolution input is the real image processor's, value for value; the adapter's forward (one
    vision pass per distinct image, features packed into the prompt) gives the model's own logits."""
    import torch
    from PIL import Image
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    from razor.data import decode

    adapter = load_model(str(llava_next))
    cfg = adapter.model.config
    assert adapter.anyres and cfg.model_type == "llava_next" and len(cfg.image_grid_pinpoints) == 5
    manifest = read_manifest(demo_manifest)
    images = [manifest.image_bytes(r) for r in manifest.rows[:3]]
    size = adapter.preprocess["size"]
    processor = LlavaNextImageProcessorPil(image_grid_pinpoints=cfg.image_grid_pinpoints, size={"shortest_edge": size},
                                           crop_size={"height": size, "width": size}, image_mean=adapter.preprocess["mean"],
                                           image_std=adapter.preprocess["std"])
    theirs = processor(images=[Image.open(io.BytesIO(b)).convert("RGB").resize((size, size), Image.BICUBIC) for b in images],
                       return_tensors="pt")
    pixels = torch.from_numpy(decode(images, adapter.preprocess))
    tiles, sizes = adapter.tiles(pixels)
    assert torch.equal(sizes, theirs["image_sizes"]) and torch.allclose(tiles, theirs["pixel_values"], atol=1e-6)

    rows = pixels[[0, 0, 1, 2]]
    inputs = adapter.inputs(["who is this ?", "what shape is this ?", "who is this ?", "who is this ?"])
    assert int((inputs["input_ids"] == cfg.image_token_index).sum(1)[0]) == adapter.image_tokens > (size // 14) ** 2
    own_tiles, own_sizes = adapter.tiles(rows)
    with torch.no_grad():
        own = adapter.model(pixel_values=own_tiles, image_sizes=own_sizes, **inputs).logits[:, -1]
        assert torch.equal(adapter.forward(rows, inputs).logits[:, -1], own)
    assert len(adapter.generate(rows, ["who is this ?"] * 4, max_new_tokens=2)) == 4


@pytest.mark.slow  # the whole protocol on a 128k-vocabulary language model
def test_razor_unlearn_runs_on_a_llava_next_folder(llava_next, demo_manifest, tmp_path):
    """`razor unlearn` end to end on LLaVA-NeXT's layout (random weights name no one, so nothing need move:
    the run measures, searches and writes its outputs; a step on it is tested in test_scale)."""
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["unlearn", "--model", str(llava_next), "--data", str(demo_manifest), "--forget",
                                    "identities:hana", "--param", "towers=[vision,projector]", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert list(report["after"]) == ["fa", "utility", "fa_q8", "fa_q4", "fa_paraphrase"] and report["probes"]["full"] >= 1
    assert (out / "delta.safetensors").is_file() and (out / "report.json").is_file()
