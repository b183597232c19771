"""Go's filepath.Match, the glob meaning of Clarion v2 agents: cases from Go's own test table."""

from __future__ import annotations

import pytest

from clarion_jupyter.agent.gomatch import go_match, is_valid_go_glob

GO_MATCH_CASES = [
    ("abc", "abc", True),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*", "ab/c", False),
    ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    ("a?b", "a☺b", True),
    ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("[a-ζ]*", "α", True),
    ("*[a-ζ]", "A", False),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    ("[\\-x]", "x", True),
    ("*x", "xxx", True),
    ("**/*.go", "a/b.go", True),
    ("**/*.go", "a/b/c.go", False),
    ("*.go", ".hidden.go", True),
]

GO_BAD_PATTERNS = ["[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "a/b["]


@pytest.mark.parametrize(("pattern", "path", "matched"), GO_MATCH_CASES)
def test_matches_like_go_filepath_match(pattern: str, path: str, matched: bool) -> None:
    assert go_match(pattern, path) is matched


@pytest.mark.parametrize("pattern", GO_BAD_PATTERNS)
def test_a_malformed_pattern_matches_nothing_as_in_v2(pattern: str) -> None:
    assert not is_valid_go_glob(pattern)
    assert not any(go_match(pattern, path) for path in ("a", "x", "-", "]", "ab", "a/b"))
