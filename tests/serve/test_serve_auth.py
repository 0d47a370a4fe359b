"""API keys of `mmrun serve`: ``--api-key`` / ``MM_API_KEYS``, 401 in OpenAI's format, and the
refusal to listen beyond loopback without a key."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from serve_support import API_KEYS, Server

from mm_serve.auth import bearer_token, key_matches, load_api_keys
from mm_serve.cli import check_exposure

MODEL = "char_chat-tiny"
HELLO = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}


# -- in-process ----------------------------------------------------------------------------------
def test_keys_come_from_options_a_key_file_or_the_variable(tmp_path: Path):
    key_file = tmp_path / "keys.txt"
    key_file.write_text("# team keys\nsk-a\n\nsk-b, sk-c  # the ci key\n")
    assert load_api_keys(["sk-x"], env=str(key_file)) == ("sk-x", "sk-a", "sk-b", "sk-c")
    assert load_api_keys([], env="sk-1, sk-2,") == ("sk-1", "sk-2")
    assert load_api_keys(["sk-1"], env="") == ("sk-1",)
    from mm_core.errors import ConfigError

    with pytest.raises(ConfigError, match="no such file"):
        load_api_keys([], env=str(tmp_path / "missing.txt"))
    with pytest.raises(ConfigError, match="whitespace"):
        load_api_keys(["sk bad"], env="")


def test_keys_are_matched_whole_and_the_header_parsed():
    keys = ("sk-one", "sk-two")
    assert key_matches("sk-two", keys) and key_matches("sk-one", keys)
    assert not key_matches("sk-on", keys) and not key_matches("sk-one2", keys) and not key_matches("", keys)
    assert bearer_token([(b"authorization", b"Bearer sk-one")]) == "sk-one"
    assert bearer_token([(b"Authorization", b"bearer  sk-one ")]) == "sk-one"
    assert bearer_token([(b"authorization", b"Basic c2stb25l")]) is None
    assert bearer_token([]) is None


def test_listening_beyond_loopback_needs_a_key_or_insecure_no_auth():
    from mm_core.errors import ConfigError

    for host in ("127.0.0.1", "localhost", "::1"):
        check_exposure(host, has_keys=False, insecure_no_auth=False)
    with pytest.raises(ConfigError, match="--api-key") as caught:
        check_exposure("0.0.0.0", has_keys=False, insecure_no_auth=False)
    assert "--insecure-no-auth" in caught.value.hint
    check_exposure("0.0.0.0", has_keys=True, insecure_no_auth=False)
    check_exposure("0.0.0.0", has_keys=False, insecure_no_auth=True)


def test_serve_on_all_interfaces_without_a_key_exits_2(tmp_path: Path, capsys, monkeypatch):
    from mm_core.cli.main import main

    monkeypatch.delenv("MM_API_KEYS", raising=False)
    config = tmp_path / "any.yaml"
    config.write_text("model:\n  arch: char_chat\n  model_type: tiny\n")
    assert main(["serve", "--config", str(config), "--host", "0.0.0.0", "--port", "0"]) == 2
    error = capsys.readouterr().err
    assert "reachable from other machines" in error and "--insecure-no-auth" in error


# -- against a server ----------------------------------------------------------------------------
def _post(server: Server, headers: dict[str, str], path: str = "/v1/chat/completions") -> tuple[int, dict]:
    request = urllib.request.Request(server.url + path, data=json.dumps(HELLO).encode(),
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
def test_requests_without_or_with_a_wrong_key_get_401_in_openai_format(auth_server: Server):
    for headers in [{}, {"Authorization": "Bearer sk-test-wrong"}, {"Authorization": f"Basic {API_KEYS[0]}"},
                    {"Authorization": f"Bearer {API_KEYS[0][:-1]}"}]:
        status, body = _post(auth_server, headers)
        assert status == 401, (headers, body)
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["code"] == "invalid_api_key" and body["error"]["type"] == "invalid_request_error"
        assert API_KEYS[0] not in body["error"]["message"]
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(auth_server.url + "/v1/models", timeout=30)
    assert caught.value.code == 401
    # the page and the health check stay open (the page asks for the key)
    assert auth_server.get("/health")["status"] == "ok"
    with urllib.request.urlopen(auth_server.url + "/", timeout=30) as response:
        assert response.status == 200 and b"api-key" in response.read()


@pytest.mark.slow
def test_openai_client_needs_the_right_key(auth_server: Server, char_reference):
    import openai

    expected = char_reference.answer("hello there", max_new_tokens=8)
    with pytest.raises(openai.AuthenticationError) as caught:
        auth_server.client(api_key="sk-test-wrong").chat.completions.create(**HELLO)
    assert caught.value.status_code == 401 and caught.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        auth_server.client(api_key="sk-test-wrong").models.list()
    for key in API_KEYS:  # one from --api-key, one from the MM_API_KEYS key file
        client = auth_server.client(api_key=key)
        assert client.chat.completions.create(**HELLO).choices[0].message.content == expected
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**HELLO, stream=True)
                           if c.choices)
        assert streamed == expected
        assert [m.id for m in client.models.list()] == [MODEL]
    status, body = _post(auth_server, {"Authorization": f"Bearer {API_KEYS[1]}"})
    assert status == 200 and body["choices"][0]["message"]["content"] == expected
