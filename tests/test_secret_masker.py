"""SecretMasker: the value of every secret-named variable, in the forms it is printed in."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest

from clarion_jupyter.core.secrets import MASK, SecretMasker, SecretPolicy, reread_environment
from clarion_jupyter.llm.provider import read_api_key

SECRET = "sk-live-0123456789abcdefXYZ"


@pytest.mark.parametrize("before", [b"", b"u", b"us", b"user:"])
@pytest.mark.parametrize("after", [b"", b"!", b"!?"])
@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
def test_a_secret_inside_a_longer_base64_text_is_masked_at_any_alignment(before, after, encode) -> None:
    printed = encode(before + SECRET.encode() + after).decode()
    masked = SecretMasker(environ={"A_API_KEY": SECRET}).text(f"Authorization: Basic {printed}")
    assert MASK in masked
    assert len(masked) < len(printed) + len("Authorization: Basic ")


def test_url_encoded_and_json_escaped_forms_are_masked() -> None:
    secret = 'p@ss/word"with+marks'
    masker = SecretMasker(environ={"DB_TOKEN": secret})
    assert masker.text("?t=" + quote(secret, safe="")) == f"?t={MASK}"
    assert masker.text(json.dumps({"t": secret})) == json.dumps({"t": MASK})


def test_values_too_short_to_mask_are_left_alone_and_refused_as_keys() -> None:
    environ = {"SHORT_KEY": "on"}
    assert SecretMasker(environ=environ).text("on and on") == "on and on"
    assert "too short" in (SecretPolicy().key_problem("SHORT_KEY", environ) or "")


def test_only_variables_named_as_secrets_are_masked() -> None:
    masker = SecretMasker(SecretPolicy(r"CORP_[A-Z]+"), environ={"CORP_LLM": SECRET, "HOME": "/home/user"})
    assert masker.mask({"a": [SECRET, "/home/user"]}) == {"a": [MASK, "/home/user"]}


def test_a_secret_exported_after_the_masker_was_made_is_masked() -> None:
    environ: dict[str, str] = {}
    masker = SecretMasker(environ=environ)
    assert masker.masking() is None
    environ["LATE_API_KEY"] = SECRET
    mask = masker.masking()
    assert mask is not None and mask([f"x{SECRET}y"]) == [f"x{MASK}y"]


def test_a_key_read_for_a_call_is_masked_at_once_even_when_exported_a_moment_ago(monkeypatch) -> None:
    masker = SecretMasker()
    monkeypatch.setenv("FRESH_API_KEY", "first-value-1234")
    read_api_key("FRESH_API_KEY")
    assert masker.text("first-value-1234") == MASK
    monkeypatch.setenv("FRESH_API_KEY", "second-value-5678")  # within the cached read's lifetime
    assert read_api_key("FRESH_API_KEY") == "second-value-5678"
    assert masker.text("second-value-5678") == MASK


def _counted_reads(monkeypatch) -> list[int]:
    reads: list[int] = []
    scan = SecretMasker._scan
    monkeypatch.setattr(SecretMasker, "_scan", lambda self: reads.append(1) or scan(self))
    return reads


def test_reading_a_key_the_maskers_know_already_does_not_read_the_environment_again(monkeypatch) -> None:
    """Every LLM call reads its key: a full read of the environment each time cost more than the
    rest of the engine's work for the call."""
    monkeypatch.setenv("KNOWN_API_KEY", "known-value-1234")
    reads = _counted_reads(monkeypatch)
    masker = SecretMasker()
    read_api_key("KNOWN_API_KEY")
    masker.text("x")
    for _ in range(5):
        read_api_key("KNOWN_API_KEY")
        assert masker.text("known-value-1234") == MASK
    assert len(reads) == 1


def test_a_reread_that_finds_the_environment_unchanged_does_not_read_it_again(monkeypatch) -> None:
    """Every new run asks for a re-read (its inputs are masked against the secrets set now):
    reading and matching every variable each time cost a tenth of a short run's engine time."""
    monkeypatch.setenv("STEADY_API_KEY", "steady-value-1234")
    reads = _counted_reads(monkeypatch)
    masker = SecretMasker()
    reread_environment()
    masker.text("x")
    for _ in range(5):
        reread_environment()
        assert masker.text("steady-value-1234") == MASK
    assert len(reads) == 1


@pytest.mark.parametrize("change", ["set", "replace", "delete"])
def test_a_reread_after_the_environment_changed_reads_it_again(monkeypatch, change) -> None:
    monkeypatch.setenv("CHANGING_API_KEY", "old-value-123456")
    reads = _counted_reads(monkeypatch)
    masker = SecretMasker()
    reread_environment()
    assert masker.text("old-value-123456") == MASK
    if change == "set":
        monkeypatch.setenv("ANOTHER_API_KEY", "new-value-654321")
    elif change == "replace":
        monkeypatch.setenv("CHANGING_API_KEY", "new-value-654321")
    else:
        monkeypatch.delenv("CHANGING_API_KEY")
    reread_environment()
    masked = masker.text("old-value-123456 new-value-654321")
    assert len(reads) == 2
    assert (
        masked
        == {
            "set": f"{MASK} {MASK}",
            "replace": f"old-value-123456 {MASK}",
            "delete": "old-value-123456 new-value-654321",
        }[change]
    )


TRICKY = ['quo"te\\back-slash', 'ünï"quoted-sécret', "ünïcødé-sécret", "new\nline\ttab-secret", "plain-secret-0123"]


@pytest.mark.parametrize("secret", TRICKY)
def test_every_printed_form_is_masked_deep_inside_data_keys_included(secret) -> None:
    masker = SecretMasker(environ={"X_API_KEY": secret})
    forms = [secret, quote(secret, safe=""), json.dumps(secret)[1:-1], base64.b64encode(secret.encode()).decode()]
    for form in forms:
        value = {"a": [1, {"b": (f"<{form}>", None)}], f"k{form}": 2.5, "ok": "nothing here"}
        masked = masker.mask(value)
        assert json.dumps(masked).count("***") == 2, (form, masked)
        assert masked["ok"] == "nothing here"
        assert masker.masking()(value) == masked


def test_data_without_a_secret_is_handed_back_as_it_is() -> None:
    """Most of what is masked holds no secret: it is not copied string by string."""
    value = {"text": "a reply", "usage": {"prompt_tokens": 3}, "items": [[1, 2], "x"]}
    masker = SecretMasker(environ={"X_API_KEY": SECRET})
    assert masker.mask(value) is value
    assert masker.masking()(value) is value
    assert masker.mask({"t": f"..{SECRET}.."}) == {"t": f"..{MASK}.."}


def test_data_that_cannot_be_encoded_as_utf8_is_still_masked() -> None:
    """A lone surrogate (``json.loads`` of a hostile reply) cannot be encoded to look for a
    secret: the value is then masked string by string."""
    masker = SecretMasker(environ={"X_API_KEY": SECRET})
    assert masker.mask({"t": f"\ud800{SECRET}"}) == {"t": f"\ud800{MASK}"}
