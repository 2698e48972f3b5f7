"""`python -m pretrain.export ...`, the same as `pretrain export ...`."""
import sys

from .command import main

sys.exit(main())
