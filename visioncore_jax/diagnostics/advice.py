"""Recommendations checked against the run's config (config.json) before they are printed: every override names
an existing key with a value of its type, paired fields go together (a warmup in epochs needs warmup_steps=-1),
no override repeats the value the run already has, and a model change must fit the task and the data's shapes."""

import ast
import copy
import dataclasses
import shlex

from visioncore_jax.diagnostics.findings import Finding

PREFIX = "--config."
# Setting the first key only takes effect with the second at its value (configs/default.py: *_steps = -1 means
# "use *_epochs").
PAIRED = {"schedule.warmup_epochs": ("schedule.warmup_steps", -1),
          "schedule.cycle_warmup_epochs": ("schedule.cycle_warmup_steps", -1)}
# What each model reads (visioncore_jax/models): clip models need clip data, segmentation models segmentation
# data, and several need their own sub-config (absent from a config written for another model).
CLIP_DATASETS = ("embedded_clips",)
SEGMENTATION_DATASETS = ("embedded_masks", "oxford_iiit_pet")
CLIP_MODELS = ("conv_gru",)
SEGMENTATION_MODELS = ("unet",)
MODEL_SUBCONFIGS = {"conv_gru": ("gru", "conv", "encoder_widths"), "unet": ("unet",), "vc_resnet": ("vc",)}


def _lookup(config: dict, key: str):
    """(found, value) of dotted `key` in the nested dict."""
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _assign(config: dict, key: str, value) -> None:
    """Sets dotted `key` (which exists) in the nested dict."""
    *parents, name = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[name] = value


def parse_value(text: str, current):
    """`text` as a value of `current`'s type (as `--config.key=text` would set it); raises ValueError when it
    cannot be one."""
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ValueError(f"{text!r} is no literal") from None
    if isinstance(current, bool) or isinstance(value, bool):
        if not (isinstance(current, bool) and isinstance(value, bool)):
            raise ValueError(f"{text!r} does not match the type of {current!r}")
        return value
    if isinstance(current, float) and isinstance(value, int | float):
        return float(value)
    if isinstance(current, int) and isinstance(value, int):
        return value
    if isinstance(current, list | tuple) and isinstance(value, list | tuple):
        return list(value)
    if current is None:
        return value
    raise ValueError(f"{text!r} does not match the type of {current!r}")


def model_problem(config: dict, task: str) -> str | None:
    """Why the config's model does not fit its data (None when it fits)."""
    data_name = _lookup(config, "data.name")[1]
    model = _lookup(config, "model.name")[1]
    segmentation = task == "segmentation" or data_name in SEGMENTATION_DATASETS
    if (model in SEGMENTATION_MODELS) != segmentation:
        return f"model {model!r} does not fit {'segmentation' if segmentation else 'classification'} data"
    if (model in CLIP_MODELS) != (data_name in CLIP_DATASETS):
        return f"model {model!r} does not fit the {'clip' if data_name in CLIP_DATASETS else 'image'} data"
    missing = [k for k in MODEL_SUBCONFIGS.get(model, ()) if not _lookup(config, f"model.{k}")[0]]
    if missing:
        return f"model {model!r} needs config.model.{missing[0]}"
    aux = _lookup(config, "model.aux_loss_weight")[1]
    if isinstance(aux, int | float) and aux > 0 and model != "dual_resnet":
        return "model.aux_loss_weight > 0 needs model 'dual_resnet'"
    return None


def checked(recommendation: str, config: dict, task: str = "classification") -> str | None:
    """`recommendation` made valid for the run: paired fields added, unchanged overrides dropped; None when it is
    invalid for the run (an unknown key, a wrong type, an incompatible model) or changes nothing. Without a
    config (no config.json) it is returned as is."""
    if not config:
        return recommendation
    flags = shlex.split(recommendation)
    overrides = {}
    for flag in flags:
        if not flag.startswith(PREFIX):
            continue
        key, _, text = flag[len(PREFIX):].partition("=")
        overrides[key] = text
    for key, (partner, value) in PAIRED.items():
        if key in overrides and partner not in overrides:
            overrides[partner] = str(value)
    new = copy.deepcopy(config)
    kept = []
    for key, text in overrides.items():
        found, current = _lookup(config, key)
        if not found:
            return None
        try:
            value = parse_value(text, current)
        except ValueError:
            return None
        if value != current:
            _assign(new, key, value)
            kept.append(key)
    if overrides and not kept:
        return None
    if any(key.startswith("model.") for key in kept) and model_problem(new, task) is not None:
        return None
    others = [flag for flag in flags if not flag.startswith(PREFIX)]
    kept_flags = [f"{PREFIX}{key}={_quote(overrides[key])}" for key in overrides if key in kept]
    return " ".join(others + kept_flags)


def _quote(text: str) -> str:
    """A value as pasted in a shell (quoted when it holds spaces or shell characters)."""
    return text if shlex.quote(text) == text else shlex.quote(text)


def checked_finding(finding: Finding, config: dict, task: str = "classification") -> Finding:
    """`finding` with only the recommendations valid for the run (see `checked`), without duplicates."""
    valid = [checked(r, config, task) for r in finding.recommendations]
    return dataclasses.replace(finding, recommendations=tuple(dict.fromkeys(r for r in valid if r)))
