#!/usr/bin/env python3
"""Legacy entry point: ``python scripts/wgslirpy.py ...`` from a checkout or installed."""
import os
import sys

if __name__ == "__main__":
    # From a checkout, make the package next to this script importable.
    _top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isdir(os.path.join(_top, "wgslirpy")) and _top not in sys.path:
        sys.path.insert(0, _top)
    from wgslirpy.cli import main

    sys.exit(main())
