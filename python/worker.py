"""testmon-run worker plugin.

Embedded in the testmon-run binary and loaded into every worker with ``-p``. It makes
pytest-testmon act as a worker of the native supervisor:

- the main database is opened read-only and never written; the environment row the
  supervisor pre-created is used as it is (``plan.json`` in ``TESTMON_RUN_DIR``);
- testmon's own selection runs unchanged; its end-of-collection sync is reported to the
  supervisor instead of being written;
- fingerprints are computed by testmon's own code and written by testmon's own DB class,
  into this worker's private spool file, which the supervisor merges;
- tests are pulled from the supervisor one unit at a time, always one item ahead, so that
  ``nextitem`` (and with it the teardown of higher-scoped fixtures) is right: the run loop
  (``Worker.run_tests``) runs them, ``WorkQueue.handle_reply`` interprets the supervisor's
  replies;
- every message to the supervisor is made by one of the ``msg_*`` functions below and
  written as one JSON line by ``Channel.send``.

Self-contained: imports only the standard library, pytest and (when active) testmon.
"""

import base64
import collections
import gc
import io
import json
import os
import signal
import socket
import sys
import time
import warnings

import pytest

# The messages between the supervisor and its workers: ``FromWorker`` and ``ToWorker`` in the
# supervisor's protocol module. Bumped there and here together whenever a message changes.
PROTOCOL = 4


def msg_hello(worker, pid):
    """The first message, as the plugin loads: the worker's name and process."""
    return {"t": "hello", "protocol": PROTOCOL, "worker": worker, "pid": pid}


def msg_collected(  # pylint: disable=too-many-arguments
    nodeids, deselected, sync, collect_errors, tm_message, user_deselected, forward
):
    """The collection, in testmon's order, after testmon's selection; ``sync``: what testmon's
    end-of-collection sync would keep (None: no sync); ``forward``: the failed collections'
    reports for the controller."""
    msg = {
        "t": "collected",
        "nodeids": nodeids,
        "deselected": deselected,
        "sync": sync,
        "collect_errors": collect_errors,
        "tm_message": tm_message,
        "user_deselected": user_deselected,
    }
    if forward:
        msg["forward"] = forward
    return msg


def collect_error(nodeid, text, message):
    """One entry of ``msg_collected``'s ``collect_errors``."""
    return {"nodeid": nodeid, "text": text, "message": message}


def msg_want(queued):
    """The worker holds ``queued`` tests (at most one): it wants the next unit."""
    return {"t": "want", "queued": queued}


def msg_result(nodeid, reports, durable, sections=None, forward=None):
    """One test's reports (``report_data``); ``durable``: every test reported so far has its
    fingerprints in the spool; ``sections``: its part of pytest's extra summary sections;
    ``forward``: its reports in pytest's own serialization, for the controller."""
    msg = {"t": "result", "nodeid": nodeid, "reports": reports, "durable": durable}
    if sections:
        msg["sections"] = sections
    if forward:
        msg["forward"] = forward
    return msg


def msg_finished(exitstatus, shouldfail, shouldstop, warnings_shown, cache, workeroutput):
    """The session's end: its outcome, pytest's warnings, this worker's share of the cache
    and xdist's ``config.workeroutput`` (for the controller's ``pytest_testnodedown``)."""
    return {
        "t": "finished",
        "exitstatus": int(exitstatus),
        "shouldfail": bool(shouldfail),
        "shouldstop": bool(shouldstop),
        "warnings": warnings_shown,
        "cache": cache,
        "workeroutput": workeroutput,
    }


# How often testmon's batch of fingerprints is written to the spool at the latest (seconds):
# a worker killed without warning loses at most this much of its work, which the supervisor
# runs again. testmon itself writes every 250 tests; each write costs ~15 ms of coverage work.
FLUSH_SECONDS = float(os.environ.get("TESTMON_RUN_FLUSH_SECONDS", "2.0"))

# pytest categories and the -r characters that show them in the short test summary.
REPORT_CHARS = {"failed": "f", "passed": "p", "error": "E", "skipped": "s", "xfailed": "x", "xpassed": "X"}

# pytest cache keys the supervisor writes once for the whole run (never last-writer-wins).
MERGED_CACHE_KEYS = ("cache/lastfailed", "cache/stepwise")


# xdist carries workerinput/workeroutput over execnet, which has bytes (syrupy sends its
# report compressed); JSON has not: bytes go as {BYTES_TAG: base64}, tuples and sets as lists.
BYTES_TAG = "__testmon_run_bytes__"


def to_json(value):
    if isinstance(value, bytes):
        return {BYTES_TAG: base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    return value


def from_json(value):
    if isinstance(value, dict):
        if len(value) == 1 and BYTES_TAG in value:
            return base64.b64decode(value[BYTES_TAG])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


class SupervisorGone(Exception):
    pass


class Channel:
    """JSON lines over the socket the supervisor handed us (TESTMON_RUN_FD). Only the
    process that opened it talks on it: a child forked by a test that goes on running the
    session (instead of exiting) ends quietly the first time it would talk or write the spool,
    as it would otherwise mix its messages and records with the worker's."""

    def __init__(self, fd):
        os.set_inheritable(fd, False)  # a test's subprocesses must not hold it open
        self.sock = socket.socket(fileno=fd)
        self.rfile = self.sock.makefile("rb")
        self.pid = os.getpid()

    def owner_only(self):
        if os.getpid() != self.pid:
            os._exit(0)  # pylint: disable=protected-access

    def send(self, msg):
        """Writes one message (a ``msg_*``) as one JSON line: the only writer to the socket."""
        self.owner_only()
        # default=str: a value pytest or a plugin hands us that JSON has no type for (pytest
        # 9.2's NodeId, a Path) goes as its text rather than killing the worker.
        data = (json.dumps(msg, ensure_ascii=False, default=str) + "\n").encode(
            "utf-8", "surrogateescape"
        )
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise SupervisorGone(str(exc)) from None

    def recv(self):
        self.owner_only()
        try:
            line = self.rfile.readline()
        except OSError as exc:
            raise SupervisorGone(str(exc)) from None
        if not line:
            raise SupervisorGone("the supervisor closed the connection")
        return json.loads(line)


class WorkQueue:
    """The tests the supervisor has handed this worker and it has not started yet, in order,
    and whether more may come. ``handle_reply`` interprets the supervisor's replies to "want"
    (as xdist's ``WorkerInteractor.handle_command`` interprets its controller's commands); the
    run loop takes the tests out, always knowing the next one."""

    def __init__(self):
        self.nodeids = collections.deque()
        self.no_more = False  # "shutdown" or "stop": the supervisor sends nothing more
        self.dropped = False  # "stop" dropped the test held as next

    def wants_more(self):
        """Fewer than two tests held (the one to run and the next) and more may come."""
        return len(self.nodeids) < 2 and not self.no_more

    def handle_reply(self, msg):
        """Applies one reply to "want". Returns True for "later" with a test held: nothing
        more for now, so the held test runs as the last (its teardown complete); asked again
        when idle, the supervisor answers once work comes back or the run is over."""
        kind = msg["t"]
        if kind == "run":
            self.nodeids.extend(msg["nodeids"])
        elif kind == "shutdown":
            self.no_more = True
        elif kind == "stop":
            self.stop()
        elif kind == "later":
            return bool(self.nodeids)
        return False

    def stop(self):
        """-x/--maxfail reached elsewhere: start nothing more, not even the test held as
        next (session end tears its fixtures down)."""
        self.no_more = True
        self.dropped = bool(self.nodeids)
        self.nodeids.clear()

    def take(self):
        """The next test to run, and the one after it (None: none held)."""
        nodeid = self.nodeids.popleft()
        return nodeid, (self.nodeids[0] if self.nodeids else None)


def private_file(path):
    """Creates ``path`` empty, readable by its owner only (0600, as every file testmon-run
    keeps in its run directory), for the writer that fills it; returns the path."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    return path


def items_by_nodeid(items):
    """The session's items by node id (the first, for a node id collected twice)."""
    out = {}
    for item in items:
        out.setdefault(item.nodeid, item)
    return out


def keep_xdist_off(option):
    """Never start xdist inside a worker, whatever addopts or the command line say."""
    if getattr(option, "numprocesses", None):
        option.numprocesses = None
    if getattr(option, "dist", None) not in (None, "no"):
        option.dist = "no"
    if getattr(option, "tx", None):
        option.tx = []


class Worker:
    def __init__(self):
        self.run_dir = os.path.abspath(os.environ["TESTMON_RUN_DIR"])
        self.name = os.environ["TESTMON_RUN_WORKER"]
        with open(os.path.join(self.run_dir, "plan.json"), encoding="utf-8") as plan_file:
            self.plan = json.load(plan_file)
        if self.plan["testmon"]["active"]:
            # The environment row the supervisor prepared for this run.
            self.plan["testmon"]["exec_id"] = int(os.environ["TESTMON_RUN_EXEC_ID"])
        self.channel = Channel(int(os.environ["TESTMON_RUN_FD"]))
        forks = os.environ.pop("TESTMON_RUN_FORKS", None)  # run::zygote
        self.zygote = Zygote(json.loads(forks)) if forks else None
        self.config = None
        self.sync = None  # testmon's end-of-collection sync: the tests that exist
        self.deselected = 0
        self.user_deselected = []
        self.collect_errors = []
        self.reports = {}
        self.raw_reports = {}
        self.spool = None
        self.stream = bool(self.plan.get("stream"))
        self.lastfailed_before = None
        self.cache_values = {}
        # The controller (python/controller.py) gets every report, pytest-serialized.
        self.forwarding = bool(os.environ.get("TESTMON_RUN_FORWARD"))
        self.forward = {}
        self.forward_collect = []
        self.tm_message = None
        self.exit_code = None  # pytest's, once its main loop has returned
        # Ctrl-C reaches a worker as SIGINT from the supervisor. Inside a test's setup, call or
        # teardown it interrupts at once, as in pytest; elsewhere (testmon's bookkeeping, the
        # talk with the supervisor) it waits for the end of the current test.
        self.interruptible = False
        self.interrupted = False
        self.last_flush = time.monotonic()
        self.channel.send(msg_hello(self.name, os.getpid()))

    def send(self, msg):
        """Sends a message during the session; without the supervisor, the session ends."""
        try:
            self.channel.send(msg)
        except SupervisorGone as exc:
            self.gone(exc)

    def recv(self):
        try:
            return self.channel.recv()
        except SupervisorGone as exc:
            self.gone(exc)

    def gone(self, exc):
        # Whatever testmon holds of the tests reported so far is written (its interrupt path,
        # which pytest runs for pytest.exit too): the next run recovers the spool. A dead
        # supervisor's parent-death SIGINT, which may come now, must not cut that write short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.interrupted = True
        self.no_next_test()
        pytest.exit(f"testmon-run worker {self.name}: {exc}", returncode=2)

    # -- configuration ------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_cmdline_main(self, config):
        self.config = config
        keep_xdist_off(config.option)
        self.take_workerinput(config)
        # Each worker writes its own JUnit file; the supervisor merges them at the user's path.
        if getattr(config.option, "xmlpath", None):
            config.option.xmlpath = private_file(os.environ["TESTMON_RUN_JUNIT"])  # RunDir::junit
        if self.plan["testmon"]["active"]:
            import testmon.pytest_testmon as tm_plugin  # pylint: disable=import-outside-toplevel

            tm_plugin.init_testmon_data = self.init_testmon_data
            # With workerinput, testmon would act as an xdist worker and leave the records
            # to a controller; here it records into this worker's spool, as one process.
            if hasattr(tm_plugin, "get_running_as"):
                tm_plugin.get_running_as = lambda _config: "single"
        self.exit_code = yield
        return self.exit_code

    def take_workerinput(self, config, fresh_output=True):
        """xdist's ``config.workerinput`` (workerid, workercount, testrunuid, mainargv and
        what the controller's ``pytest_configure_node`` added) and ``config.workeroutput``:
        the supervisor's first message, set where xdist's worker sets them, before
        ``pytest_configure``."""
        msg = self.recv()
        if not msg or msg.get("t") != "workerinput":
            pytest.exit(f"testmon-run worker {self.name}: no workerinput: {msg!r}", returncode=3)
        config.workerinput = from_json(msg["input"])
        if fresh_output:  # (a fork keeps what plugins put there while gw0 configured)
            config.workeroutput = {}

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config):
        # With workerinput, pytest's junitxml stays off (xdist's controller writes the file);
        # here each worker writes its own and the supervisor merges them.
        if getattr(config.option, "xmlpath", None):
            from _pytest import junitxml  # pylint: disable=import-outside-toplevel

            workerinput = config.__dict__.pop("workerinput", None)
            try:
                junitxml.pytest_configure(config)
            finally:
                config.workerinput = workerinput

    def init_testmon_data(self, config):
        """Replaces testmon's init_testmon_data: same TestmonData, our database."""
        from testmon import testmon_core  # pylint: disable=import-outside-toplevel

        tm = self.plan["testmon"]
        database = make_worker_db(self, tm)
        kwargs = {
            "rootdir": config.rootdir.strpath,
            "database": database,
            "environment": tm["environment"],
            "system_packages": tm["system_packages"],
        }
        if hasattr(testmon_core.TestmonData, "for_local_run"):  # 2.2.x
            data = testmon_core.TestmonData.for_local_run(**kwargs)
            data.determine_stable()
        else:  # 2.1.x
            data = testmon_core.TestmonData(**kwargs)
            data.determine_stable(False)

        worker = self

        def sync_db_fs_tests(retain):
            worker.sync = sorted(set(retain).union(set(data.stable_test_names)))

        data.sync_db_fs_tests = sync_db_fs_tests
        config.testmon_data = data
        self.tm_message = testmon_message(config, data)

    def open_spool(self, tm):
        if self.spool is None:
            from testmon import db as tm_db  # pylint: disable=import-outside-toplevel

            path = os.environ["TESTMON_RUN_SPOOL"]  # RunDir::spool
            spool = tm_db.DB(path)
            # Owner only, as every file in the run directory (testmon's DB makes the file
            # itself; SQLite gives its journal the same mode).
            os.chmod(path, 0o600)
            with spool.con as con:
                con.execute(
                    "INSERT INTO environment (id, environment_name, system_packages, python_version)"
                    " VALUES (?, ?, ?, ?)",
                    (tm["exec_id"], tm["environment"], tm["system_packages"], tm["python_version"]),
                )
            self.spool = spool
        return self.spool

    def close_spool(self):
        if self.spool is not None:
            self.spool.con.close()
            self.spool = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session):
        config = session.config
        FingerprintGuard.install(config)
        self.divert_cache(config)
        if self.stream:
            self.stream_output(config)

    def divert_cache(self, config):
        """pytest's cache: the keys the supervisor merges are kept for ``cache_report``, not
        written; the collection's node ids are written by one worker only."""
        cache = getattr(config, "cache", None)
        if cache is None:
            return
        self.lastfailed_before = dict(cache.get("cache/lastfailed", {}))
        original_set = cache.set

        def set_value(key, value):
            if key in MERGED_CACHE_KEYS:
                self.cache_values[key] = value
            elif key == "cache/nodeids" and self.name != "gw0":
                pass  # every worker collected the same: one writes it (and warns, if it can't)
            else:
                original_set(key, value)

        def warn(fmt, *, _ispytest=False, **args):
            """Cache.warn, one frame further out: the warning is located where pytest
            locates it, at the caller of cache.set, not at set_value."""
            from _pytest.warning_types import PytestCacheWarning  # pylint: disable=import-outside-toplevel

            warnings.warn(PytestCacheWarning(fmt.format(**args) if args else fmt), config.hook, stacklevel=4)

        cache.set = set_value
        cache.warn = warn

    def stream_output(self, config):
        """-s / log_cli: only the tests' output and live logs reach stdout (streamed by the
        supervisor, line by line); pytest's own terminal output goes to the worker's log
        (RunDir::log, which the supervisor also appends the streamed lines to)."""
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        from _pytest._io import TerminalWriter  # pylint: disable=import-outside-toplevel

        log = open(  # pylint: disable=consider-using-with
            os.path.join(self.run_dir, f"{self.name}.log"), "a", buffering=1, encoding="utf-8"
        )
        live = LiveLog(reporter, TerminalWriter(file=sys.__stdout__))
        reporter._tw = TerminalWriter(file=log)  # pylint: disable=protected-access
        logging_plugin = config.pluginmanager.get_plugin("logging-plugin")
        handler = getattr(logging_plugin, "log_cli_handler", None)
        if handler is not None and getattr(handler, "stream", None) is reporter:
            handler.stream = live

    # -- collection ---------------------------------------------------------------------

    def pytest_deselected(self, items):
        self.deselected += len(items)
        # pytest's own deselection (-k, -m, --deselect), not testmon's (its items have no id)
        self.user_deselected.extend(item.nodeid for item in items if hasattr(item, "nodeid"))

    def pytest_collectreport(self, report):
        if report.failed:
            self.collect_errors.append(
                collect_error(report.nodeid, render(self.config, report), crash_message(report))
            )
            if self.forwarding:
                self.forward_collect.append(self.serialize(report))

    def serialize(self, report):
        """A report as xdist's worker sends it (pytest's own serialization), without the
        covered lines testmon hangs on it."""
        config = self.config
        data = config.hook.pytest_report_to_serializable(config=config, report=report)
        data.pop("nodes_files_lines", None)
        return data

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session):
        if self.zygote is not None:
            zygote, self.zygote = self.zygote, None
            zygote.fork_all(self, session.config)  # returns in gw0 and in each fork
        msg = msg_collected(
            [item.nodeid for item in session.items],
            self.deselected,
            self.sync,
            self.collect_errors,
            self.tm_message,
            self.user_deselected,
            self.forward_collect,
        )
        whole, bound = fixture_layout(session.items)
        if whole:
            msg["whole_files"] = whole
        if bound:
            msg["bound"] = bound
        self.send(msg)

    # -- running ------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        if session.testsfailed and not session.config.option.continue_on_collection_errors:
            return None  # pytest's own loop raises "N errors during collection"
        if session.config.option.collectonly:
            return None
        previous = signal.signal(signal.SIGINT, self.on_sigint)
        try:
            self.run_tests(session)
        finally:
            # Interrupted, the session ends as pytest ends it; one SIGINT is enough (a second
            # Ctrl-C makes the supervisor kill the process group; a dead supervisor's may
            # arrive more than once, one per exiting thread).
            signal.signal(signal.SIGINT, signal.SIG_IGN if self.interrupted else previous)
        return True

    def run_tests(self, session):
        """The run loop: runs the tests the supervisor hands out until it has no more, the
        session fails or stops (-x/--maxfail), or Ctrl-C; always knowing the next test."""
        items = items_by_nodeid(session.items)
        work = WorkQueue()
        while True:
            self.ask_for_work(work)
            if not work.nodeids or self.interrupted:
                break
            nodeid, next_nodeid = work.take()
            nextitem = None if next_nodeid is None else items[next_nodeid]
            self.run_one_test(items[nodeid], nextitem)
            if self.interrupted or session.shouldfail or session.shouldstop:
                break
        if self.interrupted:
            self.interrupt_between_tests()
        if work.dropped:
            self.flush_testmon()

    def ask_for_work(self, work):
        """Asks the supervisor for tests until the worker holds two (the one to run and the
        next), the supervisor says "later" with one held, or nothing more will come."""
        while work.wants_more():
            self.send(msg_want(len(work.nodeids)))
            if work.handle_reply(self.recv()):
                break

    def run_one_test(self, item, nextitem):
        """pytest's protocol for one test; ``nextitem`` None: the last for now."""
        item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)

    def on_sigint(self, _signum, _frame):
        if self.interrupted:
            return
        self.interrupted = True
        if self.interruptible:
            raise KeyboardInterrupt

    def no_next_test(self):
        """Tells testmon that no test follows the last one run: it writes its batch after a
        test without a next one, or on an interrupt, never in between. Returns testmon's
        collecting plugin, or None when testmon does not collect."""
        collect = self.config.pluginmanager.get_plugin("TestmonCollect")
        collector = getattr(collect, "testmon", None)
        if collector is None or not hasattr(collector, "_next_test_name"):
            return None
        collector._next_test_name = None  # pylint: disable=protected-access
        return collect

    def interrupt_between_tests(self):
        """Every test run so far has finished: testmon's interrupt path writes its batch."""
        self.no_next_test()
        raise KeyboardInterrupt

    def flush_testmon(self):
        """Stopped (-x) with a held next test that will not run: testmon's interrupt path
        writes its batch (and stops its coverage) now."""
        collect = self.no_next_test()
        if collect is not None:
            collect.pytest_keyboard_interrupt(None)

    def run_phase(self):
        self.interruptible = True
        try:
            if self.interrupted:
                raise KeyboardInterrupt
            return (yield)
        finally:
            self.interruptible = False

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item):  # pylint: disable=unused-argument
        return (yield from self.run_phase())

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):  # pylint: disable=unused-argument
        return (yield from self.run_phase())

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item, nextitem):  # pylint: disable=unused-argument
        if time.monotonic() - self.last_flush >= FLUSH_SECONDS:
            self.no_next_test()  # testmon writes its batch after this test's teardown
        return (yield from self.run_phase())

    def durable(self, report):
        """Whether every test reported so far has its fingerprints in the spool: testmon
        does not collect, or it has just written its batch (after this teardown)."""
        collect = self.config.pluginmanager.get_plugin("TestmonCollect")
        if getattr(collect, "testmon", None) is None:
            return True
        if getattr(report, "nodes_files_lines", None):
            self.last_flush = time.monotonic()
            return True
        return False

    # After testmon's own logreport, which writes the batch: a result reported as durable
    # is in the spool.
    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report):
        self.keep_report(report)
        if report.when == "teardown":
            self.send(self.test_result(report))

    def keep_report(self, report):
        """One phase's report, until the test's teardown sends them all."""
        data = report_data(self.config, report)
        self.reports.setdefault(report.nodeid, []).append(data)
        if self.forwarding:
            self.forward.setdefault(report.nodeid, []).append(self.serialize(report))
        self.raw_reports.setdefault(report.nodeid, []).append((data["category"], report))

    def test_result(self, report):
        """The "result" message of the test whose teardown ``report`` is."""
        reports = self.reports.pop(report.nodeid)
        durable = self.durable(report)
        sections = extra_sections(self.config, self.raw_reports.pop(report.nodeid, []))
        forward = self.forward.pop(report.nodeid, None)
        return msg_result(report.nodeid, reports, durable, sections, forward)

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session):
        result = yield
        self.channel.owner_only()
        self.close_spool()
        try:
            for msg in self.unfinished_results(session):
                self.channel.send(msg)
            self.reports.clear()
            self.channel.send(self.finished(session))
        except SupervisorGone:
            pass  # nobody left to tell
        return result

    def unfinished_results(self, session):
        """A test whose teardown never reported because pytest failed itself
        (INTERNALERROR): the reports it has, as a "result" not durable."""
        if session.exitstatus != pytest.ExitCode.INTERNAL_ERROR:
            return []
        return [msg_result(nodeid, reports, False) for nodeid, reports in self.reports.items()]

    def finished(self, session):
        """The "finished" message."""
        return msg_finished(
            session.exitstatus,
            session.shouldfail,
            session.shouldstop,
            warning_list(session.config),
            self.cache_report(session.config),
            to_json(getattr(session.config, "workeroutput", None)),
        )

    def cache_report(self, config):
        """What this worker would have written to pytest's cache, for the supervisor's merge:
        the change to lastfailed (tests run here only), and stepwise's value."""
        cache = getattr(config, "cache", None)
        if cache is None or self.lastfailed_before is None:
            return None
        lfplugin = config.pluginmanager.get_plugin("lfplugin")
        after = getattr(lfplugin, "lastfailed", None)
        report = {"dir": str(getattr(cache, "_cachedir", ""))}
        if isinstance(after, dict):
            # pytest >= 9.2 keys lastfailed by NodeId objects, the cache file by strings.
            before = [str(k) for k in self.lastfailed_before]
            after = [str(k) for k in after]
            report["lastfailed_removed"] = sorted(set(before) - set(after))
            report["lastfailed_added"] = sorted(set(after) - set(before))
        if "cache/stepwise" in self.cache_values:
            report["stepwise"] = self.cache_values["cache/stepwise"]
        return report


class Zygote:
    """gw0 forks the other workers once it has collected and testmon has selected
    (run::zygote): one collection instead of N. Each fork (double-forked: the supervisor, its
    subreaper, becomes its parent) takes its own process group, socket, stdout/stderr (every
    descriptor of gw0's log files, pytest's saved ones and faulthandler's included), pytest
    capture, JUnit file, spool and read-only connection to the datafile, then says hello as
    that worker and carries on with the session: from there it is any worker."""

    def __init__(self, value):
        self.supervisor = value["supervisor"]
        self.logs = (value["log"], value["err"])
        self.forks = value["forks"]
        for fork in self.forks:
            os.set_inheritable(fork["fd"], False)  # a test's subprocesses must not hold them

    def fork_all(self, worker, config):
        """Returns in gw0 once every fork exists, and in each fork as that worker."""
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except Exception:  # pylint: disable=broad-except
                pass
        forks, self.forks = self.forks, []
        # What exists now is shared copy-on-write: the collector keeps out of it (it would
        # write to every object's header, copying each page in every fork).
        gc.freeze()
        for fork in forks:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # 3.12: fork with threads
                try:
                    intermediate = os.fork()
                except OSError:
                    continue  # its socket closes unused: the supervisor starts it afresh
                if intermediate == 0:
                    parent = os.getpid()
                    try:
                        grandchild = os.fork()
                    except BaseException:  # pylint: disable=broad-except
                        os._exit(1)  # pylint: disable=protected-access
                    if grandchild != 0:
                        os._exit(0)  # pylint: disable=protected-access
                    self.become(worker, config, fork, [f for f in forks if f is not fork], parent)
                    return
            os.waitpid(intermediate, 0)
        for fork in forks:
            os.close(fork["fd"])

    def become(self, worker, config, fork, others, parent):  # pylint: disable=too-many-arguments
        """This fork becomes worker ``fork["name"]``. It says hello first: until then whatever
        fails ends it at once (os._exit) and the supervisor starts that worker afresh; from
        its hello on it is that worker, and its crash is reported as a started worker's."""
        try:
            os.setpgid(0, 0)
            if not self.die_with_supervisor(parent):
                os._exit(0)  # pylint: disable=protected-access
            for other in others:
                os.close(other["fd"])
            worker.channel.rfile.close()
            worker.channel.sock.close()
            name = fork["name"]
            worker.name = name
            worker.channel = Channel(fork["fd"])
            worker.channel.send(msg_hello(name, os.getpid()))
        except BaseException:  # pylint: disable=broad-except
            os._exit(70)  # pylint: disable=protected-access
        os.environ.update(
            TESTMON_RUN_WORKER=name,
            TESTMON_RUN_FD=str(fork["fd"]),
            PYTEST_XDIST_WORKER=name,
            TESTMON_RUN_SPOOL=fork["spool"],
            TESTMON_RUN_JUNIT=fork["junit"],
        )
        self.retarget_output(fork)
        restart_capture(config)
        if getattr(config.option, "xmlpath", None):
            from _pytest import junitxml  # pylint: disable=import-outside-toplevel

            config.option.xmlpath = private_file(fork["junit"])
            xml = config.stash.get(junitxml.xml_key, None)
            if xml is not None:
                xml.logfile = os.path.normpath(os.path.abspath(config.option.xmlpath))
        worker.spool = None  # opened in this process, on its first write
        data = getattr(config, "testmon_data", None)
        if data is not None and worker.plan["testmon"]["active"]:
            data.db = make_worker_db(worker, worker.plan["testmon"])
        config.add_cleanup(lambda: end_fork(worker))
        if worker.forwarding:
            # The controller's pytest_configure_node for this worker (plugins that read
            # workerinput while configuring saw gw0's).
            worker.take_workerinput(config, fresh_output=False)
        else:
            config.workerinput = dict(config.workerinput, workerid=name)

    def die_with_supervisor(self, parent):
        """Once the supervisor is the parent (the intermediate process exits at once), a
        supervisor's death interrupts this worker as it does a started one (SIGINT). False:
        the supervisor is gone already."""
        deadline = time.monotonic() + 10
        while os.getppid() == parent and time.monotonic() < deadline:
            time.sleep(0.0005)
        import ctypes  # pylint: disable=import-outside-toplevel

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGINT, 0, 0, 0)  # PR_SET_PDEATHSIG
        return os.getppid() == self.supervisor  # else it died in the meantime

    def retarget_output(self, fork):
        """Every descriptor of gw0's log files (stdout, stderr, pytest's and faulthandler's
        duplicates) now writes to this worker's."""
        mine = {}
        for old, new in zip(self.logs, (fork["log"], fork["err"])):
            stat = os.stat(old)
            mine[(stat.st_dev, stat.st_ino)] = os.open(new, os.O_WRONLY | os.O_APPEND)
        opened = set(mine.values())
        for entry in os.listdir("/proc/self/fd"):
            fd = int(entry)
            if fd in opened:
                continue
            try:
                stat = os.fstat(fd)
            except OSError:
                continue
            target = mine.get((stat.st_dev, stat.st_ino))
            if target is not None:
                os.dup2(target, fd, inheritable=os.get_inheritable(fd))
        for fd in opened:
            os.close(fd)


def end_fork(worker):
    """A fork's end, after pytest's own, as multiprocessing ends a forked child: threads
    joined and exit handlers run as at any exit, then os._exit, without Python's
    finalization: tearing down every module touches every page the fork shares with gw0 and
    copies it (~0.3 s of CPU per fork on the benchmark's suite). Not after an error: its
    traceback and exit status are Python's."""
    if sys.exc_info()[1] is not None or worker.exit_code is None:
        return
    import atexit  # pylint: disable=import-outside-toplevel
    import threading  # pylint: disable=import-outside-toplevel

    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()  # waits for the threads a test left running, as the interpreter's exit
    atexit._run_exitfuncs()  # pylint: disable=protected-access
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # pylint: disable=broad-except
            pass
    os._exit(int(worker.exit_code))  # pylint: disable=protected-access


def restart_capture(config):
    """pytest's global capture anew: its temporary files are shared with gw0 after a fork
    (one file offset); the old ones are closed here unread (their text is gw0's)."""
    capman = config.pluginmanager.get_plugin("capturemanager")
    capturing = getattr(capman, "_global_capturing", None)
    if capturing is None:
        return
    started = getattr(capturing, "_state", None) == "started"
    capturing.stop_capturing()
    capman._global_capturing = None  # pylint: disable=protected-access
    capman.start_global_capturing()
    if not started:
        capman.suspend_global_capture()


class CacheAsOneProcess:
    """With workerinput, pytest's cache plugins (last-failed, new-first, stepwise) leave
    their writes to xdist's controller; here they make them as one process does, through
    ``Worker.divert_cache`` (the keys the supervisor merges kept for it, the node ids
    written by one worker); a warning they give (a read-only cache) counts as pytest's."""

    @staticmethod
    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(session):
        config = session.config
        workerinput = config.__dict__.pop("workerinput", None)
        if workerinput is None:
            return
        pluginmanager = config.pluginmanager
        names = ("lfplugin", "nfplugin", "stepwise", "stepwiseplugin")
        keep = [pluginmanager.get_plugin(name) for name in names]
        others = [plugin for plugin in pluginmanager.get_plugins() if plugin not in keep]
        try:
            hook = pluginmanager.subset_hook_caller("pytest_sessionfinish", remove_plugins=others)
            hook(session=session, exitstatus=session.exitstatus)
        finally:
            config.workerinput = workerinput


class LiveLog:
    """Stands in for the terminal reporter as pytest's live-log stream: to stdout."""

    def __init__(self, reporter, writer):
        self.reporter = reporter
        self.writer = writer

    def write(self, content, **markup):
        self.writer.write(content, **markup)
        self.writer.flush()

    def section(self, title, sep="=", **kwargs):
        self.writer.sep(sep, title, **kwargs)
        self.writer.flush()

    def flush(self):
        self.writer.flush()

    def __getattr__(self, name):
        return getattr(self.reporter, name)


def testmon_message(config, data):
    """testmon's own header words for this run (changed files, unchanged files, ...)."""
    try:
        from testmon.pytest_testmon import changed_message  # pylint: disable=import-outside-toplevel

        return changed_message(
            config,
            data.environment,
            getattr(data, "system_packages_change", False),
            getattr(getattr(config, "testmon_config", None), "select", True),
            getattr(data, "stable_files", set()),
            getattr(data, "unstable_files", set()),
        )
    except Exception:  # pylint: disable=broad-except
        return None


class FingerprintGuard:
    """testmon's ``get_tests_fingerprints``, safe per test: a testmon failure on one test's data
    must not sink the run.

    testmon computes a batch of tests' fingerprints in one call, and a single test's data can
    make it raise: testmon 2.1.4 and 2.2.0 raise IndexError (``SourceTree.get_file``,
    ``filename.rsplit(".", 1)[1]``) on a traced file without an extension, such as a jinja2
    template compiled with its own file name. The exception would end the session with an
    INTERNALERROR and lose the whole batch. Here a failing batch is computed again test by
    test; a test that still fails keeps its record (outcome, duration) but its fingerprints
    are dropped for testmon's own placeholder (``0match`` on its home file, what testmon's
    sync gives a new test), so the next run selects it again, and a warning in pytest's
    warnings summary names the test and the file.
    """

    class TestmonRunWarning(UserWarning):
        pass

    def __init__(self, config, compute):
        self.config = config
        self.compute = compute  # testmon's own method, bound to its TestmonData

    @classmethod
    def install(cls, config):
        data = getattr(config, "testmon_data", None)
        if data is not None and not isinstance(data.get_tests_fingerprints, cls):
            data.get_tests_fingerprints = cls(config, data.get_tests_fingerprints)

    def __call__(self, nodes_files_lines, reports):
        try:
            return self.compute(nodes_files_lines, reports)
        except Exception:  # pylint: disable=broad-except
            pass  # one test's data, or more: find whose, test by test
        out = {}
        for test, files in nodes_files_lines.items():
            try:
                out.update(self.compute({test: files}, reports))
            except Exception as exc:  # pylint: disable=broad-except
                out.update(self.drop(test, files, reports, exc))
        return out

    def drop(self, test, files, reports, exc):
        """The test's record without fingerprints, and the warning; no record at all when
        even that fails or the test has no Python home file to hold the placeholder."""
        from testmon.process_code import methods_to_checksums  # pylint: disable=import-outside-toplevel

        failures = []
        for filename, lines in files.items():
            try:
                self.compute({test: {filename: lines}}, reports)
            except Exception as file_exc:  # pylint: disable=broad-except
                failures.append((filename, file_exc))
        home = test.split("::", 1)[0]
        try:
            record = self.compute({test: {}}, reports)
            record[test]["deps"] = [
                {
                    "filename": home,
                    "mtime": None,
                    "fsha": None,
                    "method_checksums": methods_to_checksums(["0match"]),
                }
            ]
        except Exception as record_exc:  # pylint: disable=broad-except
            record, failures = {}, [(None, record_exc)]
        if not home.endswith(".py"):
            record = {}  # testmon's sync places placeholders on .py files only
        self.warn(test, failures or [(None, exc)])
        return record

    def warn(self, test, failures):
        """pytest's own warning record, as its warnings plugin makes one for a warning in a
        test, but never turned into an error by ``-W error``/``filterwarnings = error``."""
        where = ", ".join(name for name, _ in failures if name) or "its data"
        errors = "; ".join(f"{type(e).__name__}: {e}" for _, e in failures)
        text = (
            f"testmon failed on {where} computing the fingerprints of {test} ({errors}): "
            "they are dropped, so testmon selects the test again next run"
        )
        tb = failures[0][1].__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        message = warnings.WarningMessage(
            self.TestmonRunWarning(text),
            self.TestmonRunWarning,
            tb.tb_frame.f_code.co_filename if tb else __file__,
            tb.tb_lineno if tb else 0,
        )
        self.config.hook.pytest_warning_recorded.call_historic(
            kwargs={"warning_message": message, "nodeid": test, "when": "runtest", "location": None}
        )


def warning_list(config):
    """The warnings pytest's summary would show: (location, message) pairs."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return []
    out = []
    for warning in reporter.stats.get("warnings", []):
        try:
            out.append([warning.get_location(config) or "", str(warning.message)])
        except Exception:  # pylint: disable=broad-except
            continue
    return out


# pytest's summary sections beyond FAILURES and ERRORS, in its order: the reporter's method,
# the stats category it shows, and whether pytest's options ask for it.
EXTRA_SECTIONS = (
    ("XFAILURES", "summary_xfailures", "xfailed"),
    ("PASSES", "summary_passes", "passed"),
    ("XPASSES", "summary_xpasses", "xpassed"),
)


def extra_sections(config, reports):
    """One test's part of pytest's XFAILURES, PASSES and XPASSES sections, made by pytest's
    own methods over this test's reports: [title, body] pairs."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or getattr(config.option, "tbstyle", None) == "no":
        return None
    out = []
    for title, method, category in EXTRA_SECTIONS:
        if not hasattr(reporter, method) or not any(c == category for c, _ in reports):
            continue
        stats = {}
        for cat, report in reports:
            stats.setdefault(cat, []).append(report)
        text = run_reporter(reporter, stats, getattr(reporter, method))
        if text:  # the section's title line, then this test's part
            out.append([title, text.partition("\n")[2]])
    return out or None


def run_reporter(reporter, stats, method):
    """What a reporter method writes when the stats hold only `stats`."""
    from _pytest._io import TerminalWriter  # pylint: disable=import-outside-toplevel

    buf = io.StringIO()
    writer = TerminalWriter(file=buf)
    writer.hasmarkup = bool(os.environ.get("TESTMON_RUN_COLOR"))
    writer.fullwidth = reporter._tw.fullwidth  # pylint: disable=protected-access
    # pylint: disable=protected-access
    saved = (reporter._tw, reporter.stats, reporter.currentfspath)
    reporter._tw, reporter.stats, reporter.currentfspath = writer, stats, None
    try:
        method()
    except Exception:  # pylint: disable=broad-except
        return None
    finally:
        reporter._tw, reporter.stats, reporter.currentfspath = saved
    return buf.getvalue()


def short_summary_lines(config, report, category):
    """The report's lines in pytest's "short test summary info" (by its -r characters),
    produced by pytest's own code: the reporter's summary run over this one report."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    char = REPORT_CHARS.get(category)
    if reporter is None or char is None or char not in (reporter.reportchars or ""):
        return None
    text = run_reporter(reporter, {category: [report]}, reporter.short_test_summary)
    lines = (text or "").splitlines()
    return [line for line in lines[1:] if line]  # after the "short test summary info" sep


def make_worker_db(worker, tm):
    """testmon's own DB class, opened read-only on the main datafile, writing to a spool."""
    from testmon import db as tm_db  # pylint: disable=import-outside-toplevel

    class WorkerDB(tm_db.DB):
        def __init__(self):
            # testmon deletes a datafile of another data version: never in a worker.
            if tm_db.DATA_VERSION != tm["data_version"]:
                raise pytest.UsageError(
                    f"testmon-run: worker sees testmon data version {tm_db.DATA_VERSION}, "
                    f"the supervisor prepared {tm['data_version']}"
                )
            super().__init__(tm["datafile"], readonly=True)

        def initiate_execution(self, *_args, **_kwargs):
            return {
                "exec_id": tm["exec_id"],
                "filenames": self.all_filenames(),
                "packages_changed": tm["packages_changed"],
            }

        def insert_test_file_fps(self, tests_deps_n_outcomes, exec_id=None):
            worker.channel.owner_only()
            worker.open_spool(tm).insert_test_file_fps(tests_deps_n_outcomes, exec_id)

        def write_attribute(self, *_args, **_kwargs):
            pass  # the supervisor is the only writer

        def finish_execution(self, *_args, **_kwargs):
            pass  # done once by the supervisor, after the merge

    return WorkerDB()


def report_data(config, report):
    """One phase's report for ``msg_result``, with pytest's own classification and texts."""
    category, letter, word = config.hook.pytest_report_teststatus(report=report, config=config)
    if isinstance(word, tuple):
        word = word[0]
    data = {
        "when": report.when,
        "outcome": report.outcome,
        "category": category,
        "letter": letter,
        "word": word,
        "duration": report.duration,
        "head_line": report.head_line or report.nodeid,
    }
    if report.failed:
        data["text"] = render(config, report)
        data["message"] = crash_message(report)
        data["summary_line"] = summary_line(config, report)
    elif report.skipped and isinstance(report.longrepr, tuple):
        data["message"] = str(report.longrepr[2])
    if hasattr(report, "wasxfail"):
        data["wasxfail"] = report.wasxfail
    short = short_summary_lines(config, report, category)
    if short:
        data["short"] = short
    return data


def render(config, report):
    """A failed report as pytest's terminal prints it in FAILURES/ERRORS."""
    from _pytest._io import TerminalWriter  # pylint: disable=import-outside-toplevel

    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if getattr(config.option, "tbstyle", None) == "line" and reporter is not None:
        try:
            return reporter._getcrashline(report) + "\n"  # pylint: disable=protected-access
        except Exception:  # pylint: disable=broad-except
            pass
    buf = io.StringIO()
    writer = TerminalWriter(file=buf)
    writer.hasmarkup = bool(os.environ.get("TESTMON_RUN_COLOR"))
    report.toterminal(writer)
    showcapture = getattr(config.option, "showcapture", "all")
    if showcapture != "no":
        for secname, content in report.sections:
            if showcapture != "all" and showcapture not in secname:
                continue
            writer.sep("-", secname)
            if content[-1:] == "\n":
                content = content[:-1]
            writer.line(content)
    return buf.getvalue()


def summary_line(config, report):
    """The report's line in pytest's "short test summary info", as pytest writes it."""
    try:
        from _pytest._io import TerminalWriter  # pylint: disable=import-outside-toplevel
        from _pytest.terminal import (  # pylint: disable=import-outside-toplevel
            _get_line_with_reprcrash_message,
        )

        writer = TerminalWriter(file=io.StringIO())
        writer.hasmarkup = bool(os.environ.get("TESTMON_RUN_COLOR"))
        return _get_line_with_reprcrash_message(config, report, writer, {"red": True})
    except Exception:  # pylint: disable=broad-except
        return None


def crash_message(report):
    reprcrash = getattr(report.longrepr, "reprcrash", None)
    if reprcrash is not None:
        return str(reprcrash.message)
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    return str(report.longrepr).strip().splitlines()[-1] if report.longrepr else ""


def scope_of(nodeid):
    """The class or module a test belongs to (the supervisor's --dist loadscope unit)."""
    base = nodeid.split("[", 1)[0]
    return base.rsplit("::", 1)[0] if "::" in base else base


def fixture_layout(items):
    """What the tests' fixtures above function scope mean for the supervisor's units, from
    pytest's fixture closure of each item (``_fixtureinfo``, stable since pytest 3), in one
    pass over the items:

    - whole files: where a module- or package-scoped fixture is used by tests of more than
      one class-or-module scope (a module's plain functions and its classes): run as one
      unit, its setup lands on the test it lands on in one process;
    - bound scopes (class or module) and files: with a test that uses a class-, module- or
      package-scoped fixture; their units are never split (the setup would land on another
      test than in one process). Without ``_fixtureinfo``, every test's."""
    users = {}
    bound = set()
    for item in items:
        scope, path = scope_of(item.nodeid), item.nodeid.split("::", 1)[0]
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            bound.update((scope, path))
            continue
        for name in info.names_closure:
            definitions = info.name2fixturedefs.get(name)
            fixture_scope = definitions[-1].scope if definitions else "function"
            if fixture_scope in ("class", "module", "package"):
                bound.update((scope, path))
            if fixture_scope in ("module", "package"):
                users.setdefault((path, name), set()).add(scope)
    whole = {path for (path, _), scopes in users.items() if len(scopes) > 1}
    return sorted(whole), sorted(bound)


def drop_own_plugin_argument(argv):
    """The ``-p _testmon_run_worker`` testmon-run appends to the command is not the user's:
    the test process's ``sys.argv`` is what the user typed (a module calling
    ``unittest.main()`` at import reads it). pytest parsed its own copy before it imported
    this plugin."""
    if argv[-2:] == ["-p", __name__]:
        del argv[-2:]


if "TESTMON_RUN_FD" in os.environ:
    drop_own_plugin_argument(sys.argv)
    _WORKER = Worker()

    def pytest_addhooks(pluginmanager):
        pluginmanager.register(_WORKER, "testmon_run_worker")
        pluginmanager.register(CacheAsOneProcess(), "testmon_run_cache")

    # xdist's worker_id and testrun_uid fixtures, for a project without xdist installed
    # (with it, xdist's own read the same values from config.workerinput).
    @pytest.fixture(scope="session")
    def worker_id():
        return os.environ["PYTEST_XDIST_WORKER"]

    @pytest.fixture(scope="session")
    def testrun_uid():
        return os.environ["PYTEST_XDIST_TESTRUNUID"]
