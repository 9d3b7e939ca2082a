"""What the builders take: a dataset's options with the split sizes, a builder's options and types (None for an
unknown name), the data's shape without files.
"""

from __future__ import annotations

from pipelines.config import DataConfig, data_option_defaults, data_shape
from pipelines.config.builders import builder_options, hashable_options


def test_a_dataset_takes_the_split_sizes_and_its_builder_options() -> None:
    assert data_option_defaults("moons") == {"n_train": 1000, "n_test": 1000, "noise": 0.2}


def test_builder_options_with_their_types_and_none_for_an_unknown_name() -> None:
    assert builder_options("model", "mlp") == (
        {"depth": 2, "width": 64, "activation": "relu"},
        {"depth": int, "width": int, "activation": str},
    )
    defaults, types = builder_options("data", "moons")  # type: ignore[misc]
    assert defaults == data_option_defaults("moons") and {"n_train", "noise"} <= set(types)
    assert builder_options("model", "vit") is None and builder_options("data", "imagenet") is None


def test_data_shape_of_synthetic_and_image_sets() -> None:
    assert data_shape(DataConfig(name="moons")) == ((2,), 2)
    assert data_shape(DataConfig(name="mnist", root="/nowhere")) == ((1, 28, 28), 10)  # no files read


def test_options_are_made_hashable_and_order_free() -> None:
    assert (
        hashable_options({"b": [1, 2], "a": 1}) == hashable_options({"a": 1, "b": [1, 2]}) == (("a", 1), ("b", (1, 2)))
    )
