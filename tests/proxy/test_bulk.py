"""1 GiB through the proxy never sits in memory: peak RSS of the proxy process stays bounded."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Upstream, boundary_proxy

GIB = 1 << 30
RSS_LIMIT_KB = 150 * 1024


@pytest.fixture(scope="module")
def big() -> Iterator[Upstream]:
    u = Upstream().start()
    yield u
    u.stop()


@pytest.mark.parametrize(
    ("rule", "tunnel"),
    [("domain=big.test", True), ("domain=big.test path=/big/*", False)],
    ids=["fastpath-connect", "mitmproxy-streamed"],
)
def test_one_gib_streams_in_bounded_memory(tmp_path: Path, big: Upstream, rule: str, tunnel: bool) -> None:
    with boundary_proxy(tmp_path, "--allow", rule, "--allow-private", "--host-map", "big.test=127.0.0.1") as p:
        r = subprocess.run(
            ["curl", "-sS", "--noproxy", "", "-x", p.url, *(["-p"] if tunnel else []), "-o", "/dev/null",
             "-w", "%{size_download}", f"http://big.test:{big.port}/big/{GIB}"],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert int(r.stdout) == GIB
        rss = p.peak_rss_kb()
        print(f"peak RSS {rule!r}: {rss / 1024:.1f} MiB")
        assert rss < RSS_LIMIT_KB, f"peak RSS {rss} kB"
