#!/usr/bin/env python3
"""Legacy entry point: ``python scripts/wgslirpy.py ...`` (from a checkout or installed).

Installed, this file lands in the same ``bin/`` directory as the ``wgslirpy`` console
script, whose ``sys.path[0]`` is that directory: ``import wgslirpy`` would then find this
file instead of the package. So, imported under any name, this module takes its own
directory off ``sys.path`` and hands the name over to the real package; run as a script,
it does the same before starting the command line.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _unshadow() -> None:
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    # From a checkout, the package sits next to scripts/.
    top = os.path.dirname(_HERE)
    if os.path.isfile(os.path.join(top, "wgslirpy", "__init__.py")) and top not in sys.path:
        sys.path.insert(0, top)


if __name__ == "__main__":
    _unshadow()
    from wgslirpy.cli import main

    sys.exit(main())
else:
    import importlib

    _unshadow()
    del sys.modules[__name__]
    sys.modules[__name__] = importlib.import_module(__name__)
