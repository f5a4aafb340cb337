"""Proxy settings for tools (pure): what each tool reads, and what an inherited environment must not override."""

from __future__ import annotations

import pytest

from jail.toolconfig import LOOPBACK, npm_env, proxy_env, restore_keys

URL = "http://127.0.0.1:40123"


@pytest.mark.parametrize(
    "key",
    [
        "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",  # curl, pip, Go, ...
        "NPM_CONFIG_PROXY", "NPM_CONFIG_HTTPS_PROXY",  # npm 11 uses only https_proxy for https URLs
        "YARN_HTTP_PROXY", "YARN_HTTPS_PROXY", "PIP_PROXY", "GRPC_PROXY",
    ],
)  # fmt: skip
def test_every_tool_gets_the_proxy(key: str) -> None:
    assert proxy_env({}, URL)[key] == URL


@pytest.mark.parametrize(
    ("inherited", "key", "want"),
    [
        ({"NO_PROXY": ".registry.example"}, "NO_PROXY", LOOPBACK),  # an exemption would send npm around the proxy
        ({"no_proxy": "*"}, "no_proxy", LOOPBACK),
        ({"HTTPS_PROXY": "http://corp:3128"}, "HTTPS_PROXY", URL),
        ({}, "NPM_CONFIG_NOPROXY", LOOPBACK),  # npm skips an empty value: it must be non-empty
        ({}, "NODE_USE_ENV_PROXY", "1"),
    ],
)
def test_inherited_settings_cannot_route_around_the_proxy(inherited: dict[str, str], key: str, want: str) -> None:
    assert proxy_env(inherited, URL)[key] == want


def test_lowercase_npm_spellings_are_replaced_not_duplicated() -> None:
    env = proxy_env({"npm_config_https_proxy": "http://bogus:1", "npm_config_noproxy": "registry.example"}, URL)
    assert "npm_config_https_proxy" not in env
    assert "npm_config_noproxy" not in env
    assert env["NPM_CONFIG_HTTPS_PROXY"] == URL


def test_git_config_is_appended_to_the_callers() -> None:
    env = proxy_env({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "user.name", "GIT_CONFIG_VALUE_0": "me"}, URL)
    assert env["GIT_CONFIG_COUNT"] == "2"
    assert env["GIT_CONFIG_KEY_0"] == "user.name"
    assert (env["GIT_CONFIG_KEY_1"], env["GIT_CONFIG_VALUE_1"]) == ("http.proxy", URL)


def test_java_options_are_appended() -> None:
    env = proxy_env({"JAVA_TOOL_OPTIONS": "-Xmx1g"}, URL)
    assert env["JAVA_TOOL_OPTIONS"].startswith("-Xmx1g ")
    assert "-Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=40123" in env["JAVA_TOOL_OPTIONS"]


def test_npm_global_prefix_moves_to_boundarys_own_and_keeps_the_distro_config() -> None:
    env = npm_env({"PATH": "/usr/bin:/bin"}, "/home/u/.local/share/boundary/npm-global")
    assert env["NPM_CONFIG_PREFIX"] == "/home/u/.local/share/boundary/npm-global"
    assert env["PATH"].split(":")[0] == "/home/u/.local/share/boundary/npm-global/bin"
    assert env["NPM_CONFIG_GLOBALCONFIG"].endswith("/etc/npmrc")


def test_a_prefix_the_caller_chose_is_kept() -> None:
    env = npm_env({"npm_config_prefix": "/opt/npm", "PATH": "/usr/bin"}, "/home/u")
    assert "NPM_CONFIG_PREFIX" not in env
    assert env["PATH"] == "/usr/bin"


def test_the_shim_restores_proxy_npm_git_and_java_settings() -> None:
    env = npm_env(proxy_env({"PATH": "/usr/bin"}, URL), "/home/u")
    keys = restore_keys(env)
    for key in ("HTTPS_PROXY", "NO_PROXY", "NPM_CONFIG_PREFIX", "NPM_CONFIG_GLOBALCONFIG", "GIT_CONFIG_COUNT",
                "GIT_CONFIG_KEY_0", "JAVA_TOOL_OPTIONS"):  # fmt: skip
        assert key in keys
    assert "PATH" not in keys  # env -i PATH=... chooses its PATH on purpose


def test_npmrc_keeps_settings_and_drops_credentials() -> None:
    from jail.toolconfig import npmrc

    user = (
        "registry=https://npm.example.test/\n@corp:registry=https://corp.example.test/\n"
        "//npm.example.test/:_authToken=SECRET\n_auth=SECRET\nemail=a@b\nstrict-ssl=true\nproxy=http://old\n"
    )
    out = npmrc(user, proxy="http://127.0.0.1:9", cafile="/ca.pem", prefix="/p")
    assert "SECRET" not in out
    assert "a@b" not in out
    assert "http://old" not in out
    for line in ("registry=https://npm.example.test/", "@corp:registry=https://corp.example.test/", "strict-ssl=true",
                 "proxy=http://127.0.0.1:9", "https-proxy=http://127.0.0.1:9", "noproxy=localhost,127.0.0.1,::1",
                 "cafile=/ca.pem", "prefix=/p"):  # fmt: skip
        assert line in out.splitlines(), line


def test_gitconfig_drops_helpers_and_includes() -> None:
    from jail.toolconfig import gitconfig

    user = (
        '[user]\n\tname = U\n[credential]\n\thelper = store\n[credential "https://x"]\n\thelper = !evil\n'
        '[include]\n\tpath = ~/.secret\n[includeIf "gitdir:~/w/"]\n\tpath = w\n[core]\n\teditor = vi\n'
    )
    out = gitconfig(user, proxy="http://127.0.0.1:9", cainfo="/ca.pem")
    assert "helper" not in out
    assert "path =" not in out
    assert "name = U" in out
    assert "editor = vi" in out
    assert "\tproxy = http://127.0.0.1:9" in out
    assert "\tsslCAInfo = /ca.pem" in out


def test_pipconf_drops_url_credentials() -> None:
    from jail.toolconfig import pipconf

    user = "[global]\nindex-url = https://u:pw@pypi.example.test/simple\nextra-index-url = https://x.test/s\n"
    out = pipconf(user, proxy="http://127.0.0.1:9", cert="/ca.pem")
    assert "pw" not in out
    assert "index-url = https://pypi.example.test/simple" in out
    assert "proxy = http://127.0.0.1:9" in out
    assert "cert = /ca.pem" in out
    assert "proxy = http://127.0.0.1:9" in pipconf("not [ini", proxy="http://127.0.0.1:9", cert=None)
