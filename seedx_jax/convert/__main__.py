import sys

from seedx_jax.convert.cli import main

sys.exit(main())
