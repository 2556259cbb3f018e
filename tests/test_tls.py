"""TLS URLs: the options read from one URL, what each client library receives, clear errors, and
real connections through a TLS-terminating proxy in front of the plain-text servers."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from support import unavailable
from tls_support import Certificates, TlsProxy, make_certificates

from taskbridge import ConfigurationError, Envelope, configure, get_engine, load_settings, tls
from taskbridge.coordination.redis import RedisCoordination
from taskbridge.errors import CoordinationError
from taskbridge.testing import Combination, Harness, jobs, unavailable_reason

PEM = str(Path(__file__))  # any existing file will do where nothing reads it


# reading the URL


def test_a_bare_tls_url_verifies_the_server_and_its_host_name() -> None:
    url, options = tls.split("rediss://:secret@cache.example.com:6380/2")
    assert url == "rediss://:secret@cache.example.com:6380/2"
    assert options == tls.TlsOptions(verify="required", check_hostname=True)


def test_tls_parameters_are_read_and_taken_out_of_the_url() -> None:
    url, options = tls.split(
        f"amqps://u:p@mq.example.com:5671/vh?heartbeat=30&ssl_cert_reqs=CERT_OPTIONAL&ssl_ca_certs={PEM}"
        f"&ssl_certfile={PEM}&ssl_keyfile={PEM}&ssl_check_hostname=false"
    )
    assert url == "amqps://u:p@mq.example.com:5671/vh?heartbeat=30"
    assert options == tls.TlsOptions(verify="optional", ca_file=PEM, cert_file=PEM, key_file=PEM, check_hostname=False)


def test_no_verification_also_means_no_host_name_check() -> None:
    _, options = tls.split("rediss://h?ssl_cert_reqs=none")
    assert options is not None and options.verify_mode == ssl.CERT_NONE and not options.check_hostname


def test_a_plain_url_has_no_tls_options() -> None:
    assert tls.split("redis://h:6379/0?socket_timeout=5") == ("redis://h:6379/0?socket_timeout=5", None)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("rediss://h?ssl_cert_reqs=maybe", r"ssl_cert_reqs='maybe' is not one of required, optional, none"),
        ("rediss://h?ssl_check_hostname=perhaps", r"ssl_check_hostname='perhaps' must be true or false"),
        ("rediss://h?ssl_ca_certs=/no/such/ca.pem", r"ssl_ca_certs file '/no/such/ca.pem' does not exist"),
        (f"amqps://h?ssl_keyfile={PEM}", r"ssl_keyfile needs ssl_certfile"),
        ("amqps://h?ssl_ca_cert=x", r"unknown TLS parameter ssl_ca_cert; use ssl_cert_reqs, ssl_ca_certs"),
        ("redis://h?ssl_cert_reqs=required", r"the URL is redis://; use rediss:// to connect over TLS"),
        ("amqp://h?ssl_cert_reqs=required", r"the URL is amqp://; use amqps:// to connect over TLS"),
        ("sqs://?ssl_ca_certs=x", r"SQS uses HTTPS: set TASKBRIDGE_SQS_ENDPOINT_URL=https://... and AWS_CA_BUNDLE"),
    ],
)
def test_a_bad_tls_option_is_refused_with_the_setting_and_the_parameter(
    url: str, message: str, clean_env: None
) -> None:
    with pytest.raises(ConfigurationError, match=message) as refused:
        load_settings(engine="celery", broker_url=url)
    assert "broker_url (TASKBRIDGE_BROKER_URL)" in str(refused.value)


def test_a_bad_tls_option_of_the_coordination_store_is_refused(clean_env: None) -> None:
    with pytest.raises(ConfigurationError, match=r"coordination_url \(TASKBRIDGE_COORDINATION_URL\).*ssl_cert_reqs"):
        load_settings(coordination_url="rediss://h?ssl_cert_reqs=maybe")


# what each library receives


FULL = f"?ssl_ca_certs={PEM}&ssl_certfile={PEM}&ssl_keyfile={PEM}"
REDIS_TLS = {
    "ssl_cert_reqs": "required",
    "ssl_check_hostname": True,
    "ssl_ca_certs": PEM,
    "ssl_certfile": PEM,
    "ssl_keyfile": PEM,
}


def test_the_coordination_store_hands_redis_py_the_tls_options() -> None:
    store = RedisCoordination(f"rediss://cache.example.com:6380/1{FULL}")
    pool = store._client.connection_pool
    assert pool.connection_class is redis.SSLConnection
    assert {k: pool.connection_kwargs[k] for k in REDIS_TLS} == REDIS_TLS
    assert pool.connection_kwargs["host"] == "cache.example.com" and pool.connection_kwargs["db"] == 1


def test_celery_on_redis_gets_the_tls_options_as_kombus_ssl(clean_env: None) -> None:
    from taskbridge_celery.app import build_app
    from taskbridge_celery.broker import REDIS_TRANSPORT, broker_for
    from taskbridge_celery.settings import CelerySettings

    settings = load_settings(engine="celery", broker_url=f"rediss://cache.example.com:6380/0{FULL}")
    broker = broker_for(settings, CelerySettings())
    assert broker.url == "rediss://cache.example.com:6380/0"
    assert broker.ssl == REDIS_TLS
    connection = build_app(settings, broker).connection_for_write()
    # The guarded Redis transport (taskbridge_celery.guarded_redis) takes its TLS from ``ssl``.
    assert connection.transport_cls == REDIS_TRANSPORT and connection.ssl == REDIS_TLS


def test_celery_on_a_bare_rediss_url_still_verifies_the_server(clean_env: None) -> None:
    from taskbridge_celery.app import build_app
    from taskbridge_celery.broker import broker_for
    from taskbridge_celery.settings import CelerySettings

    settings = load_settings(engine="celery", broker_url="rediss://cache.example.com:6380/0")
    connection = build_app(settings, broker_for(settings, CelerySettings())).connection_for_write()
    # kombu alone turns a rediss:// URL without options into ssl_cert_reqs=CERT_NONE.
    assert connection.ssl == {"ssl_cert_reqs": "required", "ssl_check_hostname": True}


def test_celery_on_rabbitmq_gets_the_tls_options_as_py_amqps_ssl(clean_env: None) -> None:
    from taskbridge_celery.app import build_app
    from taskbridge_celery.broker import broker_for
    from taskbridge_celery.settings import CelerySettings

    settings = load_settings(engine="celery", broker_url=f"amqps://u:p@mq.example.com:5671//{FULL}")
    broker = broker_for(settings, CelerySettings())
    expected = {
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": "mq.example.com",
        "ca_certs": PEM,
        "certfile": PEM,
        "keyfile": PEM,
    }
    assert broker.url == "amqps://u:p@mq.example.com:5671//" and broker.ssl == expected
    connection = build_app(settings, broker).connection_for_write()
    assert connection.transport_cls == "amqps" and connection.ssl == expected


def test_celery_without_host_name_checks_sends_no_server_hostname(clean_env: None) -> None:
    from taskbridge_celery.broker import broker_for
    from taskbridge_celery.settings import CelerySettings

    settings = load_settings(engine="celery", broker_url="amqps://mq.example.com//?ssl_cert_reqs=none")
    assert broker_for(settings, CelerySettings()).ssl == {"cert_reqs": ssl.CERT_NONE}


def _dramatiq_broker(url: str) -> Any:
    from taskbridge_dramatiq.brokers import build_broker
    from taskbridge_dramatiq.settings import DramatiqSettings

    return build_broker(
        load_settings(engine="dramatiq", broker_url=url), DramatiqSettings(), worker=False, middleware=[]
    )


def test_dramatiq_on_redis_gets_the_tls_options_in_its_connection_pool(clean_env: None) -> None:
    broker = _dramatiq_broker(f"rediss://cache.example.com:6380/3{FULL}")
    pool = broker.client.connection_pool
    assert pool.connection_class is redis.SSLConnection
    assert {k: pool.connection_kwargs[k] for k in REDIS_TLS} == REDIS_TLS
    assert pool.connection_kwargs["db"] == 3


def test_dramatiq_on_rabbitmq_gets_an_ssl_context_and_the_host_name(
    clean_env: None, certificates: Certificates
) -> None:
    url = (
        f"amqps://u:p@mq.example.com/vh?ssl_ca_certs={certificates.ca}"
        f"&ssl_certfile={certificates.client_cert}&ssl_keyfile={certificates.client_key}"
    )
    parameters = _dramatiq_broker(url).parameters
    assert parameters.host == "mq.example.com" and parameters.port == 5671 and parameters.virtual_host == "vh"
    options = parameters.ssl_options
    assert options.server_hostname == "mq.example.com"
    assert options.context.verify_mode == ssl.CERT_REQUIRED and options.context.check_hostname
    assert [cert["subject"] for cert in options.context.get_ca_certs()] == [((("commonName", "taskbridge test ca"),),)]


def test_sqs_over_https_reaches_both_engines(clean_env: None) -> None:
    from taskbridge_celery.broker import broker_for
    from taskbridge_celery.settings import CelerySettings
    from taskbridge_dramatiq.brokers import _boto_options

    settings = load_settings(
        engine="celery", broker_url="sqs://KEY:SECRET@", sqs_endpoint_url="https://sqs.eu-west-1.amazonaws.com"
    )
    broker = broker_for(settings, CelerySettings())
    assert broker.url == "sqs://KEY:SECRET@sqs.eu-west-1.amazonaws.com" and broker.transport_options["is_secure"]
    assert _boto_options(settings)["endpoint_url"] == "https://sqs.eu-west-1.amazonaws.com"


# real connections through a TLS proxy


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    try:
        return make_certificates(tmp_path_factory.mktemp("tls"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def _proxy(certificates: Certificates, target: tuple[str, int], require_client_cert: bool = True) -> TlsProxy:
    reason = unavailable_reason(Combination("memory", f"redis://{target[0]}:{target[1]}"))
    if reason:
        unavailable(reason)
    return TlsProxy(certificates, target, require_client_cert=require_client_cert)


@pytest.fixture
def redis_tls(certificates: Certificates) -> Iterator[TlsProxy]:
    proxy = _proxy(certificates, ("127.0.0.1", 6379))
    yield proxy
    proxy.close()


@pytest.fixture
def rabbitmq_tls(certificates: Certificates) -> Iterator[TlsProxy]:
    proxy = _proxy(certificates, ("127.0.0.1", 5672))
    yield proxy
    proxy.close()


def _mutual(certificates: Certificates) -> str:
    return (
        f"ssl_ca_certs={certificates.ca}&ssl_certfile={certificates.client_cert}&ssl_keyfile={certificates.client_key}"
    )


def test_the_coordination_store_works_over_tls_with_a_client_certificate(
    redis_tls: TlsProxy, certificates: Certificates
) -> None:
    url = f"rediss://127.0.0.1:{redis_tls.port}/1?{_mutual(certificates)}"
    store = RedisCoordination(url, f"tls{uuid.uuid4().hex}")
    key = f"unique:tls:{uuid.uuid4().hex}"
    assert store.claim_unique(key, 10)
    assert not store.claim_unique(key, 10)
    store.release_unique(key)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "certificate verify failed"),
        ("ssl_ca_certs={other_ca}", "certificate verify failed"),
        ("ssl_ca_certs={ca}", ""),
    ],
    ids=["system-cas", "another-ca", "no-client-certificate"],
)
def test_the_coordination_store_refuses_a_server_it_cannot_verify_or_that_refuses_it(
    query: str, message: str, redis_tls: TlsProxy, certificates: Certificates
) -> None:
    query = query.format(ca=certificates.ca, other_ca=certificates.other_ca)
    store = RedisCoordination(f"rediss://127.0.0.1:{redis_tls.port}/1?{query}")
    expected = f"coordination store rediss://127.0.0.1:{redis_tls.port}/1.* is unreachable.*{message}"
    with pytest.raises(CoordinationError, match=expected):
        store.claim_unique(f"unique:tls:{uuid.uuid4().hex}", 10)


def test_a_tls_url_never_falls_back_to_plain_text(redis_url: str) -> None:
    # The plain-text server reads the TLS hello as the start of a command and waits for the rest.
    store = RedisCoordination("rediss://127.0.0.1:6379/1?ssl_cert_reqs=none&socket_timeout=2")
    with pytest.raises(CoordinationError, match="is unreachable"):
        store.claim_unique(f"unique:tls:{uuid.uuid4().hex}", 10)


@pytest.mark.parametrize(
    ("engine", "scheme"), [("celery", "rediss"), ("celery", "amqps"), ("dramatiq", "rediss"), ("dramatiq", "amqps")]
)
def test_each_engine_publishes_and_counts_over_tls(
    engine: str,
    scheme: str,
    redis_tls: TlsProxy,
    rabbitmq_tls: TlsProxy,
    certificates: Certificates,
    clean_env: None,
) -> None:
    proxy = redis_tls if scheme == "rediss" else rabbitmq_tls
    path = "/0" if scheme == "rediss" else "/"
    auth = "" if scheme == "rediss" else "guest:guest@"
    queue = f"tls{uuid.uuid4().hex[:10]}"
    configure(
        engine=engine,
        broker_url=f"{scheme}://{auth}127.0.0.1:{proxy.port}{path}?{_mutual(certificates)}",
        namespace=queue,
    )
    try:
        get_engine().publish([Envelope(job="tls.check", queue=queue)], 0)
        assert get_engine().depth(queue) == 1
        assert get_engine().purge(queue) == 1
    finally:
        get_engine().close()
        configure()
    assert not proxy.handshake_errors


@pytest.mark.parametrize("engine", ["celery", "dramatiq"])
def test_a_worker_runs_jobs_over_tls(
    engine: str, redis_tls: TlsProxy, rabbitmq_tls: TlsProxy, certificates: Certificates, tmp_path: Path
) -> None:
    broker = (
        f"rediss://127.0.0.1:{redis_tls.port}/0?{_mutual(certificates)}"
        if engine == "celery"
        else f"amqps://guest:guest@127.0.0.1:{rabbitmq_tls.port}//?{_mutual(certificates)}"
    )
    coordination = f"rediss://127.0.0.1:{redis_tls.port}/1?{_mutual(certificates)}"
    combination = Combination(engine, broker, coordination)
    if reason := unavailable_reason(combination):
        unavailable(reason)
    harness = Harness(combination, tmp_path)
    try:
        harness.start_workers()
        jobs.echo.enqueue("over tls")
        [ran] = harness.wait_for(lambda: harness.events("ran", "echo"), 60, "the job never ran over TLS")
        assert ran["args"] == ["over tls"], "the proxies speak only TLS: the worker's broker and store used it"
    finally:
        harness.close()


@pytest.mark.parametrize("scheme", ["rediss", "amqps"])
def test_the_start_up_check_reaches_the_broker_over_tls_and_names_a_certificate_it_cannot_verify(
    scheme: str, redis_tls: TlsProxy, rabbitmq_tls: TlsProxy, certificates: Certificates, clean_env: None
) -> None:
    from taskbridge.preflight import ServerUnavailable, check_broker

    port, rest = (redis_tls.port, "/0") if scheme == "rediss" else (rabbitmq_tls.port, "//")
    auth = "guest:guest@" if scheme == "amqps" else ""
    good = f"{scheme}://{auth}127.0.0.1:{port}{rest}?{_mutual(certificates)}"
    check_broker(load_settings(engine="celery", broker_url=good))
    untrusted = good.replace(str(certificates.ca), str(certificates.other_ca))
    with pytest.raises(ServerUnavailable, match="certificate verify failed"):
        check_broker(load_settings(engine="celery", broker_url=untrusted))
