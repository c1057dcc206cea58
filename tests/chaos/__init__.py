"""The chaos campaign of issue 20: real daemons, faults of every kind, a soak, one report.

Run ``python -m tests.chaos --help`` from the checkout (as root for namespaces, netem and
loop devices). ``campaign.py`` runs it, ``faults.py`` holds the injectors, ``report.py``
writes ``REPORT.md`` and ``REPORT.json`` here.
"""
