"""`--config` of `python -m seedx_jax.train` and `python -m seedx_jax.preflight`: a config file, or the
name of a shipped one, from any working directory; bad input is one line and exit 2.

ml_collections' `config_flags.DEFINE_config_file` loads the file and applies `--config.a.b=value`
overrides; `parse_flags` (absl's `flags_parser`) first turns a shipped name into its installed file
(`sft_edit:tiny` -> `.../configs/sft_edit.py:tiny`), then reports what absl and ml_collections would
raise as tracebacks or exit-1 usage errors (an unknown field, a value of the wrong type, a bad
variant) as one `PROG: error:` line.
"""
from __future__ import annotations

import os
import re
import sys

from absl import flags
from ml_collections import ConfigDict, config_flags

import configs
from seedx_jax import paths

_CONFIG_ARG = re.compile(r"(--?config)(?:=(.*))?", re.S)
_EXCEPTION_PREFIX = re.compile(r"^\w+(Error|Exception): ")


def config_file(spec: str) -> str:
    """`spec` (`FILE[:variant]` or `NAME[:variant]`) as ml_collections' `--config` takes it: the file's
    absolute path (relative to the working directory, `~` expanded), or the installed file of the
    shipped training config NAME (`configs.TRAINING`), with the variant kept.

    Raises:
      ValueError: `spec` is neither a file nor a shipped config name.
    """
    path, colon, variant = spec.partition(":")  # ml_collections also splits at the first colon
    if path.strip() and os.path.isfile(paths.resolve(path)):
        return paths.resolve(path) + colon + variant
    if path in configs.TRAINING:
        return os.path.join(os.path.dirname(os.path.abspath(configs.__file__)), f"{path}.py") + colon + variant
    raise ValueError(f"--config {spec}: no such file, and no shipped config of that name (shipped: "
                     f"{', '.join(configs.TRAINING)}; e.g. --config sft_edit:tiny)")


def with_config_files(argv: list[str]) -> list[str]:
    """`argv` with the value of every `--config` flag replaced by `config_file(value)`.

    Raises:
      ValueError: from `config_file`.
    """
    out = list(argv)
    i = 1
    while i < len(out) and out[i] != "--":
        match = _CONFIG_ARG.fullmatch(out[i])
        if match and match[2] is not None:
            out[i] = f"{match[1]}={config_file(match[2])}"
        elif match and i + 1 < len(out):
            out[i + 1] = config_file(out[i + 1])
            i += 1
        i += 1
    return out


def parse_flags(prog: str):
    """An absl `flags_parser` (`app.run(main, flags_parser=parse_flags("seedx_jax.train"))`) that prints
    `PROG: error: <one line>` and exits 2 on a bad `--config`, an override of a field the config does
    not have or of the wrong type, or any other flag error."""

    def parse(argv: list[str]) -> list[str]:
        try:
            argv = with_config_files(flags.FLAGS.read_flags_from_files(argv, force_gnu=False))
            return flags.FLAGS(argv)
        except (KeyError, AttributeError) as err:  # ml_collections: an override path the config lacks
            message = _unknown_field(argv) or _last_line(err)
        except (flags.Error, ValueError, TypeError, OSError) as err:
            message = _last_line(err)
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(2)

    return parse


def _last_line(err: BaseException) -> str:
    """The line that says what went wrong: ml_collections wraps an error of `get_config` with its
    traceback, whose last line is the error itself."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return _EXCEPTION_PREFIX.sub("", lines[-1]) if lines else type(err).__name__


def _unknown_field(argv: list[str]) -> str | None:
    """`--config.PATH: no such field (...)` for the first override whose PATH the config lacks (the
    error ml_collections raises names only the last key, wrapped in reprs)."""
    spec, overrides = None, []
    for i, arg in enumerate(argv[1:], 1):
        if arg == "--":
            break
        if match := _CONFIG_ARG.fullmatch(arg):  # the last --config wins, as in absl
            spec = match[2] if match[2] is not None else (argv[i + 1] if i + 1 < len(argv) else None)
        elif match := re.match(r"--?(?:no)?config\.([^=]+)", arg):
            overrides.append(match[1])
    if spec is None:
        return None
    values = flags.FlagValues()  # the config without the overrides
    config_flags.DEFINE_config_file("config", flag_values=values, sys_argv=[argv[0], "--config", spec])
    values([argv[0], "--config", spec])
    for override in overrides:
        if missing := _missing_prefix(values.config, override):
            parent, _, name = missing.rpartition(".")
            return f"--config.{override}: no such field (config{'.' if parent else ''}{parent} has no {name!r})"
    return None


def _missing_prefix(config: ConfigDict, path: str) -> str | None:
    """The shortest prefix of the dotted `path` that `config` does not have; None when it has it all."""
    node, parts = config, path.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, ConfigDict) or part not in node:
            return ".".join(parts[:i + 1])
        node = node[part]
    return None
