"""Settings from the environment, taskbridge.toml and pyproject.toml, validated with clear errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskbridge import ConfigurationError, configure, get_engine
from taskbridge.config import get_settings, load_settings, mask_url, set_settings
from taskbridge.coordination import MemoryCoordination, get_coordination, set_coordination
from taskbridge.engine import set_engine
from taskbridge.errors import UnknownEngineError
from taskbridge.memory import MemoryEngine


@pytest.fixture(autouse=True)
def empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None) -> Iterator[Path]:
    """A working directory with no configuration files and no TASKBRIDGE_* variables."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()  # the project root: files above it are not read
    yield tmp_path
    set_engine(None)
    set_coordination(None)
    set_settings(None)


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def test_no_configuration_means_the_embedded_engine(empty_dir: Path) -> None:
    set_settings(None)
    settings = get_settings()
    assert (settings.engine, settings.broker_url, settings.coordination_url) == ("memory", "memory://", None)
    assert settings.effective_coordination_url == "memory://"
    assert (settings.default_timeout, settings.default_expires) == (300.0, 86400.0)
    set_engine(None)
    assert isinstance(get_engine(), MemoryEngine)
    set_coordination(None)
    assert isinstance(get_coordination(), MemoryCoordination)


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKBRIDGE_BROKER_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("TASKBRIDGE_DEFAULT_TIMEOUT", "45s")
    monkeypatch.setenv("TASKBRIDGE_DEFAULT_EXPIRES", "none")
    monkeypatch.setenv("TASKBRIDGE_WORKER_CONCURRENCY", "8")
    monkeypatch.setenv("TASKBRIDGE_MAX_NATIVE_DELAY", "15m")
    settings = load_settings()
    assert settings.broker_url == "redis://127.0.0.1:6379/3"
    assert settings.effective_coordination_url == "redis://127.0.0.1:6379/3", "a Redis broker doubles as the store"
    assert (settings.default_timeout, settings.default_expires) == (45.0, None)
    assert (settings.worker_concurrency, settings.max_native_delay) == (8, 900.0)


def test_taskbridge_toml(empty_dir: Path) -> None:
    write(empty_dir / "taskbridge.toml", 'default_queue = "jobs"\ndefault_timeout = "2m"\nlock_retry = 0.5\n')
    settings = load_settings()
    assert (settings.default_queue, settings.default_timeout, settings.lock_retry) == ("jobs", 120.0, 0.5)


def test_tool_taskbridge_in_pyproject(empty_dir: Path) -> None:
    write(
        empty_dir / "pyproject.toml",
        '[project]\nname = "app"\n\n[tool.taskbridge]\ndefault_queue = "from-pyproject"\nnamespace = "app"\n',
    )
    settings = load_settings()
    assert (settings.default_queue, settings.namespace) == ("from-pyproject", "app")


def test_precedence_env_over_taskbridge_toml_over_pyproject(empty_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        empty_dir / "pyproject.toml",
        '[tool.taskbridge]\ndefault_queue = "pyproject"\nnamespace = "pyproject"\nprefetch = 3\n',
    )
    write(empty_dir / "taskbridge.toml", 'default_queue = "toml"\nnamespace = "toml"\n')
    monkeypatch.setenv("TASKBRIDGE_DEFAULT_QUEUE", "env")
    settings = load_settings()
    assert (settings.default_queue, settings.namespace, settings.prefetch) == ("env", "toml", 3)
    assert load_settings(default_queue="code").default_queue == "code", "settings given in code win over all"


def test_configure_sets_settings_in_code_and_rebuilds_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKBRIDGE_DEFAULT_QUEUE", "env")
    set_engine(None)
    first = get_engine()
    configure(default_queue="code", broker_url="memory://?autostart=0")
    assert get_settings().default_queue == "code"
    second = get_engine()
    assert second is not first and isinstance(second, MemoryEngine) and not second.autostart


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("TASKBRIDGE_DEFAULT_TIMEOUT", "soon", r"default_timeout \(TASKBRIDGE_DEFAULT_TIMEOUT\):.*cannot read 'soon'"),
        ("TASKBRIDGE_DEFAULT_EXPIRES", "0", r"default_expires \(TASKBRIDGE_DEFAULT_EXPIRES\):.*greater than zero"),
        ("TASKBRIDGE_MAX_NATIVE_DELAY", "0s", r"max_native_delay \(TASKBRIDGE_MAX_NATIVE_DELAY\):.*greater than zero"),
        ("TASKBRIDGE_LOCK_RETRY", "none", r"lock_retry \(TASKBRIDGE_LOCK_RETRY\):.*must be a duration"),
        ("TASKBRIDGE_WORKER_CONCURRENCY", "many", r"worker_concurrency \(TASKBRIDGE_WORKER_CONCURRENCY\):"),
        ("TASKBRIDGE_WORKER_CONCURRENCY", "0", r"worker_concurrency \(TASKBRIDGE_WORKER_CONCURRENCY\):.*equal to 1"),
        ("TASKBRIDGE_BROKER_URL", "kafka://x", r"broker_url \(TASKBRIDGE_BROKER_URL\):.*unsupported scheme 'kafka'"),
        ("TASKBRIDGE_COORDINATION_URL", "amqp://x", r"coordination_url \(TASKBRIDGE_COORDINATION_URL\):.*redis://"),
        ("TASKBRIDGE_ENQUEUE_BATCH_SIZE", "0", r"enqueue_batch_size \(TASKBRIDGE_ENQUEUE_BATCH_SIZE\)"),
        ("TASKBRIDGE_DEAD_LETTER_SUFFIX", ".dead/", r"dead_letter_suffix \(TASKBRIDGE_DEAD_LETTER_SUFFIX\)"),
    ],
)
def test_a_bad_value_names_the_setting_and_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=r"invalid taskbridge settings:\n  " + message):
        load_settings()


def test_a_bad_value_in_a_file_is_reported_too(empty_dir: Path) -> None:
    write(empty_dir / "taskbridge.toml", 'default_timeout = "a while"\n')
    expected = r"default_timeout \(TASKBRIDGE_DEFAULT_TIMEOUT, from .*taskbridge.toml\)"
    with pytest.raises(ConfigurationError, match=expected):
        load_settings()


def test_a_misspelt_setting_in_a_file_is_a_warning_naming_the_closest_setting(
    empty_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(empty_dir / "taskbridge.toml", 'default_timout = "30s"\n')
    settings = load_settings()
    assert settings.default_timeout == 300.0
    assert "unknown setting 'default_timout'" in caplog.text
    assert "did you mean 'default_timeout'?" in caplog.text


def test_a_misspelt_variable_is_a_warning_naming_the_closest_variable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TASKBRIDGE_ENGNE", "celery")
    monkeypatch.setenv("TASKBRIDGE_CONTRACT_COMBINATIONS", "all")
    monkeypatch.setenv("TASKBRIDGE_CELERY_LOGLEVEL", "INFO")
    assert load_settings().engine == "memory"
    assert "unknown environment variable TASKBRIDGE_ENGNE; did you mean TASKBRIDGE_ENGINE?" in caplog.text
    assert "CONTRACT" not in caplog.text and "CELERY" not in caplog.text, "variables read elsewhere are known"


@pytest.mark.parametrize("strict_by", ["env", "file"])
def test_strict_makes_unknown_names_an_error(empty_dir: Path, monkeypatch: pytest.MonkeyPatch, strict_by: str) -> None:
    monkeypatch.setenv("TASKBRIDGE_ENGNE", "celery")
    if strict_by == "env":
        monkeypatch.setenv("TASKBRIDGE_STRICT", "1")
        write(empty_dir / "taskbridge.toml", 'namespce = "app"\n')
    else:
        write(empty_dir / "taskbridge.toml", 'strict = true\nnamespce = "app"\n')
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "TASKBRIDGE_ENGNE; did you mean TASKBRIDGE_ENGINE?" in str(caught.value)
    assert "'namespce'" in str(caught.value) and "did you mean 'namespace'?" in str(caught.value)


def test_taskbridge_toml_is_found_from_a_subfolder_up_to_the_project_root(empty_dir: Path) -> None:
    root = empty_dir / "project"
    (root / "src" / "app").mkdir(parents=True)
    (root / ".git").mkdir()
    write(root / "taskbridge.toml", 'engine = "celery"\nbroker_url = "redis://127.0.0.1:6379/0"\n')
    write(empty_dir / "taskbridge.toml", 'namespace = "outside-the-project"\n')
    os.chdir(root / "src" / "app")
    settings = load_settings()
    assert (settings.engine, settings.namespace) == ("celery", "taskbridge")
    assert settings.config_files == [str(root / "taskbridge.toml")]
    assert settings.origin("engine") == str(root / "taskbridge.toml")
    assert settings.origin("namespace") == "default"


def test_pyproject_marks_the_project_root(empty_dir: Path) -> None:
    root = empty_dir / "project"
    (root / "pkg").mkdir(parents=True)
    write(root / "pyproject.toml", '[tool.taskbridge]\ndefault_queue = "root"\n')
    write(root / "pkg" / "pyproject.toml", '[project]\nname = "pkg"\n')
    os.chdir(root / "pkg")
    assert load_settings().default_queue == "default", "the nearest pyproject.toml is the root"
    os.chdir(root)
    settings = load_settings()
    assert settings.default_queue == "root"
    assert settings.config_files == [f"{root / 'pyproject.toml'} [tool.taskbridge]"]


def test_taskbridge_config_names_the_file(empty_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(empty_dir / "taskbridge.toml", 'default_queue = "here"\n')
    elsewhere = empty_dir / "conf" / "prod.toml"
    elsewhere.parent.mkdir()
    write(elsewhere, 'default_queue = "prod"\n')
    monkeypatch.setenv("TASKBRIDGE_CONFIG", str(elsewhere))
    settings = load_settings()
    assert settings.default_queue == "prod"
    assert settings.origin("default_queue") == str(elsewhere)
    monkeypatch.setenv("TASKBRIDGE_CONFIG", str(empty_dir / "missing.toml"))
    with pytest.raises(ConfigurationError, match=r"TASKBRIDGE_CONFIG=.*missing.toml: no such file"):
        load_settings()


def test_origins_name_the_variable_and_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKBRIDGE_BROKER_URL", "redis://127.0.0.1:6379/3")
    settings = load_settings(namespace="app")
    assert settings.origin("broker_url") == "env TASKBRIDGE_BROKER_URL"
    assert settings.origin("namespace") == "code"


def test_every_problem_is_listed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKBRIDGE_DEFAULT_TIMEOUT", "soon")
    monkeypatch.setenv("TASKBRIDGE_PREFETCH", "-1")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "TASKBRIDGE_DEFAULT_TIMEOUT" in str(caught.value) and "TASKBRIDGE_PREFETCH" in str(caught.value)


def test_an_engine_other_than_memory_needs_a_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKBRIDGE_ENGINE", "celery")
    with pytest.raises(ConfigurationError, match=r"engine 'celery' needs a broker: set TASKBRIDGE_BROKER_URL"):
        load_settings()


def test_an_unknown_engine_lists_the_registered_ones() -> None:
    set_settings(load_settings(engine="nosuch", broker_url="redis://127.0.0.1:6379/0"))
    set_engine(None)
    with pytest.raises(UnknownEngineError, match=r"no engine named 'nosuch' \(TASKBRIDGE_ENGINE\); .*memory"):
        get_engine()


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:***@127.0.0.1:5672//"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://user:p%40ss@cache/1", "redis://user:***@cache/1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://user@127.0.0.1/0", "redis://user@127.0.0.1/0"),
        ("memory://", "memory://"),
    ],
)
def test_mask_url_hides_passwords(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_engine_variables_are_checked_with_the_settings(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TASKBRIDGE_CELERY_LOGLEVL", "DEBUG")
    monkeypatch.setenv("TASKBRIDGE_DRAMATIQ_SHUTDOWN_TIMOUT", "5")
    assert load_settings().celery.loglevel == "INFO"
    assert "TASKBRIDGE_CELERY_LOGLEVL; did you mean TASKBRIDGE_CELERY_LOGLEVEL?" in caplog.text
    with pytest.raises(ConfigurationError, match=r"did you mean TASKBRIDGE_DRAMATIQ_SHUTDOWN_TIMEOUT\?"):
        load_settings(strict=True)


def test_engine_sections_in_the_files_and_the_environment(empty_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(empty_dir / "pyproject.toml", '[tool.taskbridge.celery]\nloglevel = "WARNING"\nhostname = "file"\n')
    write(empty_dir / "taskbridge.toml", "[dramatiq]\nworker_timeout_ms = 250\n")
    monkeypatch.setenv("TASKBRIDGE_CELERY_HOSTNAME", "env@host")
    settings = load_settings()
    assert (settings.celery.loglevel, settings.celery.hostname) == ("WARNING", "env@host")
    assert settings.dramatiq.worker_timeout_ms == 250
    assert settings.origin("celery.hostname") == "env TASKBRIDGE_CELERY_HOSTNAME"
    assert settings.origin("celery.loglevel").endswith("pyproject.toml [tool.taskbridge]")
    assert settings.origin("dramatiq.worker_timeout_ms").endswith("taskbridge.toml")


def test_a_bad_value_in_an_engine_section_names_the_setting_variable_and_file(empty_dir: Path) -> None:
    write(empty_dir / "taskbridge.toml", "[celery]\nsqs_wait_time_seconds = 60\n")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid taskbridge settings:"
    assert lines[1].startswith("  celery.sqs_wait_time_seconds (TASKBRIDGE_CELERY_SQS_WAIT_TIME_SECONDS, from ")
    assert lines[1].endswith("taskbridge.toml): Input should be less than or equal to 20")


def test_an_unknown_key_in_an_engine_section_is_reported_like_a_top_level_one(
    empty_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(empty_dir / "pyproject.toml", "[tool.taskbridge.dramatiq]\nshutdown_timout = 5\n")
    assert load_settings().dramatiq.shutdown_timeout == 600.0
    assert "unknown setting 'dramatiq.shutdown_timout'" in caplog.text
    assert "did you mean 'dramatiq.shutdown_timeout'?" in caplog.text
    with pytest.raises(ConfigurationError, match=r"did you mean 'dramatiq.shutdown_timeout'\?"):
        load_settings(strict=True)


def test_a_removed_working_directory_means_no_files(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    os.chdir(gone)
    gone.rmdir()
    assert load_settings().config_files == []
