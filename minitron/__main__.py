"""`python -m minitron ...` (and `torchrun -m minitron ...`): the `minitron` command."""

import sys

from minitron.cli import main

sys.exit(main())
