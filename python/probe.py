"""testmon-run probe plugin.

Embedded in the testmon-run binary and loaded with ``-p`` into one run of the user's own
command. Once pytest has parsed the command line and the ini files, it writes what the
supervisor needs to know as one JSON object to ``TESTMON_RUN_PROBE_OUT`` and ends the
session, before testmon (or anything else) has touched the database.

Everything testmon-specific is computed by the installed testmon's own functions.
"""

import json
import os
import sys

import pytest

PROTOCOL = 3


def stamp(path):
    """[size, mtime_ns] of a path as seen now, or None when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


HERE = os.path.dirname(os.path.abspath(__file__))


def prefixes():
    return {os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}


def cache_stamps():
    """What the supervisor checks before reusing this answer (see src/probe/cache.rs): the
    interpreter and sys.path's directories inside its prefixes or named *-packages (a package
    installed, removed or upgraded changes its directory). Taken before testmon reads the
    packages."""
    here = HERE
    prefixes_ = prefixes()
    stamps = {}
    executable = os.path.realpath(sys.executable)
    stamps[executable] = stamp(executable)
    for entry in sys.path:
        path = os.path.abspath(entry or os.getcwd())
        if path == here:
            continue
        real = os.path.realpath(path) + os.sep
        if any(real.startswith(p) for p in prefixes_) or "-packages" in path:
            stamps[path] = stamp(path)
    return stamps


def distributions(stamps):
    """The distributions in sys.path's other directories (the project's own, PYTHONPATH's):
    their names, as testmon finds installed packages there (a directory's time moves with
    every file the project creates in it)."""
    found = {}
    for entry in sys.path:
        path = os.path.abspath(entry or os.getcwd())
        if path in stamps or path == HERE or not os.path.isdir(path):
            continue
        found[path] = dist_names(path)
    return found


def dist_names(path):
    try:
        names = os.listdir(path)
    except OSError:
        return []
    return sorted(n for n in names if n.endswith((".dist-info", ".egg-info", ".egg-link")))


def plugin_stamps(config, stamps):
    """Adds the files of the plugins pytest loaded from outside the interpreter's prefixes:
    conftest.py files, the project's own plugins."""
    prefixes_ = prefixes()
    for plugin in config.pluginmanager.get_plugins():
        filename = getattr(plugin, "__file__", None)
        if not filename:
            continue
        filename = os.path.realpath(filename)
        if os.path.dirname(filename) == HERE or any(filename.startswith(p) for p in prefixes_):
            continue
        stamps[filename] = stamp(filename)


def file_args(config):
    """Files named on the command line (or in testpaths): pytest collects them even where
    testmon would skip their file, so a no-op run's "deselected" count depends on them."""
    base = str(config.invocation_params.dir)
    return any(
        os.path.isfile(os.path.join(base, str(arg).split("::", 1)[0]))
        for arg in getattr(config, "args", ())
    )


def cacheable(config):
    """False when the answer may depend on more than the stamps and the command line: a
    testmon environment computed from an ini expression (which may read os.environ)."""
    try:
        return not config.getini("environment_expression")
    except ValueError:
        return True


def testmon_facts(config):
    """What the installed testmon would use for this run, or None when it is not loaded."""
    loaded = any(
        getattr(plugin, "__name__", None) == "testmon.pytest_testmon"
        for plugin in config.pluginmanager.get_plugins()
    )
    if not loaded:
        return None
    # pylint: disable=import-outside-toplevel
    from testmon import TESTMON_VERSION
    from testmon import configure as tm_configure
    from testmon import db as tm_db
    from testmon.common import drop_patch_version, get_system_packages
    from testmon.process_code import checksums_to_blob, methods_to_checksums
    from testmon.testmon_core import TEST_BATCH_SIZE, eval_environment, get_data_file_path

    tm_conf = tm_configure.header_collect_select(
        config, None, cov_plugin=config.pluginmanager.get_plugin("_cov")
    )
    environment = config.getoption("environment_expression") or eval_environment(
        config.getini("environment_expression")
    )
    system_packages = drop_patch_version(
        get_system_packages(ignore=config.getini("testmon_ignore_dependencies"))
    )
    rootdir = str(config.rootpath)
    return {
        "version": TESTMON_VERSION,
        "data_version": tm_db.DATA_VERSION,
        "select": bool(tm_conf.select),
        "collect": bool(tm_conf.collect),
        "tmnet": bool(getattr(tm_conf, "tmnet", False)),
        "message": tm_conf.message,
        "environment": environment if environment else "default",
        "system_packages": system_packages,
        "python_version": (
            f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
        ),
        "datafile": os.path.abspath(os.path.join(rootdir, get_data_file_path())),
        "batch_size": TEST_BATCH_SIZE,
        "placeholder_checksums": bytes(
            checksums_to_blob(methods_to_checksums(["0match"]))
        ).hex(),
    }


def streams_output(config):
    """-s (capture=no) or live logging: the workers' output is shown as it comes."""
    if getattr(config.option, "capture", "fd") == "no":
        return True
    try:
        return config.getoption("log_cli_level") is not None or bool(config.getini("log_cli"))
    except ValueError:
        return False


def junit_path(option):
    """Where pytest would write --junitxml (resolved as its LogXML does)."""
    path = getattr(option, "xmlpath", None)
    if not path:
        return None
    return os.path.normpath(os.path.abspath(os.path.expanduser(os.path.expandvars(path))))


def report_chars(config):
    try:
        from _pytest.terminal import getreportopt  # pylint: disable=import-outside-toplevel

        return getreportopt(config)
    except Exception:  # pylint: disable=broad-except
        return "fE"


# Hooks xdist runs in its controller process, for the user's plugins.
CONTROLLER_HOOKS = (
    "pytest_configure_node",
    "pytest_testnodeready",
    "pytest_testnodedown",
    "pytest_xdist_node_collection_finished",
    "pytest_runtest_logreport",
    "pytest_collectreport",
    "pytest_runtestloop",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
)
# Plugins testmon-run plays the controller part of itself.
OWN_DISTRIBUTIONS = ("pytest-testmon", "pytest-xdist")


def plugin_module(plugin):
    name = getattr(plugin, "__name__", None)
    return name if isinstance(name, str) else type(plugin).__module__


def plugin_distributions(config):
    """The installed plugins (distributions with a pytest11 entry point) pytest loaded, but
    testmon and xdist: the zygote is used only when each is one it is tested with
    (src/run/zygote.rs FORK_SAFE)."""
    found = set()
    for _plugin, dist in config.pluginmanager.list_plugin_distinfo():
        name = getattr(dist, "project_name", None) or dist.metadata["name"]
        if name.lower().replace("_", "-") not in OWN_DISTRIBUTIONS:
            found.add(name)
    return sorted(found)


def controller_side(config):
    """The plugins that may do something in xdist's controller process, which testmon-run
    then starts (python/controller.py): every installed plugin but testmon and xdist
    (one registers its controller part only as it configures: pytest-html), and the
    project's own plugins (conftest.py, -p) that implement a controller-side hook."""
    pluginmanager = config.pluginmanager
    found = set(plugin_distributions(config))
    from_distributions = {id(plugin) for plugin, _dist in pluginmanager.list_plugin_distinfo()}
    for plugin in pluginmanager.get_plugins():
        module = plugin_module(plugin) or ""
        if id(plugin) in from_distributions or module.startswith(
            ("_pytest.", "pytest", "_testmon_run", "testmon.", "xdist.")
        ):
            continue
        if any(hasattr(plugin, hook) for hook in CONTROLLER_HOOKS):
            found.add(pluginmanager.get_name(plugin) or module)
    return sorted(found)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    option = config.option
    stamps = cache_stamps()
    dists = distributions(stamps)
    plugin_stamps(config, stamps)
    facts = {
        "stamps": stamps,
        "dists": dists,
        "cacheable": cacheable(config),
        "file_args": file_args(config),
        "protocol": PROTOCOL,
        "pytest_version": pytest.__version__,
        "rootdir": str(config.rootpath),
        "inipath": str(config.inipath) if config.inipath else None,
        "xdist": config.pluginmanager.hasplugin("xdist"),
        "controller_side": controller_side(config),
        "plugin_distributions": plugin_distributions(config),
        "passthrough": bool(
            getattr(option, "help", False)
            or getattr(option, "version", False)
            or getattr(option, "collectonly", False)
            or getattr(option, "markers", False)
            or getattr(option, "showfixtures", False)
            or getattr(option, "show_fixtures_per_test", False)
        ),
        "maxfail": int(getattr(option, "maxfail", 0) or 0),
        "verbose": int(getattr(option, "verbose", 0) or 0),
        "color": str(getattr(option, "color", "auto")),
        "testmon": testmon_facts(config),
        "stream": streams_output(config),
        "junitxml": junit_path(option),
        "junit_prefix": getattr(option, "junitprefix", None),
        "reportchars": report_chars(config),
        "tbstyle": str(getattr(option, "tbstyle", "auto")),
        "durations": getattr(option, "durations", None),
        "durations_min": getattr(option, "durations_min", None),
        "stepwise": bool(getattr(option, "stepwise", False)),
        "stepwise_skip": bool(getattr(option, "stepwise_skip", False)),
    }
    out = os.environ["TESTMON_RUN_PROBE_OUT"]
    tmp = out + ".tmp"
    # Readable by its owner only, as every file in the run directory.
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as out_file:
        json.dump(facts, out_file)
    os.replace(tmp, out)
    return 0
