"""``python -m wgslirpy``: the same as the ``wgslirpy`` command."""

import sys

from .cli import main

sys.exit(main())
