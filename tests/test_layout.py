import pytest
import torch

from vidact.models.layout import (GENERATED_GROUPS, PREFIX_GROUPS, Group, TokenLayout, attention_mask,
                                  rules)

LENGTHS = dict(language=3, state=2, obs=4, future=4, action=3)


def test_slices_cover_the_sequence_in_order():
    layout = TokenLayout.build(**LENGTHS)
    sl = layout.slices()
    assert [g.value for g in layout.groups] == list(LENGTHS)
    assert len(layout) == sum(LENGTHS.values())
    assert sl[Group.LANGUAGE] == slice(0, 3) and sl[Group.ACTION] == slice(13, 16)
    assert layout.group_ids().tolist() == [0] * 3 + [1] * 2 + [2] * 4 + [3] * 4 + [4] * 3


def test_default_rules_keep_the_prefix_blind_to_generated_tokens():
    layout = TokenLayout.build(**LENGTHS)
    layout.check()
    m, sl = layout.mask(), layout.slices()
    for q in PREFIX_GROUPS:
        for k in GENERATED_GROUPS:
            assert not m[sl[q], sl[k]].any(), (q, k)
    # Joint co-generation: future frames and actions read each other and the whole prefix.
    for q in GENERATED_GROUPS:
        assert m[sl[q]].all()
    # Language reads only language; state and obs read the whole prefix.
    assert m[sl[Group.LANGUAGE], sl[Group.LANGUAGE]].all()
    assert not m[sl[Group.LANGUAGE], sl[Group.OBS]].any()
    assert m[sl[Group.OBS], sl[Group.LANGUAGE]].all()


def test_every_token_attends_to_itself_even_when_its_keys_are_masked():
    layout = TokenLayout.build(**LENGTHS)
    key_valid = torch.zeros(2, len(layout), dtype=torch.bool)
    m = attention_mask(layout, key_valid)
    assert m.shape == (2, 1, len(layout), len(layout))
    assert torch.equal(m[0, 0], torch.eye(len(layout), dtype=torch.bool))


def test_masking_a_group_as_keys_equals_restricting_the_layout():
    layout = TokenLayout.build(**LENGTHS)
    sl = layout.slices()
    valid = torch.ones(1, len(layout), dtype=torch.bool)
    valid[0, sl[Group.FUTURE]] = False
    masked = attention_mask(layout, valid)[0, 0]
    keep = torch.cat([torch.arange(len(layout))[sl[g]] for g in layout.groups if g != Group.FUTURE])
    small = layout.restrict(tuple(g for g in layout.groups if g != Group.FUTURE)).mask()
    assert torch.equal(masked[keep][:, keep], small)


def test_missing_groups_are_left_out_and_unknown_groups_refused():
    layout = TokenLayout.build(language=0, state=1, obs=2, action=3)
    assert layout.groups == (Group.STATE, Group.OBS, Group.ACTION)
    with pytest.raises(KeyError, match="unknown token groups"):
        TokenLayout.build(audio=3)


def test_check_rejects_a_prefix_that_reads_generated_tokens():
    leaky = rules({Group.LANGUAGE: (Group.LANGUAGE,), Group.STATE: (Group.STATE, Group.ACTION),
                   Group.OBS: (Group.OBS,), Group.FUTURE: tuple(Group), Group.ACTION: tuple(Group)})
    with pytest.raises(ValueError, match="prefix group 'state' attends to generated groups"):
        TokenLayout.build(leaky, **LENGTHS).check()
    no_self = rules({Group.LANGUAGE: (), Group.STATE: PREFIX_GROUPS, Group.OBS: PREFIX_GROUPS,
                     Group.FUTURE: tuple(Group), Group.ACTION: tuple(Group)})
    with pytest.raises(ValueError, match="must let it attend to itself"):
        TokenLayout.build(no_self, **LENGTHS).check()
