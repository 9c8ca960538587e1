"""Tests of lib.settings (environment switches) and lib.cache (the on-disk result
cache)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import lib
from lib import cache as cache_module
from lib.cache import cache_key, cache_path, cached, clear_cache
from lib.settings import cache_dir, cache_enabled, full_mode, repository_root


# ----------------------------------------------------------------------------- settings
@pytest.mark.parametrize("value, expected",
                         [("1", True), ("true", True), ("TRUE", True), ("Yes", True),
                          (" yes ", True), ("0", False), ("no", False), ("", False)])
def test_full_mode(monkeypatch, value, expected):
    monkeypatch.setenv("BOOK_FULL", value)
    assert full_mode() is expected


def test_full_mode_unset(monkeypatch):
    monkeypatch.delenv("BOOK_FULL", raising=False)
    assert full_mode() is False


def test_cache_enabled(monkeypatch):
    monkeypatch.delenv("GDT_CACHE", raising=False)
    assert cache_enabled()
    monkeypatch.setenv("GDT_CACHE", "OFF")
    assert not cache_enabled()
    monkeypatch.setenv("GDT_CACHE", "on")
    assert cache_enabled()


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("GDT_CACHE_DIR", str(tmp_path / "here"))
    assert cache_dir() == tmp_path / "here"
    monkeypatch.delenv("GDT_CACHE_DIR")
    root = repository_root()
    assert root is not None and (
        root / "lib" / "__init__.py").exists()  # the tests run from a checkout
    assert cache_dir() == root / ".cache" / "results"


def test_cache_dir_outside_a_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv("GDT_CACHE_DIR", raising=False)
    monkeypatch.setattr("lib.settings.repository_root", lambda: None)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == Path(tmp_path) / ".cache" / "gdt-book"


# ----------------------------------------------------------------------------- cache
@pytest.fixture
def cache_at(monkeypatch, tmp_path):
    monkeypatch.setenv("GDT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GDT_CACHE", raising=False)
    return tmp_path / "cache"


class Counter:
    def __init__(self, value):
        self.value, self.calls = value, 0

    def __call__(self):
        self.calls += 1
        return self.value


def test_miss_then_hit(cache_at):
    value = {"loss": np.arange(3.0), "W": torch.ones(2, 2)}
    compute = Counter(value)
    first = cached("exp", compute, params={"steps": 10, "lr": 0.1})
    second = cached("exp", compute, params={
        "lr": 0.1,
        "steps": 10
    })  # key order does not matter
    assert compute.calls == 1
    assert np.array_equal(second["loss"], value["loss"]) and torch.equal(
        second["W"], value["W"])
    assert first is value
    files = list(cache_at.glob("*.pt"))
    assert files == [cache_path("exp", {"steps": 10, "lr": 0.1})]
    assert not list(cache_at.glob("*.tmp"))  # no temporary files left


def test_params_name_and_version_change_the_key(cache_at, monkeypatch):
    base = cache_key("exp", {"a": 1})
    assert cache_key("exp", {"a": 2}) != base
    assert cache_key("other", {"a": 1}) != base
    assert cache_key("exp", {"a": 1, "b": None}) != base
    assert cache_key("exp",
                     {"dtype": torch.float64}) != cache_key("exp",
                                                            {"dtype": torch.float32})
    monkeypatch.setattr(cache_module, "__version__", lib.__version__ + ".dev")
    assert cache_key("exp", {"a": 1}) != base
    compute = Counter(1)
    cached("exp", compute, params={"a": 1})
    cached("exp", compute, params={"a": 2})
    assert compute.calls == 2
    with pytest.raises(TypeError, match="JSON-serialisable"):
        cache_key("exp", {"f": object()})


def test_disabled_cache_neither_reads_nor_writes(cache_at, monkeypatch):
    cached("exp", Counter(1), params={})
    monkeypatch.setenv("GDT_CACHE", "off")
    compute = Counter(2)
    assert cached("exp", compute,
                  params={}) == 2 and compute.calls == 1  # the stored 1 is not read
    assert cached("new", compute, params={}) == 2
    assert [p.name.split("-")[0]
            for p in cache_at.glob("*.pt")] == ["exp"]  # nothing written


def test_corrupt_file_is_ignored_with_a_warning(cache_at):
    path = cache_path("exp", {"n": 1})
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file")
    compute = Counter([1, 2, 3])
    with pytest.warns(RuntimeWarning, match="unreadable cache file"):
        assert cached("exp", compute, params={"n": 1}) == [1, 2, 3]
    assert compute.calls == 1
    assert cached("exp", compute, params={"n": 1}) == [
        1, 2, 3
    ] and compute.calls == 1  # rewritten, valid
    torch.save({"key": "something else", "value": 0}, path)
    with pytest.warns(RuntimeWarning, match="does not hold the expected entry"):
        assert cached("exp", compute, params={"n": 1}) == [1, 2, 3]
    assert compute.calls == 2


def test_recompute_overwrites(cache_at):
    cached("exp", Counter("old"), params={})
    compute = Counter("new")
    assert cached("exp", compute, params={}, recompute=True) == "new"
    assert cached("exp", Counter("unused"), params={}) == "new"


def test_unwritable_directory_still_returns_the_value(cache_at, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.torch, "save", fail)
    with pytest.warns(RuntimeWarning, match="could not write the cache file"):
        assert cached("exp", Counter(5), params={}) == 5
    assert not [p for p in cache_at.iterdir() if p.is_file()
                ]  # the temporary file was removed


def test_validation_and_clear(cache_at):
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        cached("", Counter(1), params={})
    with pytest.raises(TypeError, match="params must be a mapping"):
        cached("exp", Counter(1), params=[1, 2])
    with pytest.raises(TypeError, match="compute must be a function"):
        cached("exp", 3, params={})
    cached("a", Counter(1), params={})
    cached("a-b", Counter(2), params={})
    assert clear_cache("a") == 1 and clear_cache() == 1 and clear_cache() == 0
    assert os.path.isdir(cache_at)


def test_environment_report(monkeypatch):
    from lib.settings import BOOK_VARIABLES, environment_report

    monkeypatch.setenv("BOOK_FULL", "1")
    monkeypatch.delenv("GDT_DEVICE", raising=False)
    lines = environment_report().splitlines()
    assert len(lines) == len(BOOK_VARIABLES) and "  BOOK_FULL = 1" in lines
    assert "  GDT_DEVICE = (not set)" in lines
    assert environment_report(["BOOK_FULL"]) == "  BOOK_FULL = 1"
    with pytest.raises(ValueError, match="names must be a sequence"):
        environment_report("BOOK_FULL")
