"""Deltas hold only edited slices, apply and revert bit-exactly, and refuse other weights."""

import pytest
import torch

from razor.components import enumerate_components
from razor.delta import Delta
from razor.errors import DeltaMismatchError, RazorError


def same_bits(a, b):
    return torch.equal(a.detach().view(torch.int32), b.detach().view(torch.int32))


def snapshot(adapter):
    return {n: p.detach().clone() for n, p in adapter.parameters().items()}


def edit(adapter, names):
    comps = [c for c in adapter.components("both") if c.name in names]
    params = adapter.parameters()
    base = snapshot(adapter)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for c in comps:
            for s in c.slices:
                s.index(params[s.param]).add_(torch.randn(s.index(params[s.param]).shape, generator=gen))
    return base, Delta.from_edit(base, params, comps, meta={"base": "tiny"})


def test_components_cover_layer_tensors_and_heads_of_both_towers(tiny_clip):
    layers = tiny_clip.components("layer")
    heads = tiny_clip.components("head")
    assert len(layers) == 2 * 4 * 6 and len(heads) == 2 * 4 * 4
    assert len(tiny_clip.components("both")) == len(layers) + len(heads)
    head = next(c for c in heads if c.name == "text.2.head1")
    params = tiny_clip.parameters()
    assert head.flat(params).numel() == 4 * 32 * 128  # q, k, v rows and out columns of width 32
    with pytest.raises(ValueError, match="granularity"):
        enumerate_components(tiny_clip.towers(), "block")


def test_delta_keeps_only_edited_slices_and_round_trips_through_safetensors(tiny_clip, tmp_path):
    base, delta = edit(tiny_clip, {"vision.1.head2", "text.0.fc1"})
    assert sorted(delta.params) == sorted({
        "vision_model.encoder.layers.1.self_attn.q_proj.weight", "vision_model.encoder.layers.1.self_attn.k_proj.weight",
        "vision_model.encoder.layers.1.self_attn.v_proj.weight", "vision_model.encoder.layers.1.self_attn.out_proj.weight",
        "text_model.encoder.layers.0.mlp.fc1.weight"})
    assert delta.nbytes == (4 * 32 * 128 + 256 * 128) * 4
    loaded = Delta.load(delta.save(tmp_path / "d.safetensors"))
    assert loaded.base_sha256 == delta.base_sha256 and all(torch.equal(a, b) for a, b in zip(loaded.values, delta.values))


def test_apply_then_revert_restores_the_base_bit_for_bit(tiny_clip, tmp_path):
    params = tiny_clip.parameters()
    base, delta = edit(tiny_clip, {"vision.1.head2", "text.0.fc1"})
    edited = snapshot(tiny_clip)
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(base[n])
    delta = Delta.load(delta.save(tmp_path / "d.safetensors"))
    delta.apply(params)
    assert all(same_bits(params[n], edited[n]) for n in params)
    delta.revert(params)
    assert all(same_bits(params[n], base[n]) for n in params)


def test_a_delta_for_other_weights_is_refused_and_changes_nothing(tiny_clip):
    params = tiny_clip.parameters()
    _, delta = edit(tiny_clip, {"text.0.fc1"})  # the model now holds the edited weights, not the base
    before = snapshot(tiny_clip)
    with pytest.raises(DeltaMismatchError, match="text_model.encoder.layers.0.mlp.fc1.weight.*exact base model"):
        delta.apply(params)
    assert all(same_bits(params[n], before[n]) for n in params)
    with pytest.raises(RazorError, match="not applied in this process"):
        delta.revert(params)


def test_a_pickle_or_garbage_file_is_not_a_delta(tmp_path):
    bad = tmp_path / "delta.safetensors"
    torch.save({"x": torch.ones(2)}, bad)
    with pytest.raises(RazorError, match="not a RAZOR delta in safetensors format"):
        Delta.load(bad)
