"""``python -m tests.chaos``: run one chaos campaign (see ``campaign.py``)."""

from __future__ import annotations

from .campaign import main

raise SystemExit(main())
