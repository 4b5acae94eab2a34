"""testmon-run why plugin.

Embedded in the testmon-run binary and loaded with ``-p`` into one run of the user's own
command by ``testmon-run why``. That run's ``TESTMON_DATAFILE`` is a private copy of the
user's datafile (in the run directory), so testmon's own code does everything it does in a
real run (environment row, ``determine_stable``, the end-of-collection sync, the
selection) on the copy, never on the user's file. This plugin:

- keeps xdist off and pytest's cache unwritten (``--cache-clear`` too);
- before the collection (``pytest_sessionstart``), reads testmon's view with testmon's own
  functions: the tracked files whose content changed (``SourceTree``/``get_source_sha``),
  and per changed file the tests whose recorded fingerprint no longer matches
  (``DB.determine_tests``, testmon's own matching); the tests recorded as failing and
  those whose record is a placeholder (never ran);
- after testmon's selection (``pytest_collection_finish``), writes one JSON object to
  ``TESTMON_RUN_WHY_OUT`` and ends the process at once (``os._exit``): no test runs, and
  no plugin's end-of-session writer (JUnit, reports, coverage data, pytest's cache) runs.

Self-contained: imports only the standard library, pytest and testmon.
"""

import json
import os
import sys

import pytest

# Bumped with src/why/session.rs whenever the JSON answer changes.
PROTOCOL = 1


def keep_xdist_off(option):
    """Never start xdist here, whatever addopts or the command line say."""
    if getattr(option, "numprocesses", None):
        option.numprocesses = None
    if getattr(option, "dist", None) not in (None, "no"):
        option.dist = "no"
    if getattr(option, "tx", None):
        option.tx = []


def relpath(path, rootdir):
    return os.path.relpath(path, rootdir).replace(os.sep, "/")


def write_answer(path, answer):
    tmp = path + ".tmp"
    # Readable by its owner only, as every file in the run directory.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(answer, out)
    os.replace(tmp, path)


def recorded_fshas(data):
    """filename -> the file hashes testmon recorded for it in this environment (not the
    placeholders', which have none)."""
    db = data.db
    fk = db._test_execution_fk_column()  # pylint: disable=protected-access
    out = {}
    for filename, fsha in db.con.execute(
        f"""SELECT DISTINCT f.filename, f.fsha
            FROM test_execution te, test_execution_file_fp te_ffp, file_fp f
            WHERE te.{fk} = ? AND te.id = te_ffp.test_execution_id
              AND te_ffp.fingerprint_id = f.id AND f.fsha IS NOT NULL""",
        (data.exec_id,),
    ):
        out.setdefault(filename, set()).add(fsha)
    return out


def placeholder_tests(data):
    """Tests whose record is testmon's placeholder (a fingerprint without a file hash): they
    were collected but never ran (deselected, or interrupted)."""
    db = data.db
    fk = db._test_execution_fk_column()  # pylint: disable=protected-access
    return {
        row[0]
        for row in db.con.execute(
            f"""SELECT DISTINCT te.test_name
                FROM test_execution te, test_execution_file_fp te_ffp, file_fp f
                WHERE te.{fk} = ? AND te.id = te_ffp.test_execution_id
                  AND te_ffp.fingerprint_id = f.id AND f.fsha IS NULL""",
            (data.exec_id,),
        )
    }


def changed_files(data, placeholders):
    """[(filename, gone, tests affected)] for each tracked file whose content is not what
    testmon recorded: the tests whose fingerprint of that file no longer matches it, by
    testmon's own matching (placeholders left out: they are counted apart)."""
    from testmon.testmon_core import collect_mhashes  # pylint: disable=import-outside-toplevel

    out = []
    for filename, fshas in sorted(recorded_fshas(data).items()):
        module = data.source_tree.get_file(filename)
        if module is not None and fshas == {module.fs_fsha}:
            continue
        mhashes = collect_mhashes(data.source_tree, [filename])
        affected = set(data.db.determine_tests(data.exec_id, mhashes)["affected"])
        out.append((filename, module is None, affected - placeholders))
    return out


class Why:
    def __init__(self):
        self.out = os.environ["TESTMON_RUN_WHY_OUT"]
        self.datafile = os.environ["TESTMON_RUN_WHY_DATAFILE"]
        self.before = None
        self.deselected = 0
        self.user_deselected = 0
        self.skipped_files = set()
        self.testmon_deselected_files = None
        self.collect_errors = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_cmdline_main(self, config):
        option = config.option
        keep_xdist_off(option)
        if getattr(option, "cacheclear", False):
            option.cacheclear = False
        # testmon opens the private copy, whatever a conftest.py did to the environment.
        os.environ["TESTMON_DATAFILE"] = self.datafile

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session):
        config = session.config
        cache = getattr(config, "cache", None)
        if cache is not None:
            cache.set = lambda key, value: None
        data = getattr(config, "testmon_data", None)
        if data is None:
            return
        placeholders = placeholder_tests(data)
        self.before = {
            "tests": set(data.all_tests),
            "failing": set(data.failing_tests or ()),
            "placeholders": placeholders,
            "tracked": len(set(data.db.filenames(data.exec_id))),
            "changed": changed_files(data, placeholders),
        }

    @pytest.hookimpl(wrapper=True)
    def pytest_ignore_collect(self, collection_path, config):
        ignored = yield
        if ignored:
            rel = relpath(str(collection_path), str(config.rootpath))
            if rel in self.files_testmon_skips(config):
                self.skipped_files.add(rel)
        return ignored

    def files_testmon_skips(self, config):
        """The files testmon's selection does not even collect (its deselected files)."""
        if self.testmon_deselected_files is None:
            select = config.pluginmanager.get_plugin("TestmonSelect")
            active = select is not None and config.testmon_config.select
            self.testmon_deselected_files = set(select.deselected_files) if active else set()
        return self.testmon_deselected_files

    def pytest_deselected(self, items):
        for item in items:
            # testmon's deselected items are stand-ins without a node id.
            if hasattr(item, "nodeid"):
                self.user_deselected += 1
            else:
                self.deselected += 1

    def pytest_collectreport(self, report):
        if report.failed:
            self.collect_errors.append(report.nodeid or ".")

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_finish(self, session):
        write_answer(self.out, self.answer(session))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # pylint: disable=protected-access

    def answer(self, session):
        config = session.config
        selected = [item.nodeid for item in session.items]
        selected_set = set(selected)
        tm_conf = getattr(config, "testmon_config", None)
        data = getattr(config, "testmon_data", None)
        answer = {
            "protocol": PROTOCOL,
            "active": data is not None,
            "select": bool(tm_conf and tm_conf.select),
            "new_db": bool(data is not None and data.new_db),
            "packages_changed": bool(data is not None and data.system_packages_change),
            "exec_id": data.exec_id if data is not None else None,
            "selected": len(selected_set),
            "deselected": self.deselected,
            "user_deselected": self.user_deselected,
            "skipped": 0,
            "tracked_files": 0,
            "changed": [],
            "failed": 0,
            "no_record": 0,
            "other": 0,
            "collect_errors": self.collect_errors,
        }
        before = self.before
        if before is None:
            return answer
        answer["tracked_files"] = before["tracked"]
        answer["skipped"] = sum(
            1
            for name in before["tests"] - selected_set
            if name.split("::", 1)[0] in self.skipped_files
        )
        explained = set()
        for filename, gone, affected in before["changed"]:
            answer["changed"].append(
                {
                    "file": filename,
                    "gone": gone,
                    "selected": len(affected & selected_set),
                    "not_collected": len(affected - selected_set),
                }
            )
            explained |= affected
        failed = selected_set & before["failing"]
        no_record = {
            name
            for name in selected_set - failed
            if name not in before["tests"] or name in before["placeholders"]
        }
        answer["failed"] = len(failed)
        answer["no_record"] = len(no_record)
        if answer["select"]:
            answer["other"] = len(selected_set - explained - failed - no_record)
        return answer


if "TESTMON_RUN_WHY_OUT" in os.environ:
    _WHY = Why()

    def pytest_addhooks(pluginmanager):
        pluginmanager.register(_WHY, "testmon_run_why")
