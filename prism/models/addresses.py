"""The one spelling of an e-mail address and its domain: what is stored, looked up, claimed
and compared (by the application, and by the migration that rewrote older spellings)."""

from __future__ import annotations

import re
import unicodedata

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}\.[^@\s]{2,63}$")
_DOMAIN = re.compile(
    r"^(?=.{4,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])$"
)

# What IDNA (UTS #46) reads as a label separator besides '.': the ideographic, fullwidth and
# halfwidth ideographic full stops.
_FULL_STOPS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
# Scripts whose letters pass for one another: a label mixing them is a lookalike.
_CONFUSABLE_SCRIPTS = frozenset({"LATIN", "CYRILLIC", "GREEK"})


def _mixes_scripts(label: str) -> bool:
    scripts = {
        unicodedata.name(c, "?").split(" ", 1)[0]
        for c in label
        if unicodedata.category(c).startswith("L")
    }
    return len(scripts & _CONFUSABLE_SCRIPTS) > 1


def canonical_domain(domain: str) -> str | None:
    """The one spelling of an e-mail domain, or None when it is not a host name.

    Every spelling a mail system delivers to the same host is the same domain here: the
    Unicode full stops are dots, one trailing dot (the root) is dropped, an internationalized
    name is its IDNA ASCII form (``xn--…``), all lowercase. A label that mixes Latin, Cyrillic
    or Greek letters (``exаmple`` with a Cyrillic ``а``) is refused: it exists to be mistaken
    for another. Stored addresses and claimed domains are in this form, so the database's
    ``lower(…)`` comparisons and unique indexes compare canonical domains."""
    text = domain.strip().translate(_FULL_STOPS).removesuffix(".")
    if not text or len(text) > 253 or any(unicodedata.category(c)[0] in "CZ" for c in text):
        return None
    try:
        ascii_form = text.encode("idna").decode("ascii").lower()
        unicode_form = ascii_form.encode("ascii").decode("idna")
    except UnicodeError:
        return None
    if not _DOMAIN.match(ascii_form):
        return None
    if any(_mixes_scripts(label) for label in unicode_form.split(".")):
        return None
    return ascii_form


def canonical_email(email: str) -> str | None:
    """``local@domain`` with the domain in its canonical form (``canonical_domain``); None
    when it is not an address. The local part is kept as written (case-insensitive in the
    database), but holds no control, format or space characters (a zero-width space would
    make a second account that reads the same)."""
    email = email.strip()
    if len(email) > 320 or not _EMAIL.match(email.translate(_FULL_STOPS)):
        return None
    local, _, domain = email.rpartition("@")
    if any(unicodedata.category(c)[0] in "CZ" for c in local):
        return None
    canonical = canonical_domain(domain)
    if canonical is None:
        return None
    return f"{local}@{canonical}"
