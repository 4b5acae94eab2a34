"""Test-support pytest plugin: appends the node id of every test that starts to $RAN_LOG.

Loaded with ``-p ran_log`` (this directory on PYTHONPATH) into single-process pytest and into
testmon-run's workers alike, so the integration tests can compare which tests ran. It lives
outside the fixture projects, so coverage (and testmon) never sees it.
"""

import os


def pytest_runtest_logreport(report):
    path = os.environ.get("RAN_LOG")
    if path and report.when == "setup":
        with open(path, "a", encoding="utf-8") as log:
            log.write(report.nodeid + "\n")
