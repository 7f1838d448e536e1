"""Project-wide pytest fixtures and the rules for tests that need real servers (see README, "Tests").

Tests marked ``@pytest.mark.integration`` need a real PostgreSQL, Redis or RabbitMQ server.

* Without ``LOOP_INTEGRATION=1`` they are deselected, and the terminal summary says how many and how to run them.
* With ``LOOP_INTEGRATION=1`` (CI's second pass, ``.ci/run``) they run, and they can only pass or fail: a server
  that cannot be reached fails the test with a message naming the server and its URL, and a skip of an integration
  test (``pytest.skip``, ``skipif``, ``importorskip``) is reported as a failure.

Server URLs come from the environment through the fixtures below (``redis_url``, ``rabbitmq_url``); a test that
needs PostgreSQL itself asks for the ``postgresql`` fixture (the database is the one ``DATABASE_URL`` names).
"""

from __future__ import annotations

import os

import pytest

INTEGRATION_ENV = "LOOP_INTEGRATION"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
#: Seconds to wait for a server to answer before the test fails.
CONNECT_TIMEOUT = 3.0

deselected_key = pytest.StashKey[int]()
integration_selected_key = pytest.StashKey[int]()
#: The Playwright page of a browser test (set by ``browser_page``), and the files saved for failed browser tests.
browser_page_key = pytest.StashKey[object]()
browser_failures_key = pytest.StashKey[list]()


def integration_enabled() -> bool:
    return os.environ.get(INTEGRATION_ENV, "") == "1"


def pytest_configure(config: pytest.Config) -> None:
    value = os.environ.get(INTEGRATION_ENV, "")
    if value not in ("", "0", "1"):
        raise pytest.UsageError(f"{INTEGRATION_ENV} must be 1 (run integration tests) or unset; got {value!r}")


def is_integration(item: pytest.Item) -> bool:
    return item.get_closest_marker("integration") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    integration = [item for item in items if is_integration(item)]
    if integration_enabled():
        config.stash[integration_selected_key] = len(integration)
        return
    if integration:
        config.hook.pytest_deselected(items=integration)
        items[:] = [item for item in items if not is_integration(item)]
    config.stash[deselected_key] = len(integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Under LOOP_INTEGRATION=1 an integration test must run: turn any skip of one into a failure. A failed browser
    test leaves its page's screenshot and HTML (``browser_failure_save``)."""
    report = yield
    if report.skipped and integration_enabled() and is_integration(item) and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (
            f"integration test skipped under {INTEGRATION_ENV}=1, which is not allowed (it must pass or fail): {reason}"
        )
    browser_failure_save(item, report)
    return report


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    deselected = config.stash.get(deselected_key, 0)
    if deselected:
        terminalreporter.write_line(
            f"{deselected} integration test(s) deselected: they need PostgreSQL, Redis and RabbitMQ. Run them with"
            f" `{INTEGRATION_ENV}=1 DATABASE_URL=postgres://postgres@127.0.0.1:5432/loop .venv/bin/pytest -m"
            " integration`, or all of CI with `bash .ci/run`.",
            yellow=True,
        )
    saved = config.stash.get(browser_failures_key, [])
    if saved:
        terminalreporter.section("browser failures: the page of each failed browser test", yellow=True)
        for path in saved:
            terminalreporter.write_line(str(path))
    if integration_enabled():
        # .ci/run checks this line: the second pass must have run integration tests, not silently none. Under xdist
        # the collection happens in the workers: the count is then taken from the reports they sent back.
        reported = {
            report.nodeid
            for reports in terminalreporter.stats.values()
            for report in reports
            if getattr(report, "when", None) == "setup" and "integration" in getattr(report, "keywords", {})
        }
        selected = max(config.stash.get(integration_selected_key, 0), len(reported))
        terminalreporter.write_line(
            f"{INTEGRATION_ENV}=1: {selected} integration test(s) selected; a skip of any of them counts as a failure."
        )


def redacted(url: str) -> str:
    from config.logging import redact_value

    return redact_value(url)


def require_integration_marker(request: pytest.FixtureRequest, fixture: str) -> None:
    if not is_integration(request.node):
        message = f"the `{fixture}` fixture needs a real server: mark the test @pytest.mark.integration"
        pytest.fail(message, pytrace=False)


def server_unreachable(server: str, url: str, env_name: str, exc: BaseException):
    pytest.fail(
        f"{server} is not reachable at {redacted(url)} ({type(exc).__name__}: {redacted(str(exc))}). "
        f"Integration tests need it: start it (`bash .ci/run` starts PostgreSQL, Redis and RabbitMQ) or point "
        f"{env_name} at one.",
        pytrace=False,
    )


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """URL of a real Redis (LOOP_TEST_REDIS_URL, default db 15); fails the test when it does not answer PING."""
    require_integration_marker(request, "redis_url")
    url = os.environ.get("LOOP_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    import redis

    error = None
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=CONNECT_TIMEOUT)
        client.ping()
        client.close()
    except (redis.RedisError, OSError) as exc:
        error = exc
    if error is not None:  # failed outside the except block: the message, not a chain of driver tracebacks
        server_unreachable("Redis", url, "LOOP_TEST_REDIS_URL", error)
    return url


@pytest.fixture
def rabbitmq_url(request: pytest.FixtureRequest) -> str:
    """URL of a real RabbitMQ (LOOP_TEST_RABBITMQ_URL); fails the test when an AMQP connection cannot be opened."""
    require_integration_marker(request, "rabbitmq_url")
    url = os.environ.get("LOOP_TEST_RABBITMQ_URL", DEFAULT_RABBITMQ_URL)
    from kombu import Connection

    error = None
    try:
        with Connection(url, connect_timeout=CONNECT_TIMEOUT) as conn:
            conn.ensure_connection(max_retries=0, timeout=CONNECT_TIMEOUT)
    except Exception as exc:  # kombu re-raises socket and AMQP errors as its own
        error = exc
    if error is not None:
        server_unreachable("RabbitMQ", url, "LOOP_TEST_RABBITMQ_URL", error)
    return url


@pytest.fixture
def postgresql(request: pytest.FixtureRequest) -> None:
    """For tests that need PostgreSQL itself: fails (never skips) when DATABASE_URL names another database."""
    require_integration_marker(request, "postgresql")
    from django.db import connection

    # The backend's vendor is known without opening a connection.
    if connection.vendor != "postgresql":
        pytest.fail(
            f"this test needs PostgreSQL, but the database is {connection.vendor}: set "
            "DATABASE_URL=postgres://postgres@127.0.0.1:5432/loop (as `bash .ci/run` does)",
            pytrace=False,
        )


@pytest.fixture(autouse=True, scope="session")
def _test_process_settings():
    """Per test process: a fast password hasher (the admin tests log in hundreds of times) and a private in-memory
    cache, so parallel test processes never share throttling counters. The real shared caches (file, Redis) are
    exercised by the tests that ask for them explicitly."""
    from django.test import override_settings

    with override_settings(
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": f"tests-{os.getpid()}"}
        },
    ):
        yield


# --- Real-browser tests ------------------------------------------------------------------------------------------
# Tests marked ``@pytest.mark.browser`` drive Debian's headless Chromium (``/usr/bin/chromium``; `make test` installs
# it) through Playwright against pytest-django's live server. They always run, in every pass: a missing browser
# fails them with a message, never skips them. ``LOOP_SCREENSHOTS=1`` writes their screenshots into
# docs/screenshots/ for the guides; otherwise into $LOOP_VAR_DIR/screenshots/.

CHROMIUM_PATH = os.environ.get("LOOP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium per test process."""
    if not os.path.exists(CHROMIUM_PATH):
        pytest.fail(
            f"browser tests need Chromium at {CHROMIUM_PATH}: `make test` installs Debian's `chromium` package, or "
            "set LOOP_CHROMIUM to another Chromium binary",
            pytrace=False,
        )
    # Playwright's sync API runs an event loop in this thread; Django refuses ORM calls from a thread with a running
    # loop unless told the calls are synchronous (they are: the test code and the live server are plain threads).
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(request, chromium, live_server):
    """A fresh page (1280×800, Korean) in its own browser context; ``page.goto(path)`` is relative to the live
    server."""
    context = chromium.new_context(
        base_url=live_server.url, viewport={"width": 1280, "height": 800}, locale="ko-KR", timezone_id="Asia/Seoul"
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    request.node.stash[browser_page_key] = page  # for browser_failure_save, should the test fail
    yield page
    context.close()


@pytest.fixture
def admin_page(browser_page, django_user_model):
    """``browser_page`` logged in to the admin as a superuser (``admin`` / ``admin-password``)."""
    django_user_model.objects.create_superuser("admin", "admin@example.com", "admin-password")
    page = browser_page
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin-password")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
    return page


@pytest.fixture
def screenshot():
    """``screenshot(page, "segments-builder")`` saves a PNG for the guides (see LOOP_SCREENSHOTS above)."""
    from pathlib import Path

    from django.conf import settings

    if os.environ.get("LOOP_SCREENSHOTS") == "1":
        folder = Path(settings.BASE_DIR) / "docs" / "screenshots"
    else:
        folder = Path(settings.VAR_DIR) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)

    def take(page, name: str, **kwargs) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), **kwargs)
        return path

    return take


def browser_failure_name(nodeid: str) -> str:
    """A file name for a test id: ``crm/tests/test_x.py::test_y[a b]`` → ``crm-tests-test_x.py--test_y-a_b-``."""
    import re

    name = nodeid.replace("/", "-").replace("::", "--")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name.replace("[", "-").replace("]", "-"))[:200]


def browser_failure_save(item: pytest.Item, report: pytest.TestReport) -> list:
    """When a browser test fails (in its setup, e.g. the login, or its body), save what its page showed: a
    full-page screenshot and the HTML, as ``$LOOP_VAR_DIR/browser-failures/<test>.png`` and ``.html`` (CI keeps the
    folder as output). Their paths are added to the failure's report and listed at the end of the run. Returns the
    paths saved (none for a passing, non-browser or page-less test)."""
    from pathlib import Path

    if not report.failed or report.when not in ("setup", "call") or item.get_closest_marker("browser") is None:
        return []
    page = item.stash.get(browser_page_key, None)
    if page is None or page.is_closed():
        return []
    from django.conf import settings

    folder = Path(settings.VAR_DIR) / "browser-failures"
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / browser_failure_name(item.nodeid)
    saved, problems = [], []
    png, html = base.with_name(base.name + ".png"), base.with_name(base.name + ".html")
    try:
        page.screenshot(path=str(png), full_page=True, timeout=10_000)
        saved.append(png)
    except Exception as exc:  # a crashed page must not hide the test's own failure
        problems.append(f"screenshot not saved: {type(exc).__name__}: {exc}")
    try:
        html.write_text(f"<!-- {page.url} -->\n{page.content()}", encoding="utf-8")
        saved.append(html)
    except Exception as exc:
        problems.append(f"HTML not saved: {type(exc).__name__}: {exc}")
    lines = [f"page: {page.url}", *(f"saved: {path}" for path in saved), *problems]
    report.sections.append(("browser failure", "\n".join(lines)))
    item.config.stash.setdefault(browser_failures_key, []).extend(saved)
    return saved
