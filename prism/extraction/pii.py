"""PII detection on section text. Findings keep the type, offsets and a confidence; the
matched text itself is never stored, so masking needs only the findings and the text.

Patterns find candidates; whatever carries a check digit is only a finding when the check
holds (IBAN mod 97, card numbers Luhn, the German tax id ISO 7064, the French NIR key,
machine-readable zones their 7-3-1 digits), and phone numbers are only findings when
libphonenumber's metadata says the number is a valid one. People's names come from a
gazetteer of first names (the ``gender-guesser`` package's dictionary, frequent names of
English-, German- and French-speaking countries) with context rules: a title or a role
phrase before capitalised words, or a known first name followed by a surname. Every span is
trimmed, so masking replaces exactly the personal value and never the spaces around it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum.de import idnr as stdnum_idnr
from stdnum.fr import nir as stdnum_nir

from prism.extraction.names import find_names


@dataclass(frozen=True)
class Finding:
    type: str
    start: int
    end: int
    confidence: float

    def as_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "start": self.start,
            "end": self.end,
            "confidence": self.confidence,
        }


# What each type is (docs/api.md lists the same).
TYPES: dict[str, str] = {
    "EMAIL": "e-mail address",
    "PHONE": "phone number, national (US, UK, DE, FR) or international, valid by libphonenumber",
    "SSN": "US social security number",
    "CREDIT_CARD": "payment card number (Luhn checked)",
    "IBAN": "international bank account number (country length and mod-97 checked)",
    "PASSPORT": "passport number named as one (passport / Reisepass / passeport)",
    "MRZ": "machine-readable zone of a passport or ID card (check digits verified)",
    "DE_TAX_ID": "German tax identification number, Steuer-ID (check digit verified)",
    "FR_NIR": "French social security number, NIR (key verified)",
    "IP_ADDRESS": "IPv4 address",
    "DATE_OF_BIRTH": "a date introduced as a birth date (EN, DE, FR)",
    "STREET_ADDRESS": "street address (EN, DE, FR forms)",
    "PERSON": "a person's name (gazetteer of first names, titles and role phrases)",
}


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_DIGITS = re.compile(r"\D")


def _digits(text: str) -> str:
    return _DIGITS.sub("", text)


# --- check digits ------------------------------------------------------------------------------


def _mrz_digit(field: str) -> str:
    """ICAO 9303 check digit: weights 7, 3, 1 over digits, letters (A=10) and fillers (0)."""
    total = 0
    for i, ch in enumerate(field):
        if ch.isdigit():
            value = int(ch)
        elif "A" <= ch <= "Z":
            value = ord(ch) - 55
        else:
            value = 0
        total += value * (7, 3, 1)[i % 3]
    return str(total % 10)


def _check(field: str, digit: str) -> bool:
    return (digit == "<" and set(field) <= {"<"}) or _mrz_digit(field) == digit


def mrz_ok(lines: list[str]) -> bool:
    """Check digits of a TD3 (passport: 2 lines of 44) or TD1 (ID card: 3 lines of 30) zone."""
    if len(lines) == 2 and all(len(line) == 44 for line in lines):
        line = lines[1]
        return (
            _check(line[0:9], line[9])
            and _check(line[13:19], line[19])
            and _check(line[21:27], line[27])
            and _check(line[28:42], line[42])
            and _mrz_digit(line[0:10] + line[13:20] + line[21:43]) == line[43]
        )
    if len(lines) == 3 and all(len(line) == 30 for line in lines):
        first, second = lines[0], lines[1]
        return (
            _check(first[5:14], first[14])
            and _check(second[0:6], second[6])
            and _check(second[8:14], second[14])
            and _mrz_digit(first[5:30] + second[0:7] + second[8:15] + second[18:29]) == second[29]
        )
    return False


# --- patterns ---------------------------------------------------------------------------------

Match = tuple[int, int, float]
Finder = Callable[[str], Iterator[Match]]


def _regex(pattern: re.Pattern[str], confidence: float, group: int = 0) -> Finder:
    def find(text: str) -> Iterator[Match]:
        for match in pattern.finditer(text):
            yield match.start(group), match.end(group), confidence

    return find


def _checked(
    pattern: re.Pattern[str], valid: Callable[[str], bool], confidence: float, group: int = 0
) -> Finder:
    def find(text: str) -> Iterator[Match]:
        for match in pattern.finditer(text):
            if valid(match.group(group)):
                yield match.start(group), match.end(group), confidence

    return find


_EMAIL = re.compile(
    # Bounded parts, and a match only starts where a run of address characters starts: no
    # quadratic re-scanning of hostile text such as "a.a.a.a…".
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}"
    r"(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}\b"
)
# Patterns start with a character class and look behind after it (``\d(?<!\w\d)`` is
# ``\b\d``): the regex engine then skips to candidate characters instead of trying a
# lookbehind or a word boundary at every position (3-6 times faster on long sections).
_SSN = re.compile(r"\d(?<!\w\d)\d\d-\d{2}-\d{4}\b")


def _ssn_ok(value: str) -> bool:
    area, group, serial = value.split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


_CARD = re.compile(r"\d(?<!\w\d)(?:[ -]?\d){12,18}\b")
_CARD_GROUP = re.compile(r"[ -]")
# Issuer prefixes and the lengths their numbers have: Visa, Mastercard, Amex, Discover,
# Diners, JCB, Maestro, UnionPay.
_CARD_BRANDS = (
    (re.compile(r"4"), (13, 16, 19)),
    (re.compile(r"5[1-5]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)"), (16,)),
    (re.compile(r"3[47]"), (15,)),
    (re.compile(r"6(?:011|5|4[4-9])"), (16, 17, 18, 19)),
    (re.compile(r"3(?:0[0-5]|[68])"), (14, 15, 16, 17, 18, 19)),
    (re.compile(r"35"), (16, 17, 18, 19)),
    (re.compile(r"5[06-9]|6"), (12, 13, 14, 15, 16, 17, 18, 19)),
)


def _card_number(digits: str) -> bool:
    return _luhn_ok(digits) and any(
        prefix.match(digits) and len(digits) in lengths for prefix, lengths in _CARD_BRANDS
    )


def _card(text: str) -> Iterator[Match]:
    for match in _CARD.finditer(text):
        start, end = _trimmed(text, match.start(), match.end(), "CREDIT_CARD")
        value = text[start:end]
        digits = _digits(value)
        if not _card_number(digits):
            continue
        groups = _CARD_GROUP.split(value)
        # Cards are written 4-4-4-4(-3), 4-6-5 or 4-6-4, or in one piece; a number grouped
        # otherwise (a SIRET's 3-3-3-5, a NIR) is something else.
        if len(groups) > 1 and (
            len(groups[0]) != 4 or any(len(g) not in (4, 6) for g in groups[1:-1])
        ):
            continue
        # Part of a longer run of groups (an IBAN, a tracking number): not a card.
        if re.search(r"[A-Z0-9][ -]$", text[max(0, start - 2) : start]) or re.match(
            r"[ -][A-Z0-9]", text[end : end + 2]
        ):
            continue
        yield start, end, 0.9


_IBAN = re.compile(r"[A-Z](?<!\w[A-Z])[A-Z]\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")
_IP = re.compile(r"\d(?<!\w\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b")
_DATE = (
    r"(?:\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{4}-\d{2}-\d{2}"
    r"|\d{1,2}\.? [A-ZÄÖÜa-zéèûäöü]+\.? \d{4}|[A-Z][a-z]+ \d{1,2},? \d{4})"
)
_NUMBERED = re.compile(
    r"(?i:(?:version|ver\.|v|release|clause|section|article|art\.|ziffer|abschnitt|nr\.|§))\s?$"
)


def _ip(text: str) -> Iterator[Match]:
    for match in _IP.finditer(text):
        if any(
            int(octet) > 255 or (len(octet) > 1 and octet[0] == "0")
            for octet in match.group().split(".")
        ):
            continue
        # "Version 4.1.0.7", "Clause 10.2.3.1": numbers of a thing, not an address.
        if not _NUMBERED.search(text, max(0, match.start() - 12), match.start()):
            yield match.start(), match.end(), 0.85


_DOB = re.compile(
    r"(?i:\b(?:born(?: on)?|date of birth|d\.?o\.?b\.?|geboren(?: am)?|geb\.|geburtsdatum"
    r"|né(?:e)? le|date de naissance))[:\s]+(" + _DATE + r")"
)
_STREET_EN = re.compile(
    r"\d(?<!\w\d)\d{0,4}\s+(?:[A-Z][a-z]+\s){1,3}"
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way)\b\.?"
)
# German: "Musterstraße 12a", "Hauptstr. 5", "Berliner Allee 3" ("Am Markt 3": no street word).
_STREET_DE = re.compile(
    r"[A-ZÄÖÜ](?<!\w[A-ZÄÖÜ])[a-zäöüß]+(?:-[A-ZÄÖÜ][a-zäöüß]+)*(?:straße|strasse|str\.|weg"
    r"|allee|platz|gasse|ring|damm|ufer)\s\d{1,4}[a-z]?\b"
    r"|[A-ZÄÖÜ](?<!\w[A-ZÄÖÜ])[a-zäöüß]+\s(?:Straße|Strasse|Weg|Allee|Platz|Gasse)\s\d{1,4}[a-z]?\b"
)
_ARTICLES = frozenset(
    [
        "der",
        "die",
        "das",
        "den",
        "dem",
        "des",
        "ein",
        "eine",
        "einen",
        "am",
        "im",
        "zum",
        "zur",
        "jeder",
        "jede",
        "dieser",
        "diese",
    ]
)
# French: "12 rue de la Paix", "5 bis avenue Foch", "3, place Bellecour".
_STREET_FR = re.compile(
    r"\d(?<!\w\d)\d{0,3}(?:\s?(?:bis|ter))?,?\s(?:rue|avenue|av\.|boulevard|bd|place|allée"
    r"|impasse|chemin|quai|cours)\s(?:(?:de|du|des|la|le|l'|d')\s?){0,2}[A-ZÉÈ][\w'-]+"
    r"(?:\s[A-ZÉÈ][\w'-]+){0,2}"
)


def _street(text: str) -> Iterator[Match]:
    yield from ((m.start(), m.end(), 0.7) for m in _STREET_EN.finditer(text))
    for match in _STREET_DE.finditer(text):
        if match.group().split()[0].lower() not in _ARTICLES:
            yield match.start(), match.end(), 0.7
    yield from ((m.start(), m.end(), 0.7) for m in _STREET_FR.finditer(text))


_PASSPORT = re.compile(
    r"(?i:\b(?:passport|reisepass|passeport|pass)"
    r"(?:[\s-]*(?:no\.?|number|nr\.?|nummer|n°|no|numéro|number is|nummer ist))?)"
    r"[\s:#.]{0,4}(?:(?i:is|ist|est)\s)?([A-Z0-9]{8,9})\b"
)
_MRZ_TD3 = re.compile(r"(?m)^(P[A-Z<][A-Z<]{3}[A-Z<]{39})\s*\n([A-Z0-9<]{44})\s*$")
_MRZ_TD1 = re.compile(
    r"(?m)^([AIC][A-Z<][A-Z<]{3}[A-Z0-9<]{25})\s*\n([0-9<]{6}[0-9][MFX<][0-9<]{7}[A-Z<]{3}"
    r"[A-Z0-9<]{11}[0-9])\s*\n([A-Z<]{30})\s*$"
)
_DE_TAX_ID = re.compile(r"[1-9](?<![\d.,/-][1-9])\d(?: ?\d{3}){3}(?![\d.,/-]\d)")
_FR_NIR = re.compile(
    r"[12](?<![\d.,/-][12]) ?\d{2} ?(?:0[1-9]|1[0-2]|[2-9]\d) ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3}"
    r"(?: ?\d{2})(?![\d.,/-]\d)"
)
_TAX_CONTEXT = re.compile(
    r"(?i)(steuer|idnr|identifikationsnummer|tax|tin\b|identifiant|fiscal)", re.UNICODE
)


def _mrz(text: str) -> Iterator[Match]:
    for pattern in (_MRZ_TD3, _MRZ_TD1):
        for match in pattern.finditer(text):
            if mrz_ok(list(match.groups())):
                yield match.start(), match.end(), 0.99


def _mentions(text: str, words: tuple[str, ...]) -> bool:
    """A cheap test before a pattern that needs one of ``words`` (scanning every position
    with a case-insensitive alternation costs more than lower-casing the text once)."""
    lowered = text.lower()
    return any(word in lowered for word in words)


_PASSPORT_WORDS = ("pass",)
_DOB_WORDS = ("born", "birth", "d.o.b", "dob", "geb", "naissance", "né")


def _dob(text: str) -> Iterator[Match]:
    if _mentions(text, _DOB_WORDS):
        for match in _DOB.finditer(text):
            yield match.start(1), match.end(1), 0.85


def _passport(text: str) -> Iterator[Match]:
    if not _mentions(text, _PASSPORT_WORDS):
        return
    for match in _PASSPORT.finditer(text):
        number = match.group(1)
        if any(ch.isdigit() for ch in number):
            yield match.start(1), match.end(1), 0.85


def _idnr_ok(number: str) -> bool:
    """The Steuer-ID's check digit, and its rule for the first ten digits: one digit occurs
    twice or three times, the others at most once."""
    counts = sorted((number[:10].count(d) for d in set(number[:10])), reverse=True)
    return counts[:2] in ([2, 1], [3, 1]) and stdnum_idnr.is_valid(number)


def _de_tax_id(text: str) -> Iterator[Match]:
    for match in _DE_TAX_ID.finditer(text):
        if _idnr_ok(_digits(match.group())):
            context = _TAX_CONTEXT.search(text, max(0, match.start() - 60), match.start())
            yield match.start(), match.end(), 0.95 if context else 0.75


def _fr_nir(text: str) -> Iterator[Match]:
    for match in _FR_NIR.finditer(text):
        compact = match.group().replace(" ", "")
        if stdnum_nir.is_valid(compact):
            yield match.start(), match.end(), 0.95


def _iban(text: str) -> Iterator[Match]:
    for match in _IBAN.finditer(text):
        candidate = match.group()
        # The greedy pattern may take a word after the number ("... 00 BIC"): shorten it
        # group by group until the check holds.
        while candidate:
            if stdnum_iban.is_valid(candidate):
                yield match.start(), match.start() + len(candidate), 0.98
                break
            cut = candidate.rfind(" ")
            if cut < 15:
                break
            candidate = candidate[:cut]


# Runs that may be a phone number: bounded, so hostile digit runs cost linear time.
_PHONE_RUN = re.compile(r"[+(\d](?<![\w+][+(\d])[\d ()./-]{4,24}\d(?!\w)")
_PHONE_SEPARATED_DATE = re.compile(r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}")
_PHONE_REGIONS = ("US", "GB", "DE", "FR")
# North American numbers written nationally: 3-3-4 digits, the area code maybe in brackets.
_US_NATIONAL = re.compile(r"(?:1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}")
_DOTTED_QUAD = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


# The groups of an account number before a run of digits (an IBAN that failed its check):
# the run is the rest of that number, not a phone number.
_ACCOUNT_GROUPS = re.compile(r"[A-Z]{2}\d{2}(?: [A-Z0-9]{4})+ $")


def _phone(text: str) -> Iterator[Match]:
    for match in _PHONE_RUN.finditer(text):
        raw = match.group()
        start = match.start()
        if _ACCOUNT_GROUPS.search(text, max(0, start - 40), start):
            continue
        # A run of several numbers ("030 1234 / 030 5678") is split at its separators.
        for part in re.finditer(r"[^/]+", raw) if " / " in raw else [re.match(r".*", raw)]:
            assert part is not None
            value = part.group().strip(" ./-")
            if not value or _PHONE_SEPARATED_DATE.fullmatch(value) or _DOTTED_QUAD.fullmatch(value):
                continue
            offset = start + part.start() + part.group().index(value)
            found = _valid_phone(value)
            if found:
                yield offset, offset + len(value), found


def _valid_phone(value: str) -> float | None:
    digits = _digits(value)
    if not 7 <= len(digits) <= 15:
        return None
    if value.startswith(("+", "00")):
        try:
            number = phonenumbers.parse("+" + digits[2:] if value.startswith("00") else value)
        except phonenumbers.NumberParseException:
            return None
        return 0.9 if phonenumbers.is_valid_number(number) else None
    for region in _PHONE_REGIONS:
        if region != "US" and not digits.startswith("0"):
            continue  # national numbers of these countries start with the trunk prefix 0
        if region == "US" and not _US_NATIONAL.fullmatch(value):
            continue
        try:
            number = phonenumbers.parse(value, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return 0.8
    return None


# In priority order: on the same start and length, the earlier one wins.
_FINDERS: list[tuple[str, Finder]] = [
    ("MRZ", _mrz),
    ("EMAIL", _regex(_EMAIL, 0.95)),
    ("IBAN", _iban),
    ("FR_NIR", _fr_nir),
    ("DE_TAX_ID", _de_tax_id),
    ("PASSPORT", _passport),
    ("SSN", _checked(_SSN, _ssn_ok, 0.9)),
    ("CREDIT_CARD", _card),
    ("IP_ADDRESS", _ip),
    ("PHONE", _phone),
    ("DATE_OF_BIRTH", _dob),
    ("STREET_ADDRESS", _street),
    ("PERSON", find_names),
]
_PRIORITY = {kind: index for index, (kind, _) in enumerate(_FINDERS)}


def _trimmed(text: str, start: int, end: int, kind: str) -> tuple[int, int]:
    """The span without what surrounds the value: spaces and line breaks on both ends,
    trailing punctuation (an abbreviation's period stays in a street address)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and (
        text[end - 1].isspace()
        or text[end - 1] in ",;:-/"
        or (text[end - 1] == "." and kind != "STREET_ADDRESS")
    ):
        end -= 1
    return start, end


def scan(text: str, *, types: frozenset[str] | None = None) -> list[Finding]:
    """Non-overlapping findings, in text order (a longer, earlier match wins; on a tie, the
    more specific type). ``types`` limits the scan (the benchmark measures one at a time)."""
    found: list[Finding] = []
    for kind, finder in _FINDERS:
        if types is not None and kind not in types:
            continue
        for start, end, confidence in finder(text):
            start, end = _trimmed(text, start, end, kind)
            if end > start:
                found.append(Finding(kind, start, end, confidence))
    found.sort(key=lambda f: (f.start, -(f.end - f.start), _PRIORITY[f.type]))
    result: list[Finding] = []
    for finding in found:
        if result and finding.start < result[-1].end:
            continue
        result.append(finding)
    return result


def mask_all(text: str) -> str:
    """Mask whatever the scanner finds now (for text without stored findings: headings,
    quotes, descriptions)."""
    return mask(text, [f.as_json() for f in scan(text)])


def mask(text: str, findings: list[dict[str, Any]]) -> str:
    """Replace each finding by ``[TYPE]``; offsets refer to the unmasked text."""
    parts: list[str] = []
    position = 0
    for f in sorted(findings, key=lambda f: int(f["start"])):
        start, end = int(f["start"]), int(f["end"])
        if start < position or end > len(text):
            continue
        parts.append(text[position:start])
        parts.append(f"[{f['type']}]")
        position = end
    parts.append(text[position:])
    return "".join(parts)
