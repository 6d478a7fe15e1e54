"""SeenNumbers answers "first time?" exactly as a plain set would, across spills."""

import random

import pytest

from smsq.tasks.seen import SeenNumbers


def reference(blocks):
    """What a plain set answers: each block's new keys, in the order of their first place."""
    seen, answers = set(), []
    for block in blocks:
        new = []
        for key in block:
            if key not in seen:
                seen.add(key)
                new.append(key)
        answers.append(new)
    return answers


def keys_of(mobiles):
    return [int("1" + m) for m in mobiles]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_blocks_across_many_spills_match_a_set(seed):
    rng = random.Random(seed)
    pool = [f"1{rng.randint(3, 9)}{rng.randrange(10**9):09d}" for _ in range(3000)]
    pool += [f"0{rng.randint(10, 999)}{rng.randrange(10**7):07d}" for _ in range(500)]  # landlines
    blocks = [keys_of(rng.choices(pool, k=rng.randint(0, 300))) for _ in range(60)]
    seen = SeenNumbers(set_keys=100, parts=7)
    assert [seen.novel(block) for block in blocks] == reference(blocks)
    assert seen.spills > 5
    assert len(seen) == len({key for block in blocks for key in block})


def test_a_repeat_within_a_block_is_new_at_its_first_place_only():
    seen = SeenNumbers(set_keys=2, parts=3)
    assert seen.novel([5, 7, 5, 9, 7]) == [5, 7, 9]
    assert seen.spills == 1
    assert seen.novel([9, 11, 11, 5, 12]) == [11, 12]
    assert seen.novel([12, 11, 13]) == [13]


def test_a_landline_keeps_its_leading_zero_apart_from_the_same_digits_without_it():
    seen = SeenNumbers(set_keys=1, parts=5)
    assert seen.novel(keys_of(["01012345678"])) == keys_of(["01012345678"])
    assert seen.novel(keys_of(["1012345678", "01012345678"])) == keys_of(["1012345678"])


def test_keys_no_array_item_holds_are_still_exact():
    huge, negative = 2**70 + 3, -42
    seen = SeenNumbers(set_keys=1, parts=3)
    assert seen.novel([huge, negative, 4]) == [huge, negative, 4]
    assert seen.novel([4, negative, huge, 2**70 + 6]) == [2**70 + 6]
    assert seen.novel([2**70 + 6]) == []


def test_keys_sharing_a_filter_byte_in_one_block_are_all_remembered():
    seen = SeenNumbers(set_keys=1, parts=3)
    seen.novel([1])  # spilled: the filter is on
    block = list(range(8, 24))  # two filter bytes, each bit of them
    assert seen.novel(block) == block
    assert seen.novel(block) == []
