"""SecretMasker: the value of every secret-named variable, in the forms it is printed in."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest

from clarion_jupyter.core.secrets import MASK, SecretMasker, SecretPolicy

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
