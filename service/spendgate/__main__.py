"""`python -m spendgate` — the same as the `spendgate` command."""

import sys

from .cli import main

sys.exit(main())
