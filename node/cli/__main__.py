"""``python -m corestate.node.cli``: the same as the ``corestate`` command."""

import sys

from corestate.node.cli import main

sys.exit(main())
