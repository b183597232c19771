"""The one way the notebook builds HTML: every string is text until this module says otherwise.

Everything a run shows came from a model, a step or a document: a reply, a file path, a
diff, an error message, a workflow's name. JupyterLab renders a widget's HTML and the
outputs a kernel produced in this session as *trusted* (an ``ipywidgets.Output`` is a
trusted output area, whatever it holds), and so does a saved notebook once it is opened
again and its signature matches: nothing downstream sanitises what the kernel sends. So the
widgets and reprs never format HTML by hand. :func:`tag` builds an element whose text
children and attribute values are escaped; only :class:`Markup` (what :func:`tag`,
:func:`join` and :func:`markdown` return) passes unescaped. Markdown is converted here with
raw HTML escaped, and the result is cleaned against an allowlist of tags, attributes and
link schemes, the way JupyterLab's sanitiser treats untrusted Markdown.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from typing import Any

import bleach
import mistune

_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
ALLOWED_TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i",
    "li", "ol", "p", "pre", "span", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead", "tr", "ul",
})  # fmt: skip
"""What a rendered Markdown reply may contain: formatting, no scripts, frames, forms or media."""
ALLOWED_ATTRIBUTES = {"a": ["href", "title"], "abbr": ["title"], "code": ["class"], "th": ["align"], "td": ["align"]}
ALLOWED_PROTOCOLS = frozenset({"http", "https", "mailto"})
_markdown = mistune.create_markdown(escape=True, plugins=["table", "strikethrough"])


class Markup(str):
    """HTML this module built; anything else is text and is escaped where it is placed."""

    __slots__ = ()


def escape(value: Any) -> Markup:
    """``value`` as HTML text (Markup is kept as it is)."""
    return value if isinstance(value, Markup) else Markup(html.escape(str(value), quote=True))


def join(parts: Iterable[Any], separator: str = "") -> Markup:
    """The parts one after the other, each escaped unless it is Markup."""
    return Markup(escape(separator).join(escape(p) for p in parts if p is not None and p != ""))


def tag(name: str, *children: Any, **attributes: Any) -> Markup:
    """``<name attributes>children</name>``; attribute names are Python names (``class_`` for
    ``class``, ``data_key`` for ``data-key``); None and False leave an attribute out."""
    if not _NAME.match(name):
        raise ValueError(f"not a tag name: {name!r}")
    rendered = []
    for key, value in attributes.items():
        attribute = key.rstrip("_").replace("_", "-")
        if not _NAME.match(attribute):
            raise ValueError(f"not an attribute name: {key!r}")
        if value is None or value is False:
            continue
        rendered.append(f" {attribute}" if value is True else f' {attribute}="{html.escape(str(value), quote=True)}"')
    return Markup(f"<{name}{''.join(rendered)}>{join(children)}</{name}>")


def style(**properties: Any) -> str:
    """A ``style`` attribute's value from Python names (``white_space="pre"``)."""
    return ";".join(f"{k.replace('_', '-')}:{v}" for k, v in properties.items() if v is not None)


def markdown(text: str) -> Markup:
    """Markdown as sanitised HTML: raw HTML in it stays text, links keep only safe schemes."""
    converted = _markdown(text)
    cleaned = bleach.clean(
        str(converted),
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        protocols=ALLOWED_PROTOCOLS,
        strip=True,
    )
    return Markup(cleaned)
