"""Reading a diffusers `config.json` (`unet/`, `vae/` of an SDXL folder) for `UNetConfig.from_diffusers`
and `VAEConfig.from_diffusers`: an option the file leaves out has diffusers' default, an option our
module implements with one setting only must have it, and an option we do not know is refused (it
might change what the weights compute)."""
from __future__ import annotations

from typing import Any, Mapping


def read_options(what: str, config: Mapping[str, Any], defaults: Mapping[str, Any],
                 supported: Mapping[str, tuple], ignored: tuple[str, ...] = ()) -> dict[str, Any]:
    """`defaults` with `config`'s values; `_`-prefixed keys (`_class_name`, `_diffusers_version`) and
    `ignored` ones (e.g. the default image size) are dropped.

    Raises:
      ValueError: an option `defaults` does not list, or one whose value `supported` does not allow;
        the message names `what`, the option and its value.
    """
    unknown = sorted(k for k in config if not k.startswith("_") and k not in defaults and k not in ignored)
    if unknown:
        raise ValueError(f"{what} option {unknown[0]}={config[unknown[0]]!r} is not one seedx_jax knows")
    options = {**defaults, **{k: v for k, v in config.items() if k in defaults}}
    for key, allowed in supported.items():
        if options[key] not in allowed:
            raise ValueError(f"{what} option {key}={options[key]!r} is not supported (only "
                             f"{' or '.join(map(repr, allowed))})")
    return options
