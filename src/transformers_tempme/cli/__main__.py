"""`python -m transformers_tempme.cli ...`, which is also what `accelerate launch -m transformers_tempme.cli` runs."""

import sys

from . import main

sys.exit(main())
