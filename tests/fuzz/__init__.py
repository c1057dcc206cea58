"""Fuzzing every decoder (issue 20, the fuzzing part): targets, engines, the command.

``python -m tests.fuzz --seconds-each 60`` runs every target for a fixed budget each
(atheris when installed, else the in-process mutator) and exits non-zero on a crash,
after writing the input to ``tests/fuzz/crashes/``. ``test_fuzz.py`` is the short profile
pytest runs. See ``README.md`` here.
"""
