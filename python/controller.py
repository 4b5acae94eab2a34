"""testmon-run controller plugin: the controller side of pytest-xdist's contract.

Embedded in the testmon-run binary and loaded with ``-p`` into one more run of the user's
own command, started beside the workers. It is, for the user's plugins, what xdist's
controller process is: their ``pytest_configure_node`` fills each worker's ``workerinput``,
every test's report reaches ``pytest_runtest_logreport`` (pytest's own serialization), a
failed collection ``pytest_collectreport``, a worker's end ``pytest_testnodedown`` (with its
``workeroutput``), and ``pytest_sessionfinish`` / ``pytest_terminal_summary`` run at the
end. It collects and runs nothing; testmon is off here (the supervisor is the database's
only writer) and so are the parts testmon-run does itself (JUnit, pytest's cache keys it
merges).

What plugins print after the run (the coverage table, "Generated html report") is sent to
the supervisor, which shows it where pytest would; so is the session's exit status (a
``--cov-fail-under`` makes it 1).

Messages: JSON lines on the socket ``TESTMON_RUN_FD``. From the supervisor:
  configure {worker, generation, input}   pytest_configure_node; answered by "workerinput"
  ready {worker, ids}                     pytest_testnodeready, testscollected,
                                          pytest_xdist_node_collection_finished
  reports {worker, reports}               pytest_runtest_logreport, for each
  collectreport {worker, report}          pytest_collectreport (failed collections)
  crashed {worker, nodeid}                pytest_runtest_logreport: the test a worker died under
  down {worker, output, error}            pytest_testnodedown
  finish {interrupted}                    the loop ends (as after Ctrl-C when interrupted);
                                          pytest's session end follows
To the supervisor:
  hello {protocol}, workerinput {worker, generation, input},
  done {exitstatus, text}                 at pytest_unconfigure
"""

import base64
import json
import os
import platform
import socket
import sys
import types

import pytest

PROTOCOL = 1

# pytest cache keys testmon-run writes once for the whole run itself.
MERGED_CACHE_KEYS = ("cache/lastfailed", "cache/stepwise", "cache/nodeids")


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


class Channel:
    """JSON lines over the socket the supervisor handed us: the one sender and reader."""

    def __init__(self, fd):
        os.set_inheritable(fd, False)
        self.sock = socket.socket(fileno=fd)
        self.rfile = self.sock.makefile("rb")

    def send(self, msg):
        data = json.dumps(msg, ensure_ascii=False, default=str) + "\n"
        try:
            self.sock.sendall(data.encode("utf-8", "surrogateescape"))
        except OSError:
            pass  # the supervisor is gone; the session ends with the next recv

    def recv(self):
        """The next message, or None once the supervisor closed its end."""
        try:
            line = self.rfile.readline()
        except OSError:
            return None
        if not line:
            return None
        return json.loads(line.decode("utf-8", "surrogateescape"))


class Node:
    """What xdist's WorkerController offers the hooks that get a ``node``."""

    def __init__(self, config, name, workerinput):
        self.config = config
        self.workerinput = workerinput
        # workeroutput: only once the worker has finished its session, as with xdist
        # (plugins test for it with hasattr).
        self.shutting_down = False
        info = types.SimpleNamespace(
            executable=sys.executable,
            version_info=tuple(sys.version_info),
            platform=sys.platform,
            cwd=os.getcwd(),
        )
        self.gateway = types.SimpleNamespace(
            id=name,
            spec=types.SimpleNamespace(id=name, popen=True, chdir=None, python=sys.executable),
            _rinfo=lambda: info,
        )
        self.nodemanager = types.SimpleNamespace(roots=[], specs=[])
        # What xdist's worker reports as it starts (remote.py getinfodict): the workers run
        # this same command, with this interpreter.
        self.workerinfo = {
            "version": sys.version,
            "version_info": tuple(sys.version_info),
            "sysplatform": sys.platform,
            "platform": platform.platform(),
            "executable": sys.executable,
            "cwd": os.getcwd(),
            "id": name,
            "spec": self.gateway.spec,
        }

    def __repr__(self):
        return f"<WorkerController {self.gateway.id}>"


class Output:
    """The parts of this process's stdout (a file the supervisor reads) that plugins wrote
    where pytest's own terminal output would not be shown twice."""

    def __init__(self):
        self.parts = []
        self.start = None

    @staticmethod
    def position():
        sys.stdout.flush()
        try:
            return os.lseek(1, 0, os.SEEK_CUR)
        except OSError:
            return None

    def begin(self, terminal):
        if terminal is not None:
            terminal.flush()
        self.start = self.position()

    def end(self, terminal):
        if terminal is not None:
            terminal.flush()
        start, self.start = self.start, None
        stop = self.position()
        if start is not None and stop is not None and stop > start:
            self.parts.append((start, stop))

    def text(self):
        path = os.environ.get("TESTMON_RUN_CONTROLLER_OUT")
        if not path or not self.parts:
            return ""
        with open(path, "rb") as out:
            chunks = []
            for start, stop in self.parts:
                out.seek(start)
                chunks.append(out.read(stop - start))
        return b"".join(chunks).decode("utf-8", "replace")


class Controller:
    def __init__(self):
        self.channel = Channel(int(os.environ["TESTMON_RUN_FD"]))
        self.count = int(os.environ["TESTMON_RUN_WORKERS"])
        self.config = None
        self.session = None
        self.nodes = {}
        self.collect_errors = set()
        self.output = Output()
        self.exitstatus = None
        self.channel.send({"t": "hello", "protocol": PROTOCOL})

    # -- configuration: as xdist's controller, without xdist's own session ---------------

    @pytest.hookimpl(wrapper=True)
    def pytest_load_initial_conftests(self, early_config):
        # pytest-cov chooses its xdist-controller engine from these, this early.
        namespace = early_config.known_args_namespace
        namespace.numprocesses = self.count
        if getattr(namespace, "dist", "no") == "no":
            namespace.dist = "load"
        return (yield)

    @pytest.hookimpl(tryfirst=True)
    def pytest_cmdline_main(self, config):
        self.config = config
        option = config.option
        option.numprocesses = self.count
        if getattr(option, "dist", "no") == "no":
            option.dist = "load"
        option.tx = ["popen"] * self.count
        # xdist's own controller would start workers of its own; testmon would open the
        # database; JUnit is merged by testmon-run from the workers' files.
        config.pluginmanager.set_blocked("dsession")
        config.pluginmanager.set_blocked("terminaldistreporter")
        config.pluginmanager.set_blocked("pytest-testmon")
        option.xmlpath = None
        # --durations and the progress column: testmon-run prints them itself (pytest shows
        # no progress column without capture).
        option.durations = None
        option.capture = "no"
        self.divert_cache(config)

    @staticmethod
    def divert_cache(config):
        cache = getattr(config, "cache", None)
        if cache is None:
            return
        original = cache.set

        def set_value(key, value):
            if key not in MERGED_CACHE_KEYS:
                original(key, value)

        cache.set = set_value

    # -- the session: no collection, the supervisor's events as the test loop ------------

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session):
        """The plugins' lines of pytest's header (pytest's own and testmon's are shown by
        testmon-run): as pytest's terminal reporter gathers them."""
        pluginmanager = self.config.pluginmanager
        own = [
            plugin
            for plugin in pluginmanager.get_plugins()
            if (getattr(plugin, "__module__", None) or getattr(plugin, "__name__", "") or "")
            .startswith("_pytest.")
            or type(plugin).__module__.startswith("_pytest.")
        ]
        hook = pluginmanager.subset_hook_caller("pytest_report_header", remove_plugins=own)
        lines = []
        for line_or_lines in reversed(hook(config=self.config, start_path=session.startpath)):
            if isinstance(line_or_lines, str):
                lines.append(line_or_lines)
            else:
                lines.extend(line_or_lines)
        if lines:
            self.channel.send({"t": "header", "lines": lines})

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session):  # pylint: disable=unused-argument
        return True

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        self.session = session
        self.loop(session)
        self.output.begin(self.terminal())
        return True

    def terminal(self):
        return self.config.pluginmanager.get_plugin("terminalreporter")

    def loop(self, session):  # pylint: disable=unused-argument
        handlers = {
            "configure": self.on_configure,
            "ready": self.on_ready,
            "reports": self.on_reports,
            "collectreport": self.on_collectreport,
            "down": self.on_down,
            "crashed": self.on_crashed,
        }
        while True:
            msg = self.channel.recv()
            if msg is None:
                break
            if msg["t"] == "finish":
                if msg.get("interrupted"):
                    # The run was interrupted: the session ends as xdist's controller's
                    # does after Ctrl-C (exit status 2), its plugins' reports written.
                    raise KeyboardInterrupt
                break
            handlers[msg["t"]](msg)

    def call(self, name, **kwargs):
        """Calls one of xdist's hooks when any plugin implements it (without xdist
        installed, its hook specifications are not there)."""
        hook = getattr(self.config.hook, name, None)
        if hook is not None:
            hook(**kwargs)

    def node(self, name):
        return self.nodes.get(name) or Node(self.config, name, {})

    def on_configure(self, msg):
        name = msg["worker"]
        node = Node(self.config, name, from_json(msg["input"]))
        self.nodes[name] = node
        self.call("pytest_configure_node", node=node)
        self.channel.send(
            {
                "t": "workerinput",
                "worker": name,
                "generation": msg["generation"],
                "input": to_json(node.workerinput),
            }
        )

    def on_ready(self, msg):
        """A worker has collected: xdist's controller hears it is ready, then its
        collection (the tests it will run, after testmon's selection)."""
        node = self.node(msg["worker"])
        ids = msg.get("ids") or []
        self.call("pytest_testnodeready", node=node)
        self.session.testscollected = len(ids)
        self.call("pytest_xdist_node_collection_finished", node=node, ids=ids)

    def on_reports(self, msg):
        hook = self.config.hook
        node = self.node(msg["worker"])
        for data in msg["reports"]:
            report = hook.pytest_report_from_serializable(config=self.config, data=data)
            report.node = node
            hook.pytest_runtest_logreport(report=report)

    def on_collectreport(self, msg):
        hook = self.config.hook
        report = hook.pytest_report_from_serializable(config=self.config, data=msg["report"])
        if report.nodeid in self.collect_errors:
            return
        self.collect_errors.add(report.nodeid)
        report.node = self.node(msg["worker"])
        hook.pytest_collectreport(report=report)

    def on_crashed(self, msg):
        """The test a worker died under: a failed report, as xdist's controller makes it."""
        node = self.node(msg["worker"])
        nodeid = msg["nodeid"]
        fspath = nodeid.split("::")[0]
        text = f"worker {node.gateway.id!r} crashed while running {nodeid!r}"
        report = pytest.TestReport(nodeid, (fspath, None, fspath), {}, "failed", text, "???")
        report.node = node
        self.config.hook.pytest_runtest_logreport(report=report)

    def on_down(self, msg):
        node = self.node(msg["worker"])
        if msg.get("output") is not None:
            node.workeroutput = from_json(msg["output"])
        self.call("pytest_testnodedown", node=node, error=msg.get("error"))

    # -- the end ----------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_terminal_summary(self, terminalreporter):
        # Inside pytest's own terminal summary (failures, warnings before; the short
        # summary after), which testmon-run prints itself: only the plugins' part is kept.
        self.output.begin(terminalreporter)
        try:
            return (yield)
        finally:
            self.output.end(terminalreporter)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        self.exitstatus = int(exitstatus)

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config):  # pylint: disable=unused-argument
        status = self.exitstatus
        self.channel.send({"t": "done", "exitstatus": status, "text": self.output.text()})


class AfterLoop:
    """Outermost around the test loop: what plugins print after it (pytest-cov's
    fail-under error) is kept, as the controller's loop marked where that begins."""

    def __init__(self, controller):
        self.controller = controller

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtestloop(self, session):  # pylint: disable=unused-argument
        try:
            return (yield)
        finally:
            self.controller.output.end(self.controller.terminal())


def drop_own_plugin_argument(argv):
    if argv[-2:] == ["-p", __name__]:
        del argv[-2:]


if "TESTMON_RUN_CONTROLLER" in os.environ:
    drop_own_plugin_argument(sys.argv)
    _CONTROLLER = Controller()

    def pytest_addhooks(pluginmanager):
        pluginmanager.register(_CONTROLLER, "testmon_run_controller")
        pluginmanager.register(AfterLoop(_CONTROLLER), "testmon_run_controller_after_loop")
