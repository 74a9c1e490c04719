"""Identity and hashing: what a cached tensor or a stored feature depends on, reduced to a short stable key.

Used by both the latent cache (`motionguide.data.cache`) and Motive's feature store, so one value always
hashes the same way wherever it is keyed.

Cached latents and prompt embeddings are only valid for the exact VAE, text encoder, tokenizer, frame
sampling and sequence length that made them. Every one of these goes into the key, so changing any of them
opens a new cache folder instead of silently reusing stale tensors.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from motionguide.errors import ConfigError

__all__ = ["CACHE_FORMAT_VERSION", "cache_key", "model_identity", "module_identity", "cache_fields", "stable_json",
           "key_json"]

#: bump when the files a cache holds change meaning; old caches then get new keys
CACHE_FORMAT_VERSION = 1
_WEIGHT_SAMPLE = 16  # values hashed from the start of every parameter tensor


def json_default(value: Any) -> Any:
    """The stable text form of the non-JSON values keys and records hold (dtypes, buckets, numpy, paths)."""
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if hasattr(value, "as_tuple"):
        return list(value.as_tuple())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} has no stable text form; store plain numbers, strings, lists "
                    "and dicts in configs and records")


def stable_json(value: Any, allow_nan: bool = False) -> str:
    """Sorted-key compact JSON: the same content always gives the same text (and so the same hash), on every
    machine. TypeError for a value with no stable text form; ValueError for NaN / inf unless `allow_nan`."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=json_default, allow_nan=allow_nan)


def key_json(value: Any) -> str:
    """`stable_json` for latent-cache keys and manifests, with a ConfigError that says what a key may hold."""
    try:
        return stable_json(value, allow_nan=True)
    except TypeError as error:
        raise ConfigError(f"cache key fields must be JSON-like (str, int, float, bool, None, lists, dicts): "
                          f"{error}") from None


def _sha(text: str | bytes, length: int = 16) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:length]


def cache_key(**fields: Any) -> str:
    """A short stable hash (sha256 of the sorted JSON) of the fields; the cache format version is always in."""
    fields.setdefault("format_version", CACHE_FORMAT_VERSION)
    return _sha(key_json(fields))


def _config_dict(module: Any) -> dict[str, Any]:
    config = getattr(module, "config", None)
    if config is None:
        return {}
    raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    # bookkeeping (paths, library versions) does not change the tensors a module computes
    return {k: v for k, v in raw.items() if not k.startswith("_") and k != "transformers_version"}


def _weights_sample(module: torch.nn.Module) -> str:
    """Hash of every parameter's name, shape, dtype and first values: cheap, yet tells weights apart."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        try:
            head = tensor.detach().reshape(-1)[:_WEIGHT_SAMPLE].to("cpu", torch.float64)
            digest.update(head.numpy().tobytes())
        except (RuntimeError, NotImplementedError):  # meta / offloaded tensors: shape and dtype only
            pass
    return digest.hexdigest()[:16]


def module_identity(module: Any) -> dict[str, Any] | None:
    """Class, config hash, dtype and a sample hash of the weights of one module (None for None).

    `dtype` is the dtype holding most of the floating weights (a bf16 Wan transformer is bf16, although
    diffusers keeps its first modules in fp32); a module mixing dtypes also gets `dtypes`, the number of
    values in each, so its record says what is kept in which precision. A module in one dtype gets no
    `dtypes`: its identity, and every key hashed from it, is what it always was."""
    if module is None:
        return None
    from .loading import parameter_dtype_counts

    identity = {"class": type(module).__name__, "config": _sha(key_json(_config_dict(module)))}
    if isinstance(module, torch.nn.Module):
        identity["weights"] = _weights_sample(module)
        counts = parameter_dtype_counts(module)
        if counts:
            identity["dtype"] = str(max(counts, key=counts.get))
        else:  # no floating weights: the first parameter's dtype, as before
            first = next(module.parameters(), None)
            identity["dtype"] = str(first.dtype) if first is not None else None
        if len(counts) > 1:
            identity["dtypes"] = {str(dtype): int(n) for dtype, n in sorted(counts.items(), key=str)}
    return identity


def _tokenizer_identity(tokenizer: Any) -> dict[str, Any] | None:
    if tokenizer is None:
        return None
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    return {"class": type(tokenizer).__name__, "vocab": _sha(key_json(sorted(vocab.items())))}


def model_identity(backbone: Any) -> dict[str, str]:
    """{"model_name": a readable name (not part of the key: the same weights may sit at different paths),
    "model_hash": hash of the VAE, text encoder and tokenizer (class, config, dtype, weights)}.

    The dtypes are in the hash (every tensor's dtype is hashed with its name), so a cache built by a bf16 VAE
    and text encoder (bf16 prompt embeddings) is never reused by an fp32 run, and the other way round. VAE
    tiling changes the latents a little, so a tiling VAE hashes differently too (slicing changes nothing)."""
    pipeline = getattr(backbone, "_pipeline", None)
    name = getattr(pipeline, "name_or_path", None) or getattr(getattr(backbone, "vae", None), "name_or_path", None)
    parts = {
        "family": backbone.family,
        "vae": module_identity(backbone.vae),
        "text_encoder": module_identity(backbone.text_encoder),
        "tokenizer": _tokenizer_identity(backbone.tokenizer),
    }
    if getattr(backbone.vae, "use_tiling", False):  # only when on: caches made without tiling keep their keys
        parts["vae_tiling"] = True
    image_encoder = getattr(pipeline, "image_encoder", None)  # image-to-video (Wan-I2V's CLIP): its conditioning
    if image_encoder is not None:
        parts["image_encoder"] = module_identity(image_encoder)
    return {"model_name": str(name) if name else "unnamed", "model_hash": _sha(key_json(parts))}


def cache_fields(dataset: Any, backbone: Any, max_sequence_length: int, sample: bool = False,
                 **extra: Any) -> dict[str, Any]:
    """Everything that determines the cached tensors, as key fields. `dataset` needs `sampling_config()`
    (frames, size, stride, resize mode); `extra` adds your own fields (e.g. a dataset name)."""
    if not hasattr(dataset, "sampling_config"):
        raise ConfigError(f"{type(dataset).__name__} has no sampling_config(); the latent cache needs to know how "
                          "frames were sampled (use motionguide.data.VideoDataset or add the method)")
    root = getattr(dataset, "root", None)
    return {
        "format_version": CACHE_FORMAT_VERSION,
        # two datasets under one cache root must never share a folder: their clip ids may collide
        "dataset": str(Path(root).resolve()) if root is not None else None,
        "family": backbone.family,  # decides the latent normalisation
        "model_hash": model_identity(backbone)["model_hash"],
        **dataset.sampling_config(),
        "max_sequence_length": int(max_sequence_length),
        "sample": bool(sample),
        # an image-to-video model caches its conditioning image (the clip's first frame) too; text-to-video keys
        # stay as they were
        **({"condition": "first_frame"} if getattr(backbone, "conditions_on_image", False) else {}),
        **extra,
    }
