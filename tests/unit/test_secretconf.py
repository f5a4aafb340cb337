"""--secret specs, YAML, provider presets (npm's registry read from npm itself) and taking the values out of
boundary's own environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jail.config import ConfigError, Flags, build_config
from jail.secretconf import PRESETS, SecretError, Spec, build, parse_spec, specs_from_yaml
from proxy.rules import L4Verdict

VALUE = "v" * 20 + "0123456789abcdefghij"  # 40 characters


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("OPENAI_API_KEY", Spec("OPENAI_API_KEY")),
        ("T=api.example.test", Spec("T", ("api.example.test",))),
        ("T=a.test,*.b.test,+body", Spec("T", ("a.test", "*.b.test"), body=True)),
        ("T=@~/tok,a.test", Spec("T", ("a.test",), "~/tok")),
    ],
)
def test_specs(text: str, want: Spec) -> None:
    assert parse_spec(text) == want


@pytest.mark.parametrize("text", ["", "=a.test", "1ABC", "A-B=x.test"])
def test_bad_specs(text: str) -> None:
    with pytest.raises(SecretError, match="expected NAME"):
        parse_spec(text)


def test_yaml_forms() -> None:
    listed = specs_from_yaml(["A=a.test", {"name": "B", "hosts": ["b.test"], "file": "/f", "body": True}], "cfg")
    assert [(s.name, s.hosts, s.file, s.body) for s in listed] == [
        ("A", ("a.test",), None, False), ("B", ("b.test",), "/f", True)
    ]  # fmt: skip
    mapped = specs_from_yaml({"A": None, "B": {"hosts": ["b.test"]}}, "cfg")
    assert [(s.name, s.hosts) for s in mapped] == [("A", ()), ("B", ("b.test",))]
    with pytest.raises(SecretError, match="unknown key 'host'"):
        specs_from_yaml([{"name": "A", "host": "a.test"}], "cfg")


PRESET_CASES = [
    ("OPENAI_API_KEY", {}, ["api.openai.com"]),
    ("OPENAI_API_KEY", {"OPENAI_BASE_URL": "https://llm.corp.test/v1"}, ["llm.corp.test"]),
    ("ANTHROPIC_API_KEY", {}, ["api.anthropic.com"]),
    ("GEMINI_API_KEY", {}, ["generativelanguage.googleapis.com"]),
    ("GH_TOKEN", {}, ["github.com", "api.github.com", "uploads.github.com"]),
    ("GITHUB_TOKEN", {"GH_HOST": "git.corp.test"}, ["git.corp.test"]),
    ("TWINE_PASSWORD", {"TWINE_REPOSITORY_URL": "https://pkgs.corp.test/upload/"}, ["pkgs.corp.test"]),
]


@pytest.mark.parametrize(("name", "env", "hosts"), PRESET_CASES)
def test_presets(name: str, env: dict[str, str], hosts: list[str]) -> None:
    (s,) = build([Spec(name)], {name: VALUE, **env})
    assert list(s.host_texts) == hosts
    assert s.placeholder != VALUE
    assert len(s.placeholder) == len(VALUE)


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed (scripts/test.sh installs it)")
def test_npm_token_is_bound_to_the_registry_npm_is_configured_with() -> None:
    env = {**os.environ, "NPM_TOKEN": VALUE, "npm_config_registry": "https://npm-mirror.corp.test/"}
    (s,) = build([Spec("NPM_TOKEN")], env)
    assert s.host_texts == ("npm-mirror.corp.test",)


def test_errors_name_the_secret_and_never_the_value(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="MY_TOKEN is not set"):
        build([Spec("MY_TOKEN", ("a.test",))], {})
    with pytest.raises(SecretError, match="name the hosts"):
        build([Spec("MY_TOKEN")], {"MY_TOKEN": VALUE})
    with pytest.raises(SecretError, match="at least 16") as e:
        build([Spec("MY_TOKEN", ("a.test",))], {"MY_TOKEN": "short-secret"})
    assert "short-secret" not in str(e.value)
    with pytest.raises(SecretError, match="printable ASCII"):
        build([Spec("MY_TOKEN", ("a.test",))], {"MY_TOKEN": VALUE + "\x1b"})
    with pytest.raises(SecretError, match="failed to read"):
        build([Spec("MY_TOKEN", ("a.test",), str(tmp_path / "missing"))], {})
    (tmp_path / "tok").write_text(VALUE + "\n")
    (s,) = build([Spec("MY_TOKEN", ("a.test",), str(tmp_path / "tok"))], {})
    assert s.value == VALUE


def test_config_binds_inspection_and_refuses_mitm_never(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "MY_TOKEN": VALUE}
    cfg = build_config(Flags(allow=["a.test"], secret=["MY_TOKEN=a.test"], workspace=tmp_path), env)
    assert cfg.policy().l4("a.test", 443)[0] is L4Verdict.INSPECT  # the proxy must see these requests
    assert VALUE not in repr(cfg)
    with pytest.raises(ConfigError, match="--mitm is 'never'"):
        build_config(Flags(allow=["a.test"], secret=["MY_TOKEN=a.test"], mitm="never", workspace=tmp_path), env)
    y = tmp_path / "c.yaml"
    y.write_text("secrets:\n  - MY_TOKEN=a.test\n")
    assert build_config(Flags(config=y, workspace=tmp_path), env).secrets[0].name == "MY_TOKEN"
    # explain and proxy do not need the values (nothing to swap them into)
    assert build_config(Flags(config=y, workspace=tmp_path, use_secrets=False), {"HOME": str(tmp_path)}).secrets == ()
    assert set(PRESETS) >= {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GITHUB_TOKEN", "GH_TOKEN", "NPM_TOKEN"}


WITHDRAW = """
import os, sys
from jail.secretconf import Spec, build, withdraw
(s,) = build([Spec("MY_TOKEN", ("a.test",))], os.environ)
withdraw([s], os.environ)
block = open("/proc/self/environ", "rb").read()
print(os.environ["MY_TOKEN"] == s.placeholder, os.environ["COPY"] == "x" + s.placeholder,
      s.value.encode() in block, s.placeholder.encode() in block)
"""


def test_withdraw_leaves_only_placeholders_in_the_environment_and_in_proc() -> None:
    env = {**os.environ, "MY_TOKEN": VALUE, "COPY": "x" + VALUE, "PYTHONPATH": str(Path(__file__).parents[2])}
    out = subprocess.run([sys.executable, "-c", WITHDRAW], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "False", "True"]
