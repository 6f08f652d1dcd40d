"""A run's config read back from `workdir/config.json`, and command-line overrides (`--config.a.b=v`) applied
to it the way `main.py` applies its flags."""

import ast
import json
import os
import shlex

import ml_collections

from visioncore_jax.errors import InputError


def _tuples(value):
    """JSON lists back to the tuples the configs use (sequence fields are tuples in configs/*.py)."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in `workdir` was started with (its `config.json`); an InputError says what is missing."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise InputError(f"{path} does not exist: {workdir!r} holds no run. Train into it first "
                         "(python main.py --workdir=... --config=...).")
    with open(path) as f:
        return ml_collections.ConfigDict(_tuples(json.load(f)))


def parse_overrides(recommendation: str) -> dict[str, object]:
    """`'--config.a.b=v [--config.c=w ...]'` -> `{'a.b': v, 'c': w}`, values read as Python literals (strings
    otherwise); raises a ValueError on anything that is not a `--config.` override."""
    overrides = {}
    for token in shlex.split(recommendation):
        key, sep, text = token.removeprefix("--config.").partition("=")
        if not token.startswith("--config.") or not sep or not key:
            raise ValueError(f"{token!r} is not a config override; write it as --config.<field>=<value>.")
        try:
            overrides[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[key] = text
    return overrides


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, object]) -> ml_collections.ConfigDict:
    """A copy of `config` with `overrides` (dotted keys) set, type-checked by ml_collections; a ValueError
    names an unknown field or a value of the wrong type."""
    config = ml_collections.ConfigDict(config.to_dict())
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
            raise ValueError(f"--config.{key}: the run's config has no field {key!r}.")
        try:
            config.update_from_flattened_dict({key: value})
        except TypeError as error:
            raise ValueError(f"--config.{key}={value!r}: wrong type for this field ({error}).") from None
    return config


def flattened(config: ml_collections.ConfigDict | dict, prefix: str = "") -> dict[str, object]:
    """`{'a.b': value}` for every leaf field of `config`."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, (dict, ml_collections.ConfigDict)):
            flat |= flattened(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def override_flags(overrides: dict[str, object]) -> str:
    """The overrides as command-line flags, quoted for a POSIX shell."""
    return " ".join(shlex.quote(f"--config.{key}={value}") for key, value in overrides.items())
