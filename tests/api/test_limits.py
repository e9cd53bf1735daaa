"""Rate limits: a token bucket per key and a throttle on wrong keys per client address, on a real server."""

import threading
import time

import httpx
import pytest

from api.limits import Limits, LimitSettings, RateLimited, TokenBucket
from tests.api.conftest import make_server

RATE, BURST, FAILURES, WINDOW = 2.0, 5, 20, 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_gives_the_burst_then_one_token_per_interval():
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("k") == pytest.approx(0.5)
    clock.now += 0.25
    assert bucket.take("k") == pytest.approx(0.25)  # a refused take spends nothing
    clock.now += 0.25
    assert bucket.take("k") == 0.0 and bucket.take("k") > 0
    assert bucket.take("other") == 0.0
    clock.now += 100
    assert [bucket.take("k") for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # refilled to the burst, not beyond


def test_threads_racing_for_one_bucket_get_exactly_the_burst():
    bucket = TokenBucket(rate=1e-9, burst=100, clock=Clock())
    start = threading.Barrier(16)
    granted = [0] * 16

    def take_many(i: int) -> None:
        start.wait()
        granted[i] = sum(bucket.take("shared") == 0.0 for _ in range(50))

    threads = [threading.Thread(target=take_many, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 100


def test_bucket_forgets_least_recently_used_names_beyond_its_cap():
    bucket = TokenBucket(rate=1.0, burst=1, max_names=2, clock=Clock())
    bucket.take("a"), bucket.take("b"), bucket.take("a"), bucket.take("c")
    assert bucket.wait("a") > 0 and bucket.wait("c") > 0 and bucket.wait("b") == 0.0  # b was dropped: full again


def test_an_address_is_refused_after_its_failures_until_the_window_refills():
    clock = Clock()
    limits = Limits(LimitSettings(auth_failures=20, auth_failure_window=60.0), clock=clock)
    for _ in range(20):
        limits.check_address("10.0.0.9")
        limits.failed("10.0.0.9")
    with pytest.raises(RateLimited) as refused:
        limits.check_address("10.0.0.9")
    assert refused.value.retry_after == pytest.approx(3.0) and refused.value.retry_after_header == "3"
    limits.check_address("10.0.0.10")  # another address is not affected
    clock.now += 3.0
    limits.check_address("10.0.0.9")


def test_rate_zero_means_no_limit():
    limits = Limits(LimitSettings(rate_per_second=0))
    for _ in range(1000):
        limits.take("K1")


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory, embedder, cache, cache_path):
    env = {"JIANGXIN_RATE_PER_SECOND": str(RATE), "JIANGXIN_RATE_BURST": str(BURST),
           "JIANGXIN_AUTH_FAILURES": str(FAILURES), "JIANGXIN_AUTH_FAILURE_WINDOW": str(WINDOW)}
    proc, srv = make_server(tmp_path_factory, embedder, cache, cache_path, "limits-server", env_extra=env)
    yield srv
    proc.terminate()
    proc.wait(timeout=30)


def client_from(srv, address: str, key: str | None = None) -> httpx.Client:
    """A client whose connections come from ``address`` (any 127.0.0.0/8 address reaches the loopback server)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=srv.url, headers=headers, timeout=30,
                        transport=httpx.HTTPTransport(local_address=address))


def test_a_burst_over_the_key_limit_gets_429_with_retry_after_and_other_keys_are_unaffected(limited_server):
    srv = limited_server
    with client_from(srv, "127.0.0.4", srv.keys["ent_a"]) as a:
        started = time.monotonic()
        codes = [a.get("/v1/questions", params={"limit": 1}) for _ in range(3 * BURST)]
        elapsed = time.monotonic() - started
        refused = [r for r in codes if r.status_code == 429]
        served = [r for r in codes if r.status_code == 200]
        assert len(served) + len(refused) == len(codes)
        assert BURST <= len(served) <= BURST + int(elapsed * RATE) + 1
        assert refused and all(r.json()["error"]["code"] == "rate_limited" for r in refused)
        retry = int(refused[-1].headers["Retry-After"])
        assert 1 <= retry <= 1 / RATE + 1
        with client_from(srv, "127.0.0.4", srv.keys["ent_b"]) as b:
            assert b.get("/v1/questions", params={"limit": 1}).status_code == 200
        time.sleep(retry)  # the behaviour under test is the clock: Retry-After must be honest
        assert a.get("/v1/questions", params={"limit": 1}).status_code == 200


def test_a_thousand_wrong_keys_from_one_address_are_throttled(limited_server):
    srv = limited_server
    codes: list[int] = []
    with client_from(srv, "127.0.0.3") as c:
        started = time.monotonic()
        for i in range(1000):
            r = c.get("/v1/questions", headers={"Authorization": f"Bearer jx_wrong-{i}"})
            codes.append(r.status_code)
            if r.status_code == 429:
                assert int(r.headers["Retry-After"]) >= 1 and r.json()["error"]["code"] == "rate_limited"
        elapsed = time.monotonic() - started
        first_refusal = codes.index(429)
        print(f"\n1,000 wrong keys in {elapsed:.2f} s: {codes.count(401)} × 401 ({first_refusal} before the first 429), "
              f"{codes.count(429)} × 429")
        assert set(codes) == {401, 429}
        assert FAILURES <= codes.count(401) <= FAILURES + int(elapsed * FAILURES / WINDOW) + 1
        assert FAILURES <= first_refusal <= codes.count(401)  # the window refills one failure every WINDOW/FAILURES s
        # while throttled the address learns nothing about any key, a valid one included
        assert c.get("/v1/questions", headers={"Authorization": f"Bearer {srv.keys['maintainer']}"}).status_code == 429
    with client_from(srv, "127.0.0.2", srv.keys["maintainer"]) as other:
        assert other.get("/v1/questions").status_code == 200


def test_a_missing_key_is_not_counted_as_a_guess(limited_server):
    with client_from(limited_server, "127.0.0.5") as c:
        assert {c.get("/v1/questions").status_code for _ in range(FAILURES + 5)} == {401}
