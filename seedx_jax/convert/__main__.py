"""`python -m seedx_jax.convert ...` = `seedx-jax convert ...`."""
import sys

from seedx_jax.exits import command_line

sys.exit(command_line("seedx_jax.convert.cli", "python -m seedx_jax.convert"))
