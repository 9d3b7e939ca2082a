"""Plug-ins by import path: ``module:callable`` resolved from the working directory, every failure naming the
reference, the module, the attribute and the search path, and the builder contracts checked.
"""

from __future__ import annotations

import itertools
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lgeom.data import build_dataset, build_splits, dataset_option_types, dataset_options
from lgeom.models import build_model, is_model_plugin, model_arch_args, model_arch_types
from lgeom.plugins import (
    PluginError,
    dataset_plugin,
    is_plugin_ref,
    model_plugin,
    plugin_digest,
    plugin_label,
    plugin_shipping_path,
    qualified_label,
    search_path,
    split_ref,
)

PLUGIN = """
from collections.abc import Sequence
import torch
from torch import nn
from torch.utils.data import TensorDataset

def build_net(*, num_classes: int, in_shape: Sequence[int], width: int = 8, act: str = "relu") -> nn.Module:
    if act not in ("relu", "tanh"):
        raise ValueError(f"build_net act: expected relu or tanh, got {act!r}")
    layers = [nn.Flatten(), nn.Linear(int(torch.tensor(in_shape).prod()), width)]
    return nn.Sequential(*layers, nn.ReLU() if act == "relu" else nn.Tanh(), nn.Linear(width, num_classes))

def positional(num_classes, in_shape, depth=1):
    return nn.Linear(in_shape[0], num_classes)

def blobs(split, *, root, seed, n: int = 20, spread: float = 1.0):
    g = torch.Generator().manual_seed(seed * 2 + (split == "test"))
    y = torch.randint(0, 3, (n,), generator=g)
    ds = TensorDataset(torch.randn(n, 4, generator=g) * spread + y[:, None], y)
    ds.num_classes, ds.in_shape = 3, [4]
    return ds

def shapeless(split, *, root, seed):
    return TensorDataset(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))

def not_a_module(*, num_classes, in_shape):
    return "a string"

def catch_all(*, num_classes, in_shape, **options):
    return nn.Linear(1, 1)

def no_shape(*, num_classes, depth=1):
    return nn.Linear(1, 1)

def keyword_split(*, split, root, seed):
    return None

class Holder:
    @staticmethod
    def build(*, num_classes, in_shape):
        return nn.Linear(in_shape[0], num_classes)

VALUE = 3
"""

_counter = itertools.count()


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A plug-in file with a unique module name in a fresh working directory (not on the package path)."""
    name = f"userplug{os.getpid()}_{next(_counter)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    yield name
    sys.modules.pop(name, None)
    model_plugin.cache_clear()
    dataset_plugin.cache_clear()


def test_references_split_into_module_and_callable() -> None:
    assert split_ref("pkg.nets:Holder.build") == ("pkg.nets", "Holder.build")
    assert [is_plugin_ref(x) for x in ("mlp", "a:b", "a:", ":b", "a:b:c", 3)] == [
        False,
        True,
        False,
        False,
        False,
        False,
    ]
    assert (
        plugin_label("pkg.nets:build_vit") == "build_vit" and qualified_label("pkg.nets:build_vit") == "nets.build_vit"
    )
    with pytest.raises(PluginError, match=r"plug-in 'my-nets:build': expected 'module:callable' \(dotted Python names"):
        split_ref("my-nets:build")


def test_the_working_directory_is_searched_first(plugin_module: str, tmp_path: Path) -> None:
    assert str(tmp_path) not in sys.path
    assert search_path()[0] == str(tmp_path) and sys.path[0] == str(tmp_path)


def test_a_model_plugin_builds_and_lists_its_options_with_types(plugin_module: str) -> None:
    ref = f"{plugin_module}:build_net"
    assert is_model_plugin(ref) and not is_model_plugin("torchvision:resnet18") and not is_model_plugin("mlp")
    assert model_arch_args(ref) == {"width": 8, "act": "relu"}
    assert model_arch_types(ref) == {"width": int, "act": str}
    model = build_model(ref, num_classes=3, in_shape=(2, 2), width=5)
    assert model(torch.zeros(7, 2, 2)).shape == (7, 3) and model[1].out_features == 5
    with pytest.raises(ValueError, match=rf"{ref} option: expected one of act, width, got 'depth'"):
        build_model(ref, num_classes=3, in_shape=(4,), depth=2)
    # Positional-or-keyword parameters are options too; a static method through its class works.
    assert model_arch_args(f"{plugin_module}:positional") == {"depth": 1}
    assert build_model(f"{plugin_module}:Holder.build", num_classes=2, in_shape=(3,)).out_features == 2


def test_a_dataset_plugin_builds_like_a_registered_one(plugin_module: str) -> None:
    ref = f"{plugin_module}:blobs"
    assert dataset_options(ref) == {"n": 20, "spread": 1.0}
    assert dataset_option_types(ref) == {"n": int, "spread": float}
    ds = build_dataset(ref, "train", seed=1, spread=0.5)
    assert len(ds) == 20 and ds.num_classes == 3 and ds.in_shape == (4,)  # in_shape normalised to a tuple
    splits = build_splits(ref, seed=1, n_train=8, n_test=5)  # a seeded subset, as for registered image sets
    assert (len(splits.train), len(splits.test)) == (8, 5) and splits.test.in_shape == (4,)
    assert not torch.equal(splits.train[0][0], splits.test[0][0])


def test_import_failures_name_module_attribute_and_search_path(plugin_module: str, tmp_path: Path) -> None:
    with pytest.raises(PluginError) as err:
        model_plugin("nosuchmod_xyz:build_vit")
    msg = str(err.value)
    assert msg.startswith(
        "model.arch plug-in 'nosuchmod_xyz:build_vit': cannot import module 'nosuchmod_xyz' to take 'build_vit' "
        "from it: no module named 'nosuchmod_xyz' on the search path (sys.path, working directory first): "
        f"{tmp_path}, "
    )
    with pytest.raises(PluginError) as err:
        model_plugin(f"{plugin_module}:build_vit")
    msg = str(err.value)
    assert f"model.arch plug-in '{plugin_module}:build_vit': module '{plugin_module}' ({tmp_path}" in msg
    assert (
        "has no attribute 'build_vit' (callables defined there: Holder, blobs, build_net, catch_all, "
        "keyword_split, no_shape, not_a_module, positional, shapeless)" in msg
    )
    assert f"search path (sys.path, working directory first): {tmp_path}" in msg
    with pytest.raises(
        PluginError, match=rf"data.name plug-in '{plugin_module}:VALUE': expected a callable, got int 3"
    ):
        dataset_plugin(f"{plugin_module}:VALUE")


def test_a_module_that_fails_on_import_is_reported_with_its_error(tmp_path: Path, plugin_module: str) -> None:
    (tmp_path / f"{plugin_module}_broken.py").write_text("import not_installed_dependency_q\n")
    with pytest.raises(PluginError) as err:
        model_plugin(f"{plugin_module}_broken:build")
    assert (
        f"importing module '{plugin_module}_broken' (for 'build') failed: ModuleNotFoundError: No module named "
        "'not_installed_dependency_q'; search path" in str(err.value)
    )


@pytest.mark.parametrize(
    ("kind", "attr", "problem"),
    [
        ("model", "catch_all", "**options cannot be checked before the run: name every option as a keyword"),
        ("model", "no_shape", "it takes no keyword parameter 'in_shape'"),
        ("data", "keyword_split", "its first parameter does not take the split positionally"),
        ("data", "build_net", "it takes no keyword parameter 'root'; it takes no keyword parameter 'seed'"),
    ],
)
def test_builders_outside_the_contract_are_named(plugin_module: str, kind: str, attr: str, problem: str) -> None:
    resolve = model_plugin if kind == "model" else dataset_plugin
    with pytest.raises(PluginError) as err:
        resolve(f"{plugin_module}:{attr}")
    contract = (
        "builder(*, num_classes, in_shape, **options) -> nn.Module"
        if kind == "model"
        else "builder(split, *, root, seed, **options) -> Dataset (with num_classes and in_shape)"
    )
    what = "model.arch" if kind == "model" else "data.name"
    assert str(err.value).startswith(f"{what} plug-in '{plugin_module}:{attr}': expected {contract}, got {attr}(")
    assert problem in str(err.value)


def test_built_objects_outside_the_contract_are_refused(plugin_module: str) -> None:
    with pytest.raises(PluginError, match="expected the builder to return an nn.Module, got str"):
        build_model(f"{plugin_module}:not_a_module", num_classes=2, in_shape=(3,))
    with pytest.raises(PluginError, match=r"\(test split\): expected a dataset with num_classes \(int\) and in_shape"):
        build_dataset(f"{plugin_module}:shapeless", "test")


def test_digest_follows_the_source_file_and_shipping_takes_local_modules_only(
    plugin_module: str, tmp_path: Path
) -> None:
    ref = f"{plugin_module}:build_net"
    first = plugin_digest(ref)
    assert len(first) == 16
    path = tmp_path / f"{plugin_module}.py"
    path.write_text(path.read_text() + "\n# changed\n")
    assert plugin_digest(ref) != first
    assert plugin_shipping_path(ref, [tmp_path]) == path.resolve()
    assert plugin_shipping_path(ref, [tmp_path / "elsewhere"]) is None
    assert plugin_shipping_path("torch.nn:Linear", [tmp_path]) is None
