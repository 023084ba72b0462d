"""Load backbone weights safely and explain a mismatch instead of dumping a traceback."""
from __future__ import annotations

import pickle
import re
from collections import Counter
from pathlib import Path

import torch

from grafiqs.data.decode import NORMALIZATION
from grafiqs.errors import ReadError, WeightsError
from grafiqs.io.reading import open_regular
from grafiqs.models.iresnet import ARCHITECTURES, DEFAULT_WIDTHS, IResNet, build_iresnet

_STRIPPED_PREFIXES = ("module.", "backbone.", "model.")
_BACKBONE_PREFIX = "backbone."
METADATA_KEY = "grafiqs"  # top-level checkpoint entry with the backbone's layout and preprocessing (fr_module, callbacks)
_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")


def _load_plain(path: str | Path):
    """torch.load with weights_only=True, turning every failure into a WeightsError that says why."""
    path = Path(path)
    try:
        file = open_regular(path, "weights file", limit=None)
    except ReadError as error:
        raise WeightsError(f"weights file not found: {path} (pass --weights with the path of a .pth state dict)"
                           if error.reason == "not found" else str(error)) from None
    try:
        with file:
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"GLOBAL (\S+)", str(error))
        if refused:
            raise WeightsError(
                f"{path}: refused to unpickle: it asks for {refused.group(1)}, which is not a tensor or plain "
                "container and could run code; only plain state dicts are loaded"
            ) from None
        raise WeightsError(f"{path}: not a readable PyTorch weights file (unsupported pickle content)") from None
    except Exception as error:  # truncated zip, not a torch file at all, ...
        raise WeightsError(f"{path}: not a readable PyTorch weights file ({type(error).__name__}: {error})") from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain state dict from a `.pth`/`.pt`/`.ckpt` file, never executing pickled code.

    Accepts insightface/official GraFIQs state dicts, DDP-saved ones (`module.` prefix)
    and checkpoints that hold them under `state_dict`. A Lightning checkpoint of the project's
    FaceRecognitionModule holds `backbone.*` and `head.*` weights: only the backbone is kept.
    """
    return _state_dict_from(_load_plain(path), path)


def _state_dict_from(loaded, path: str | Path) -> dict[str, torch.Tensor]:
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
        if any(isinstance(k, str) and k.startswith(_BACKBONE_PREFIX) for k in loaded):
            loaded = {k: v for k, v in loaded.items() if k.startswith(_BACKBONE_PREFIX)}
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors, found {type(loaded).__name__}")
    return {_strip_prefix(key): value for key, value in loaded.items()}


def read_checkpoint_metadata(path: str | Path) -> dict | None:
    """The backbone metadata a project checkpoint records, or None for files without it (plain .pth).

    Returns `arch`, `layers`, `widths`, `num_features`, `colour_order` ("bgr"/"rgb") and
    `normalization` ({"mean": [...], "std": [...]}), plus `bn_recalibration` when recorded. Read
    from the checkpoint's `grafiqs` entry (written by FaceRecognitionModule.on_save_checkpoint),
    else derived from its `hyper_parameters`. Loaded with weights_only=True like the weights.
    """
    return _metadata_from(_load_plain(path), path)


def _metadata_from(loaded, path: str | Path) -> dict | None:
    if not isinstance(loaded, dict):
        return None
    meta = loaded.get(METADATA_KEY)
    hparams = loaded.get("hyper_parameters")
    if not isinstance(meta, dict):
        if not isinstance(hparams, dict) or "arch" not in hparams or "colour_order" not in hparams:
            return None
        meta = dict(hparams)
    arch = meta.get("arch")
    layers = meta.get("layers") or ARCHITECTURES.get(arch)
    if layers is None:
        raise WeightsError(f"{path}: checkpoint metadata names arch {arch!r} without layers; cannot tell the backbone's depth")
    normalization = meta.get("normalization") or (hparams or {}).get("normalization") or NORMALIZATION
    result = {
        "arch": arch,
        "layers": tuple(int(v) for v in layers),
        "widths": tuple(int(v) for v in (meta.get("widths") or DEFAULT_WIDTHS)),
        "num_features": int(meta.get("num_features") or 512),
        "colour_order": meta.get("colour_order"),
        "normalization": normalization,
    }
    if result["colour_order"] not in ("bgr", "rgb"):
        raise WeightsError(f"{path}: checkpoint records colour_order {result['colour_order']!r}, expected 'bgr' or 'rgb'")
    if meta.get("bn_recalibration") is not None:
        result["bn_recalibration"] = meta["bn_recalibration"]
    return result


def _strip_prefix(key: str) -> str:
    for prefix in _STRIPPED_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def describe_architecture(state_dict: dict[str, torch.Tensor]) -> dict:
    """What an iResNet state dict's keys and shapes say about the network that wrote it."""
    blocks = Counter()
    for key in state_dict:
        match = _BLOCK_KEY.match(key)
        if match:
            blocks[int(match.group(1))] = max(blocks[int(match.group(1))], int(match.group(2)) + 1)
    layers = tuple(blocks.get(stage, 0) for stage in (1, 2, 3, 4))
    widths = tuple(
        state_dict[f"layer{stage}.0.conv1.weight"].shape[0] if f"layer{stage}.0.conv1.weight" in state_dict else 0
        for stage in (1, 2, 3, 4)
    )
    fc = state_dict.get("fc.weight")
    name = next((arch for arch, depth in ARCHITECTURES.items() if depth == layers), None)
    return {
        "arch": name,
        "layers": layers,
        "widths": widths,
        "num_features": int(fc.shape[0]) if fc is not None else None,
    }


def load_weights(model: IResNet, state_dict: dict[str, torch.Tensor], source: str = "weights") -> IResNet:
    """Copy `state_dict` into `model`, or raise a WeightsError that names every mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        found = describe_architecture(state_dict)
        suggestion = found["arch"] or f"an iResNet with blocks {found['layers']} and widths {found['widths']}"
        parts = [f"{source} do not fit the chosen backbone"]
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong_shape)):
            if items:
                shown = ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
                parts.append(f"{len(items)} {label}: {shown}")
        parts.append(f"the file's keys suggest {suggestion} with num_features={found['num_features']}")
        raise WeightsError("; ".join(parts))
    model.load_state_dict(state_dict)
    return model


def load_backbone(arch: str | None, weights: str | Path, num_features: int | None = None) -> IResNet:
    """An eval-mode iResNet with the weights of `weights`; `arch=None` or `"custom"` (train_fr.py's name for
    its own depths and widths) takes the architecture the keys imply."""
    return load_backbone_and_metadata(arch, weights, num_features)[0]


def load_backbone_and_metadata(
    arch: str | None, weights: str | Path, num_features: int | None = None
) -> tuple[IResNet, dict | None]:
    """`load_backbone` plus `read_checkpoint_metadata` of the same file, read once."""
    loaded = _load_plain(weights)
    state_dict, metadata = _state_dict_from(loaded, weights), _metadata_from(loaded, weights)
    found = describe_architecture(state_dict)
    num_features = num_features or found["num_features"] or 512
    if arch in (None, "custom"):
        if found["arch"] is None and 0 in found["layers"]:
            raise WeightsError(f"{weights}: no iResNet keys (layer1.0.conv1.weight, ...) found; is this a backbone?")
        model = IResNet(found["layers"], num_features, widths=found["widths"])
    else:
        model = build_iresnet(arch, num_features)
    return load_weights(model, state_dict, source=f"weights {weights}").eval(), metadata
