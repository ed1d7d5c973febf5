"""`python -m seedx_jax ...` = the `seedx-jax` command."""
import sys

from seedx_jax.exits import command_line

sys.exit(command_line())
