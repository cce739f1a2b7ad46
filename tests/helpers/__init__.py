"""What the test modules share, each module named by what it holds: stand-ins, fixtures and helpers.

A test module never imports another test module (tests/test_suite_layout.py checks): what two of
them need lives here, in tests/conftest.py, or in tests/awsutil.py, dockerutil.py and netutil.py.
Fixtures defined here reach every test module through conftest's `pytest_plugins`.
"""
