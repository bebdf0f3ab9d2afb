import numpy as np

from razor.demo import world
from razor.demo.tokenizer import build_tokenizer


def test_world_has_the_papers_three_axes_at_the_required_sizes():
    labs = world.labels()
    assert len(labs["objects"]) >= 8 and len(labs["styles"]) >= 8 and len(labs["identities"]) >= 10


def test_generation_is_a_function_of_seed_and_index():
    a = world.sample(3, 17, "shape", ("star", "dotted"))
    b = world.sample(3, 17, "shape", ("star", "dotted"))
    c = world.sample(4, 17, "shape", ("star", "dotted"))
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and a.caption == b.caption
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))


def test_an_identity_varies_in_pose_lighting_and_expression_but_keeps_its_name():
    faces = [world.sample(0, i, "face", ("hana",)) for i in range(6)]
    arrays = [np.asarray(f.image, np.float32) for f in faces]
    assert all(f.identity == "hana" and "hana" in f.caption for f in faces)
    assert min(np.abs(arrays[0] - a).mean() for a in arrays[1:]) > 5  # no two renderings alike


def test_splits_are_disjoint_and_seeded():
    train = world.plan("train", 0, 2, 3)
    test = world.plan("test", 0, 2, 3)
    assert {i for i, *_ in train}.isdisjoint({i for i, *_ in test})
    assert train == world.plan("train", 0, 2, 3)


def test_offline_tokenizer_keeps_every_world_word_whole_and_round_trips(tmp_path):
    tok = build_tokenizer(world.vocabulary())
    for word in world.vocabulary():
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("a dotted heart").input_ids == tok("a dotted heart").input_ids
    assert again("an unseen zebra").input_ids[-1] == tok.eos_token_id  # unknown words still encode
