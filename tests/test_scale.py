"""Real-size models (issue: real-size models): random-weight models of the real architectures, the
dtype / device / batching / checkpointing options, and the memory of one RAZOR pass at ViT-B/32 size."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from razor.architectures import clip_config, n_parameters, write
from razor.cli import main
from razor.config import EditParams, RankParams, RazorParams
from razor.data import read_manifest
from razor.delta import Delta
from razor.editing import candidates, direction, rank, set_step
from razor.errors import ModelError
from razor.families import build_task, load_model
from razor.pipeline import run_method

ROOT = Path(__file__).resolve().parent.parent


def test_the_clip_architectures_have_openais_sizes():
    from transformers import CLIPModel

    with torch.device("meta"):
        sizes = {name: sum(p.numel() for p in CLIPModel(clip_config(name)).parameters()) for name in ("clip-b32", "clip-l14")}
    assert round(sizes["clip-b32"] / 1e6) == 151 and round(sizes["clip-l14"] / 1e6) == 428


@pytest.mark.slow
def test_a_vit_b32_sized_clip_runs_one_razor_pass_within_3x_its_weights_plus_one_batch():
    """In its own process (glibc's mmap threshold fixed, so resident memory follows live allocations):
    rank over both towers, the probe cache, a step search; peak ≤ 3 × weights + one batch's activations."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/scale.py"), "--one", "clip-b32", "--method", "razor"],
                         env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    run = json.loads(out.stdout.strip().splitlines()[-1])
    assert round(run["params_m"]) == 151 and run["forget"] == 16 and run["retain"] == 32
    assert set(run["seconds"]) >= {"gradients", "cache", "step search", "total"}
    assert run["peak_mb"] <= 3 * run["weights_mb"] + run["activations_mb"], run


@pytest.mark.parametrize("arch, kw, concept, towers", [
    ("sd-1.5", dict(sample_size=8, width=0.1, depth=0.5), "styles:dotted", ("text", "xattn")),
    ("sdxl", dict(sample_size=4, width=1 / 16, depth=1 / 6), "styles:dotted", ("text", "text_2", "xattn")),
    ("sd3-medium", dict(sample_size=4, width=1 / 16, depth=1 / 8, max_sequence_length=8), "styles:dotted",
     ("text", "text_2", "ctx")),
    ("llava-1.5", dict(image_size=56, width=1 / 16, depth=1 / 16), "identities:hana", ("vision", "projector")),
    ("llava-next", dict(image_size=56, width=1 / 16, depth=1 / 16), "identities:hana", ("vision", "projector")),
])
@pytest.mark.slow
def test_a_random_model_of_a_real_layout_loads_from_its_folder_and_runs_a_razor_pass(arch, kw, concept, towers, tmp_path,
                                                                                      demo_manifest):
    adapter = load_model(str(write(arch, tmp_path / arch, **kw)))
    assert n_parameters(adapter) > 1e6
    if arch == "sd-1.5":
        cfg = adapter.unet.config
        assert adapter.vae is not None and cfg.attention_head_dim == 8 and len(cfg.down_block_types) == 4
        assert cfg.cross_attention_dim == adapter.text_encoder.config.hidden_size
    elif arch == "sd3-medium":
        cfg = adapter.transformer.config
        assert adapter.vae is not None and cfg.num_attention_heads == 24 and cfg.in_channels == 16
        assert adapter.vae.config.shift_factor == 0.0609 and type(adapter.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    elif arch == "sdxl":
        cfg = adapter.unet.config
        assert adapter.vae is not None and tuple(cfg.attention_head_dim) == (5, 10, 20) and len(cfg.down_block_types) == 3
        assert cfg.cross_attention_dim == adapter.width and cfg.addition_embed_type == "text_time"
    else:
        assert adapter.model.config.vision_feature_layer == -2 and adapter.model.config.text_config.num_attention_heads == 32
        assert adapter.anyres == (arch == "llava-next")
    task = build_task(adapter, read_manifest(demo_manifest), concept, forget_size=8, retain_size=8, eval_size=8, batch_size=4)
    names = sorted({n for c in adapter.components("both") if c.tower in towers for n in c.params})[:6]
    plain = task.forget_gradient(names)
    task.checkpointing = True
    recomputed = task.forget_gradient(names)
    assert all(torch.allclose(plain[n], recomputed[n], rtol=1e-4, atol=1e-7) for n in names)
    assert any(plain[n].norm() > 0 for n in names)

    params = adapter.parameters()
    base = {n: p.detach().clone() for n, p in params.items()}
    result = run_method("razor", task, RazorParams(towers=towers, max_rounds=1, probes=2, candidates=1), progress=False)
    assert {s["component"] for s in result.scores} == set(candidates(adapter, towers, "both"))  # every candidate ranked
    assert all(torch.equal(params[n], base[n]) for n in params if n not in result.delta.params)  # bit-identical elsewhere
    with torch.no_grad():
        for n in result.delta.params:
            params[n].copy_(base[n])
    # a random model has nothing to forget, so the pass may stop before its first step: take one step of
    # the top-ranked component along its direction and check that exactly its tensors change, and revert
    ranking = rank(task, RankParams(towers=towers))
    c = candidates(adapter, towers, "both")[ranking.selection[0]]
    d = direction(list(c.params), ranking.g_f, ranking.g_r, None, EditParams())
    set_step(c, params, base, d, 0.1 * c.flat(params).norm().item() / c.flat(d).norm().item())
    delta = Delta.from_edit(base, params, [c])
    assert set(delta.params) == set(c.params) and all(not torch.equal(params[n], base[n]) for n in c.params)
    assert all(torch.equal(params[n], base[n]) for n in params if n not in c.params)
    edited = {n: params[n].detach().clone() for n in c.params}
    with torch.no_grad():
        for n in c.params:
            params[n].copy_(base[n])
    delta.apply(params)  # the delta alone rebuilds the step from the base
    assert all(torch.equal(params[n], edited[n]) for n in c.params)


def test_bf16_weights_and_their_gradients(demo_manifest):
    adapter = load_model("demo", "bf16")
    assert adapter.dtype == torch.bfloat16
    task = build_task(adapter, read_manifest(demo_manifest), "objects:star", forget_size=16, retain_size=16, eval_size=16,
                      batch_size=8)
    name = adapter.components("layer")[0].params[0]
    g = task.forget_gradient([name])[name]
    assert g.dtype == torch.bfloat16 and g.norm() > 0


@pytest.mark.slow
def test_razor_unlearn_in_bf16_forgets_and_measures_end_to_end(tmp_path):
    result = CliRunner().invoke(main, ["unlearn", "--forget", "star", "--dtype", "bf16", "--batch-size", "64",
                                       "--gradient-checkpointing", "--out", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["before"]["fa1"] > 0.8 and report["after"]["fa1"] <= 0.05
    assert report["after"]["utility"] >= report["before"]["utility"] - 0.05
    run = json.loads((tmp_path / "run" / "report.json").read_text())
    assert run["run"]["dtype"] == "bf16" and run["run"]["checkpointing"] is True


def test_gradients_accumulate_over_batches_and_checkpointing_changes_nothing(demo_manifest):
    adapter = load_model("demo")
    names = [c.params[0] for c in adapter.components("layer")[:3]]
    grads = []
    for batch_size, checkpointing in ((64, False), (8, False), (8, True)):
        task = build_task(adapter, read_manifest(demo_manifest), "objects:star", forget_size=32, retain_size=64,
                          eval_size=16, batch_size=batch_size)
        task.checkpointing = checkpointing
        grads.append(task.forget_gradient(names))  # F is a mean over items (R, InfoNCE, depends on the batch)
        assert all(p.grad is None for p in adapter.model.parameters())  # nothing left behind
    whole, accumulated, recomputed = grads
    assert all(torch.allclose(whole[n], accumulated[n], rtol=1e-4, atol=1e-6) for n in names)
    assert all(torch.allclose(accumulated[n], recomputed[n], rtol=1e-5, atol=1e-7) for n in names)


def test_a_device_torch_cannot_see_or_an_unknown_dtype_is_refused_by_name():
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="sees 0 CUDA devices; run with --device cpu"):
            load_model("demo", device="cuda")
    with pytest.raises(ModelError, match="is not cpu, cuda or cuda:N"):
        load_model("demo", device="tpu")
    with pytest.raises(ModelError, match="dtype 'fp8' is not one of fp32, fp16, bf16"):
        load_model("demo", "fp8")
    result = CliRunner().invoke(main, ["unlearn", "--forget", "star", "--device", "cuda:7", "--json"])
    assert result.exit_code != 0 and "cuda:7" in result.output and "--device cpu" in result.output
