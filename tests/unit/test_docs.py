"""README's links lead to files a clone has; nothing points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_readme_links_resolve_inside_the_repository() -> None:
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert "docs/architecture.md" in links
    for link in links:
        if "://" in link:
            continue
        assert (ROOT / link).exists(), link
    assert "../shared" not in text
