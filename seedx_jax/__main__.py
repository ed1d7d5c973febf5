"""`python -m seedx_jax ...` = the `seedx-jax` command."""
import sys

from seedx_jax.cli import main

sys.exit(main())
