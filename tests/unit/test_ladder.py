"""The size ladder: names match parameter counts, shapes are valid Llamas."""

import pytest

from pipeline.ladder import NOMINAL_PARAMS, SIZES


@pytest.mark.parametrize("name", list(SIZES))
def test_each_rung_is_near_its_nominal_size(name):
    ratio = SIZES[name].non_embedding_params() / NOMINAL_PARAMS[name]
    assert 0.75 <= ratio <= 1.25, f"{name}: N is {ratio:.2f}x its name"


def test_rungs_grow_and_heads_divide():
    params = [shape.non_embedding_params() for shape in SIZES.values()]
    assert params == sorted(params)
    for shape in SIZES.values():
        assert shape.d_model % shape.n_heads == 0 and shape.n_heads % shape.n_kv_heads == 0
