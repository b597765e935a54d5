"""Hub resolution against a local cache laid out exactly as huggingface_hub lays it out. Never the network:
conftest points the Hub endpoint at a closed local port."""

from __future__ import annotations


import pytest
import torch
from huggingface_hub import constants

import minienc

from .conftest import TINY, add_to_hf_cache, padded_batch

REPO = "minienc-test/tiny-bert"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, reference_dir):
    cache = tmp_path / "hub"
    add_to_hf_cache(cache, REPO, reference_dir("bert"), "a" * 40, ref="main")
    add_to_hf_cache(cache, REPO, reference_dir("bert", seed=1), "b" * 40, ref="v1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def embed(name_or_path, **kwargs) -> torch.Tensor:
    batch = padded_batch([4], TINY["vocab_size"], 0)
    with torch.no_grad():
        return minienc.Encoder.from_pretrained(name_or_path, **kwargs)(**batch)


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "hub-unreachable"])
def test_repo_id_resolves_from_cache(hub_cache, reference_dir, monkeypatch, offline):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    assert torch.equal(embed(REPO), embed(reference_dir("bert")))


def test_revision_is_honoured(hub_cache, reference_dir, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert torch.equal(embed(REPO, revision="v1"), embed(reference_dir("bert", seed=1)))
    assert torch.equal(embed(REPO, revision="b" * 40), embed(reference_dir("bert", seed=1)))
    assert not torch.equal(embed(REPO, revision="v1"), embed(REPO))


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "hub-unreachable"])
def test_uncached_repo_id_says_how_to_get_it(hub_cache, monkeypatch, offline):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    with pytest.raises(FileNotFoundError) as err:
        embed("minienc-test/not-cached")
    message = str(err.value)
    assert "'minienc-test/not-cached' is not a local folder, not in the Hugging Face cache" in message
    assert str(hub_cache) in message and "hf download minienc-test/not-cached" in message
