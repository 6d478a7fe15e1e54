"""``python -m smsq`` is the ``smsq`` command."""

import sys

from smsq.worker.cli import main

sys.exit(main())
