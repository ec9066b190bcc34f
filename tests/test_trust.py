"""Trust, round 3 (issue 28), the pieces that need no server: read retries, the credential inventory,
output paths another stage owns, stale test logits, reconciliation's matching."""

from __future__ import annotations

import pytest
import requests

from kit.leaderboard import client


def _http_error(status: int, retry_after: str | None = None) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return requests.HTTPError(f"HTTP {status}", response=response)


class _Calls:
    """A read call that fails with the given exceptions in turn, then answers 'ok'."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.count = 0

    def __call__(self):
        self.count += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


@pytest.mark.parametrize("failures, pauses", [
    ([_http_error(503)] * 3, [0.5, 1.0, 2.0]),  # the backoff pauses
    ([_http_error(429, "7")], [7.0]),  # the server's Retry-After
    ([_http_error(429, "3600")], [client.RETRY_AFTER_CAP]),  # ... capped
    ([_http_error(503, "soon"), _http_error(502, "-4")], [0.5, 0.0]),  # unreadable: the backoff; negative: none
    ([requests.ConnectionError(), requests.Timeout()], [0.5, 1.0]),  # a dropped connection, a timeout
])
def test_read_calls_retry_what_a_later_try_may_fix_with_the_same_pauses(failures, pauses):
    slept, said = [], []
    call = _Calls(*failures)
    assert client._read_call(call, client.Deadline(), sleep=slept.append, say=said.append, action="list") == "ok"
    assert slept == pauses and call.count == len(pauses) + 1
    assert len(said) == len(pauses) and all("trying again in" in s and "while trying to list" in s for s in said)


@pytest.mark.parametrize("failure", [_http_error(404), _http_error(400), _http_error(401), ValueError("garbled")])
def test_read_calls_do_not_retry_a_definite_answer(failure):
    slept = []
    call = _Calls(failure)
    with pytest.raises(type(failure)):
        client._read_call(call, None, sleep=slept.append)
    assert call.count == 1 and slept == []


def test_read_calls_give_up_after_four_tries_and_never_sleep_past_the_deadline():
    slept = []
    call = _Calls(*[_http_error(503)] * 10)
    with pytest.raises(requests.HTTPError):
        client._read_call(call, None, sleep=slept.append)
    assert call.count == 4 and slept == [0.5, 1.0, 2.0]
    now = [0.0]
    deadline = client.Deadline(5.0, clock=lambda: now[0])
    call = _Calls(_http_error(429, "20"), _http_error(503))
    with pytest.raises(requests.HTTPError):  # 20 s of Retry-After do not fit in the 5 s left: no pause, the error
        client._read_call(call, deadline, sleep=slept.append)
    assert call.count == 1 and slept == [0.5, 1.0, 2.0]
