"""``python -m smsq`` is the ``smsq`` command."""

import sys

from smsq.cli import main

sys.exit(main())
