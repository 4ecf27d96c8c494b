"""The labelled PII corpus: sentences in English, German and French with the exact spans of
the personal values they hold, and near misses that hold none (wrong check digits, numbers
without the context that makes them personal, words that are also first names).

``tests/data/pii_corpus.jsonl`` is what this module's ``build()`` wrote
(``python -m tests.pii_corpus`` writes it again); its values are generated with their real
check digits from a fixed seed, never taken from real people. ``evaluate`` gives precision
and recall per type, counting a finding as right only when its type and both offsets are
exact (masking must replace the value, nothing more, nothing less). The test
(tests/test_pii_corpus.py) and the benchmark (bench/pii.py) share it."""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stdnum import iban as stdnum_iban
from stdnum.iso7064 import mod_11_10

CORPUS = Path(__file__).parent / "data" / "pii_corpus.jsonl"
# Types with a pattern and a check: their figures are asserted (>= 0.9). PERSON is measured
# and recorded only.
PATTERN_TYPES = (
    "EMAIL",
    "PHONE",
    "SSN",
    "CREDIT_CARD",
    "IBAN",
    "PASSPORT",
    "MRZ",
    "DE_TAX_ID",
    "FR_NIR",
    "IP_ADDRESS",
    "DATE_OF_BIRTH",
    "STREET_ADDRESS",
)
TYPES = (*PATTERN_TYPES, "PERSON")
LANGUAGES = ("en", "de", "fr")


@dataclass(frozen=True)
class Example:
    id: str
    language: str
    text: str
    spans: tuple[tuple[str, int, int], ...]
    note: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "language": self.language,
            "text": self.text,
            "spans": [list(s) for s in self.spans],
            "note": self.note,
        }


def fill(
    template: str, values: dict[str, tuple[str, str]]
) -> tuple[str, list[tuple[str, int, int]]]:
    """``template`` with ``{key}`` replaced by values; each value's span where its type is
    not empty."""
    text = ""
    spans: list[tuple[str, int, int]] = []
    rest = template
    while "{" in rest:
        before, _, after = rest.partition("{")
        key, _, rest = after.partition("}")
        text += before
        kind, value = values[key]
        if kind:
            spans.append((kind, len(text), len(text) + len(value)))
        text += value
    return text + rest, spans


# --- value generators --------------------------------------------------------------------------

R = random.Random


def _digits(r: R, n: int) -> str:
    return "".join(r.choice(string.digits) for _ in range(n))


def _luhn_digit(partial: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def card(r: R, *, valid: bool = True) -> str:
    prefix, length, groups = r.choice(
        [("4", 16, (4, 4, 4, 4)), ("51", 16, (4, 4, 4, 4)), ("37", 15, (4, 6, 5))]
    )
    body = prefix + _digits(r, length - len(prefix) - 1)
    check = _luhn_digit(body)
    if not valid:
        check = str((int(check) + r.randint(1, 9)) % 10)
    number = body + check
    sep = r.choice([" ", "-", ""])
    parts, at = [], 0
    for g in groups:
        parts.append(number[at : at + g])
        at += g
    return sep.join(parts)


IBAN_FORMATS = {"DE": 18, "FR": 23, "GB": 18, "AT": 16, "NL": 14, "IT": 23, "CH": 17}


def iban(r: R, *, valid: bool = True, spaced: bool | None = None) -> str:
    country = r.choice(sorted(IBAN_FORMATS))
    n = IBAN_FORMATS[country]
    if country == "GB":
        bban = r.choice(["NWBK", "BARC", "LOYD"]) + _digits(r, 14)
    elif country == "NL":
        bban = r.choice(["ABNA", "INGB", "RABO"]) + _digits(r, 10)
    elif country == "IT":
        bban = r.choice(string.ascii_uppercase) + _digits(r, 22)
    elif country == "FR":
        bban = _digits(r, 21) + _digits(r, 2)
    else:
        bban = _digits(r, n)
    check = stdnum_iban.calc_check_digits(country + "00" + bban)
    if not valid:
        check = f"{(int(check) + r.randint(1, 50)) % 97 + 2:02d}"
        if stdnum_iban.is_valid(country + check + bban):
            check = f"{(int(check) + 1) % 97 + 2:02d}"
    compact = country + check + bban
    if spaced is None:
        spaced = r.random() < 0.6
    if spaced:
        return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    return compact


def tax_id(r: R, *, valid: bool = True) -> str:
    while True:
        digits = [r.choice("123456789")] + [r.choice(string.digits) for _ in range(9)]
        counts = {d: digits.count(d) for d in digits}
        if sorted(counts.values(), reverse=True)[:2] in ([2, 1], [3, 1]):
            break
    body = "".join(digits)
    check = mod_11_10.calc_check_digit(body)
    if not valid:
        check = str((int(check) + r.randint(1, 9)) % 10)
    number = body + check
    if r.random() < 0.4:
        return f"{number[:2]} {number[2:5]} {number[5:8]} {number[8:]}"
    return number


def nir(r: R, *, valid: bool = True) -> str:
    sex = r.choice("12")
    year = f"{r.randint(40, 99):02d}"
    month = f"{r.randint(1, 12):02d}"
    department = f"{r.randint(1, 95):02d}"
    body = sex + year + month + department + _digits(r, 3) + _digits(r, 3)
    key = 97 - int(body) % 97
    if not valid:
        key = (key + r.randint(1, 40)) % 97 + 1
    spaced = r.random() < 0.6
    if spaced:
        return f"{body[0]} {body[1:3]} {body[3:5]} {body[5:7]} {body[7:10]} {body[10:13]} {key:02d}"
    return f"{body}{key:02d}"


def _mrz_digit(field: str) -> str:
    total = 0
    for i, ch in enumerate(field):
        value = int(ch) if ch.isdigit() else (ord(ch) - 55 if ch.isalpha() else 0)
        total += value * (7, 3, 1)[i % 3]
    return str(total % 10)


SURNAMES = {
    "en": [
        "Smith",
        "Johnson",
        "Williams",
        "Brown",
        "Jones",
        "Miller",
        "Davis",
        "Wilson",
        "Taylor",
        "Anderson",
        "Thomas",
        "Moore",
        "Jackson",
        "Harris",
        "Clark",
        "Lewis",
        "Walker",
        "Hall",
        "Allen",
        "Wright",
    ],
    "de": [
        "Müller",
        "Schmidt",
        "Schneider",
        "Fischer",
        "Weber",
        "Meyer",
        "Wagner",
        "Becker",
        "Schulz",
        "Hoffmann",
        "Koch",
        "Richter",
        "Klein",
        "Wolf",
        "Schröder",
        "Neumann",
        "Schwarz",
        "Zimmermann",
        "Braun",
        "Krüger",
    ],
    "fr": [
        "Martin",
        "Bernard",
        "Dubois",
        "Thomas",
        "Robert",
        "Richard",
        "Petit",
        "Durand",
        "Leroy",
        "Moreau",
        "Simon",
        "Laurent",
        "Lefebvre",
        "Michel",
        "Garcia",
        "David",
        "Bertrand",
        "Roux",
        "Vincent",
        "Fournier",
    ],
}
FIRST_NAMES = {
    "en": [
        "James",
        "Mary",
        "John",
        "Patricia",
        "Robert",
        "Jennifer",
        "Michael",
        "Linda",
        "David",
        "Elizabeth",
        "Sarah",
        "Thomas",
        "Karen",
        "Daniel",
        "Nancy",
        "Paul",
        "Emily",
        "Andrew",
        "Jessica",
        "Steven",
    ],
    "de": [
        "Jürgen",
        "Ursula",
        "Klaus",
        "Sabine",
        "Wolfgang",
        "Petra",
        "Stefan",
        "Andrea",
        "Thomas",
        "Monika",
        "Andreas",
        "Birgit",
        "Michael",
        "Susanne",
        "Matthias",
        "Claudia",
        "Tobias",
        "Katrin",
        "Florian",
        "Anja",
    ],
    "fr": [
        "Jean",
        "Marie",
        "Philippe",
        "Nathalie",
        "Michel",
        "Isabelle",
        "Alain",
        "Sylvie",
        "Nicolas",
        "Catherine",
        "Pierre",
        "Sophie",
        "Laurent",
        "Valérie",
        "Julien",
        "Céline",
        "François",
        "Aurélie",
        "Olivier",
        "Camille",
    ],
}


# Names a gazetteer of frequent first names may not hold (recent, regional or from other
# countries), drawn for a third of the PERSON examples.
RARE_FIRST_NAMES = {
    "en": [
        "Aaliyah",
        "Jaxon",
        "Kwame",
        "Priya",
        "Oluwaseun",
        "Siobhan",
        "Tadhg",
        "Nkechi",
        "Rhiannon",
        "Declan",
    ],
    "de": [
        "Svenja",
        "Jannik",
        "Aylin",
        "Kemal",
        "Malte",
        "Merle",
        "Fynn",
        "Lasse",
        "Ilka",
        "Wiebke",
    ],
    "fr": [
        "Maël",
        "Thibault",
        "Gwendal",
        "Enzo",
        "Yannick",
        "Soizic",
        "Loïc",
        "Anaïs",
        "Nolwenn",
        "Brieuc",
    ],
}
RARE_SURNAMES = {
    "en": [
        "Okafor",
        "Nakamura",
        "Fitzgerald",
        "Oyelaran",
        "Pemberton",
        "Quigley",
        "Raman",
        "Achterberg",
    ],
    "de": [
        "Kowalczyk",
        "Yilmaz",
        "Brinkmann",
        "Hinrichsen",
        "Oltmanns",
        "Tiedemann",
        "Vogelsang",
        "Heinemeier",
    ],
    "fr": ["Quéméner", "Kerbrat", "Nguyen", "Bensaïd", "Garnier", "Courtois", "Lefèvre", "Abgrall"],
}


def mrz(r: R, *, valid: bool = True) -> str:
    surname = r.choice(SURNAMES["en"] + SURNAMES["fr"]).upper()
    given = r.choice(FIRST_NAMES["en"] + FIRST_NAMES["fr"]).upper()
    surname = surname.replace("Ü", "UE").replace("Ö", "OE")
    given = given.replace("É", "E").replace("Ç", "C")
    country = r.choice(["D<<", "FRA", "GBR", "USA", "AUT"])
    if r.random() < 0.6:
        names = f"{surname}<<{given}"
        line1 = f"P<{country}{names}".ljust(44, "<")[:44]
        number = r.choice(string.ascii_uppercase[:8]) + _digits(r, 8)
        birth = f"{r.randint(40, 99):02d}{r.randint(1, 12):02d}{r.randint(1, 28):02d}"
        expiry = f"{r.randint(25, 35):02d}{r.randint(1, 12):02d}{r.randint(1, 28):02d}"
        optional = "<" * 14
        line2 = (
            number
            + _mrz_digit(number)
            + country
            + birth
            + _mrz_digit(birth)
            + r.choice("MF")
            + expiry
            + _mrz_digit(expiry)
            + optional
            + _mrz_digit(optional)
        )
        composite = _mrz_digit(line2[0:10] + line2[13:20] + line2[21:43])
        line2 += composite
        lines = [line1, line2]
        broken = 1
    else:
        number = r.choice(string.ascii_uppercase[:8]) + _digits(r, 8)
        line1 = f"I<{country}{number}{_mrz_digit(number)}".ljust(30, "<")
        birth = f"{r.randint(40, 99):02d}{r.randint(1, 12):02d}{r.randint(1, 28):02d}"
        expiry = f"{r.randint(25, 35):02d}{r.randint(1, 12):02d}{r.randint(1, 28):02d}"
        line2 = (
            birth + _mrz_digit(birth) + r.choice("MF") + expiry + _mrz_digit(expiry) + country
        ).ljust(29, "<")
        composite = _mrz_digit(line1[5:30] + line2[0:7] + line2[8:15] + line2[18:29])
        line2 += composite
        line3 = f"{surname}<<{given}".ljust(30, "<")[:30]
        lines = [line1, line2, line3]
        broken = 1
    if not valid:
        line = lines[broken]
        position = next(i for i in range(len(line) - 1, -1, -1) if line[i].isdigit())
        lines[broken] = (
            line[:position]
            + str((int(line[position]) + r.randint(1, 9)) % 10)
            + line[position + 1 :]
        )
    return "\n".join(lines)


def passport_number(r: R) -> str:
    return r.choice(
        [
            lambda: _digits(r, 9),  # US, UK
            lambda: (
                r.choice("CFGHJK")
                + "".join(r.choice("0123456789CFGHJKLMNPRTVWXYZ") for _ in range(8))
            ),
            lambda: _digits(r, 2) + r.choice(string.ascii_uppercase) * 2 + _digits(r, 5),  # FR
        ]
    )()


def us_phone(r: R) -> str:
    area = r.choice(["212", "415", "312", "617", "202", "305", "206", "512", "303", "404"])
    exchange = f"{r.randint(2, 9)}{_digits(r, 2)}"
    line = _digits(r, 4)
    return r.choice(
        [
            f"({area}) {exchange}-{line}",
            f"{area}-{exchange}-{line}",
            f"+1 {area} {exchange} {line}",
            f"{area}.{exchange}.{line}",
        ]
    )


def de_phone(r: R) -> str:
    return r.choice(
        [
            f"030 {_digits(r, 8)}",
            f"+49 30 {_digits(r, 8)}",
            f"089 {_digits(r, 7)}",
            f"+49 89 {_digits(r, 7)}",
            f"0171 {_digits(r, 7)}",
            f"+49 171 {_digits(r, 7)}",
            f"040 {_digits(r, 4)} {_digits(r, 4)}",
            f"0221 {_digits(r, 7)}",
            f"+49 (0)30 {_digits(r, 8)}",
            f"030/{_digits(r, 7)}",
            f"0049 89 {_digits(r, 7)}",
        ]
    )


def fr_phone(r: R) -> str:
    pairs = f"{r.randint(10, 38)} " + " ".join(_digits(r, 2) for _ in range(3))
    return r.choice(
        [
            f"01 {pairs}",
            f"+33 1 {pairs}",
            f"06 {pairs}",
            f"+33 6 {pairs}",
            f"04 {pairs}",
            f"0{r.randint(1, 5)}.{pairs.replace(' ', '.')}",
            f"+33 (0)1 {pairs}",
        ]
    )


def uk_phone(r: R) -> str:
    return r.choice(
        [f"020 7946 {_digits(r, 4)}", f"+44 20 7946 {_digits(r, 4)}", f"0161 496 {_digits(r, 4)}"]
    )


def ssn(r: R) -> str:
    area = r.choice([n for n in range(1, 900) if n != 666])
    return f"{area:03d}-{r.randint(1, 99):02d}-{r.randint(1, 9999):04d}"


def ip(r: R) -> str:
    return ".".join(str(r.randint(1, 254)) for _ in range(4))


def email(r: R, language: str) -> str:
    first = r.choice(FIRST_NAMES[language]).lower()
    last = r.choice(SURNAMES[language]).lower()
    for a, b in (("ü", "ue"), ("ö", "oe"), ("é", "e"), ("ç", "c"), ("ç", "c")):
        first, last = first.replace(a, b), last.replace(a, b)
    domain = r.choice(
        {
            "en": ["example.com", "acme.co.uk", "mail.example.org"],
            "de": ["beispiel.de", "firma-gmbh.de", "example.com"],
            "fr": ["exemple.fr", "societe.fr", "example.com"],
        }[language]
    )
    return r.choice(
        [f"{first}.{last}@{domain}", f"{first[0]}{last}@{domain}", f"{last}+legal@{domain}"]
    )


def birth_date(r: R, language: str) -> str:
    day, month, year = r.randint(1, 28), r.randint(1, 12), r.randint(1940, 2005)
    months = {
        "en": "January February March April May June July August September October November "
        "December",
        "de": "Januar Februar März April Mai Juni Juli August September Oktober November Dezember",
        "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre "
        "décembre",
    }[language].split()
    if language == "en":
        return r.choice(
            [
                f"{month:02d}/{day:02d}/{year}",
                f"{months[month - 1]} {day}, {year}",
                f"{year}-{month:02d}-{day:02d}",
            ]
        )
    if language == "de":
        return r.choice([f"{day:02d}.{month:02d}.{year}", f"{day}. {months[month - 1]} {year}"])
    return r.choice([f"{day:02d}/{month:02d}/{year}", f"{day} {months[month - 1]} {year}"])


def street(r: R, language: str) -> str:
    if language == "en":
        name = r.choice(
            ["Main", "Oak", "Maple", "Cedar", "Elm", "Park", "Lake Shore", "Washington"]
        )
        kind = r.choice(["Street", "Avenue", "Road", "Boulevard", "Lane", "Drive", "St.", "Ave."])
        return f"{r.randint(1, 9999)} {name} {kind}"
    if language == "de":
        name = r.choice(
            ["Haupt", "Bahnhof", "Schiller", "Goethe", "Linden", "Berliner ", "Garten", "Kirch"]
        )
        kind = r.choice(["straße", "str.", "weg", "allee", "platz"])
        if name.endswith(" "):
            kind = r.choice(["Straße", "Allee", "Platz"])
        return f"{name}{kind} {r.randint(1, 200)}{r.choice(['', '', 'a'])}"
    kind = r.choice(["rue", "avenue", "boulevard", "place", "allée", "chemin"])
    name = r.choice(
        [
            "de la Paix",
            "Victor Hugo",
            "du Général Leclerc",
            "des Lilas",
            "Jean Jaurès",
            "de la République",
        ]
    )
    return f"{r.randint(1, 150)}{r.choice(['', '', ' bis'])} {kind} {name}"


# --- templates ---------------------------------------------------------------------------------

# Per type and language: sentences holding one value ({v}), and near misses ({n}: a value the
# type must not report, unlabelled).
POSITIVE: dict[str, dict[str, list[str]]] = {
    "EMAIL": {
        "en": [
            "Notices shall be sent to {v}.",
            "Contact: {v}",
            "Questions go to {v} within ten days.",
        ],
        "de": [
            "Mitteilungen sind an {v} zu richten.",
            "Kontakt: {v}",
            "Bitte schreiben Sie an {v}.",
        ],
        "fr": [
            "Les notifications sont adressées à {v}.",
            "Contact : {v}",
            "Écrire à {v} avant le terme.",
        ],
    },
    "PHONE": {
        "en": [
            "Call the account manager on {v} during business hours.",
            "Phone: {v}",
            "Reach support at {v}.",
        ],
        "de": [
            "Telefonisch erreichbar unter {v}.",
            "Tel.: {v}",
            "Rückfragen bitte an {v} richten.",
        ],
        "fr": ["Joignable au {v} en semaine.", "Tél. : {v}", "Appelez le service client au {v}."],
    },
    "SSN": {
        "en": ["The employee's SSN is {v}.", "Social Security Number: {v}"],
        "de": ["Die US-Sozialversicherungsnummer lautet {v}.", "SSN (USA): {v}"],
        "fr": ["Numéro de sécurité sociale américain : {v}.", "SSN du salarié : {v}"],
    },
    "CREDIT_CARD": {
        "en": ["Charge the card {v} monthly.", "Card number: {v}"],
        "de": ["Abbuchung von der Kreditkarte {v}.", "Kartennummer: {v}"],
        "fr": ["Prélèvement sur la carte {v} chaque mois.", "Numéro de carte : {v}"],
    },
    "IBAN": {
        "en": ["Payments are made to IBAN {v}.", "Bank account: {v}, BIC DEUTDEFF."],
        "de": ["Zahlungen erfolgen auf das Konto {v}.", "IBAN: {v}"],
        "fr": ["Les paiements sont versés sur le compte {v}.", "IBAN : {v}"],
    },
    "PASSPORT": {
        "en": ["Passport No. {v}, issued in 2021.", "Her passport number is {v}.", "passport: {v}"],
        "de": ["Reisepass-Nr. {v}, ausgestellt 2019.", "Reisepassnummer: {v}", "Pass-Nr.: {v}"],
        "fr": [
            "Passeport n° {v}, délivré en 2020.",
            "Numéro de passeport : passeport {v}",
            "passeport : {v}",
        ],
    },
    "MRZ": {
        "en": ["Machine-readable zone:\n{v}\nEnd of copy.", "{v}"],
        "de": ["Maschinenlesbare Zone:\n{v}\nEnde der Kopie.", "{v}"],
        "fr": ["Bande MRZ :\n{v}\nFin de la copie.", "{v}"],
    },
    "DE_TAX_ID": {
        "en": ["German tax ID: {v}.", "The employee's Steuer-ID is {v}."],
        "de": [
            "Steuer-ID: {v}",
            "Steuerliche Identifikationsnummer {v} des Arbeitnehmers.",
            "IdNr. {v}",
        ],
        "fr": ["Numéro fiscal allemand (Steuer-ID) : {v}.", "Identifiant fiscal : {v}"],
    },
    "FR_NIR": {
        "en": ["French social security number: {v}.", "NIR {v} on file."],
        "de": ["Französische Sozialversicherungsnummer: {v}.", "NIR: {v}"],
        "fr": ["Numéro de sécurité sociale : {v}.", "NIR {v}", "N° INSEE : {v}"],
    },
    "IP_ADDRESS": {
        "en": ["Access is allowed from {v} only.", "Server address: {v}"],
        "de": ["Zugriff nur von {v} aus.", "Server-Adresse: {v}"],
        "fr": ["Accès autorisé depuis {v} uniquement.", "Adresse du serveur : {v}"],
    },
    "DATE_OF_BIRTH": {
        "en": ["The tenant was born on {v}.", "Date of birth: {v}", "DOB: {v}"],
        "de": ["Der Mieter ist geboren am {v}.", "Geburtsdatum: {v}", "geb. {v}"],
        "fr": ["Le locataire, né le {v}, déclare.", "Date de naissance : {v}", "née le {v}"],
    },
    "STREET_ADDRESS": {
        "en": ["The premises at {v}, Springfield.", "Deliver to {v} by noon."],
        "de": ["Die Räume in der {v}, 10115 Berlin.", "Lieferung an {v} in München."],
        "fr": ["Les locaux situés {v}, 75008 Paris.", "Livraison au {v} à Lyon."],
    },
    "PERSON": {
        "en": [
            "This agreement is signed by {v} for the Supplier.",
            "{v} shall act as project lead.",
            "Mr. {s} confirmed the order.",
            "Attention: {v}",
            "The report was reviewed by {v} and the board.",
            "Minutes taken by {v}.",
            "Dear {f}, please find the draft attached.",
            "The parties appoint {v} as arbitrator.",
        ],
        "de": [
            "Der Vertrag wird von {v} unterzeichnet.",
            "Ansprechpartner ist {v}.",
            "Herr {s} bestätigt den Auftrag.",
            "Frau {s} übernimmt die Leitung.",
            "vertreten durch {v}",
            "{v} wird als Schlichter bestellt.",
            "Protokoll: {v}",
            "Die Prüfung übernimmt {v} bis Ende Mai.",
        ],
        "fr": [
            "Le contrat est signé par {v} pour le fournisseur.",
            "Madame {v} assure la direction du projet.",
            "M. {s} confirme la commande.",
            "représentée par {v}, gérant",
            "Monsieur {s} accepte les conditions.",
            "{v} est désigné comme arbitre.",
            "Rédigé par {v}.",
            "Le dossier est suivi par {v} depuis mars.",
        ],
    },
}

NEGATIVE: dict[str, dict[str, list[str]]] = {
    "EMAIL": {
        "en": [
            "Write to legal at example dot com.",
            "Follow @acme_legal for updates.",
            "The address user@localhost is internal.",
        ],
        "de": [
            "Schreiben Sie an info [at] firma.de.",
            "Kontakt über @firma auf Twitter.",
            "Die Adresse admin@intranet gilt intern.",
        ],
        "fr": [
            "Écrire à contact (arobase) societe.fr.",
            "Suivez @societe pour les annonces.",
            "L'adresse root@serveur est interne.",
        ],
    },
    "PHONE": {
        "en": [
            "The invoice dated {d} is due.",
            "Order {o} ships today.",
            "Payment of USD {a} is due.",
            "Version {ver} fixes it.",
        ],
        "de": [
            "Die Rechnung vom {d} ist fällig.",
            "Auftrag {o} wird versandt.",
            "Der Betrag von {a} EUR ist fällig.",
            "Gemäß § 823 Abs. 1 BGB, Az. 12 O 345/21.",
        ],
        "fr": [
            "La facture du {d} est due.",
            "La commande {o} est expédiée.",
            "Le montant de {a} EUR est dû.",
            "Code postal 75008 Paris, SIRET 732 829 320 00074.",
        ],
    },
    "SSN": {
        "en": [
            "Invalid number 000-12-3456 was rejected.",
            "Reference 123-00-4567 is void.",
            "Part no. 1234-56-7890.",
        ],
        "de": [
            "Die Nummer 666-12-3456 ist ungültig.",
            "Artikel 987-65-432 ist vergriffen.",
            "Datum 2021-03-15.",
        ],
        "fr": ["Le numéro 123-45-0000 est invalide.", "Référence 12-345-6789.", "Date 2021-03-15."],
    },
    "CREDIT_CARD": {
        "en": [
            "Card {bad} was declined as invalid.",
            "Tracking number {track}.",
            "Order 4711 0815 2024 0001 received.",
        ],
        "de": [
            "Die Karte {bad} ist ungültig.",
            "Sendungsnummer {track}.",
            "Auftrag 4711 0815 2024 0001 eingegangen.",
        ],
        "fr": [
            "La carte {bad} est invalide.",
            "Numéro de suivi {track}.",
            "Commande 4711 0815 2024 0001 reçue.",
        ],
    },
    "IBAN": {
        "en": [
            "The account {bad} failed validation.",
            "Reference DE-2024-0042-7 is internal.",
            "Code AB12 CDEF GHIJ KLMN.",
        ],
        "de": [
            "Das Konto {bad} ist ungültig.",
            "Aktenzeichen DE 2024 0042 7.",
            "Kennung XY99 1234 5678 9012.",
        ],
        "fr": [
            "Le compte {bad} est invalide.",
            "Référence FR-2024-0042.",
            "Code ZZ00 1111 2222 3333.",
        ],
    },
    "PASSPORT": {
        "en": [
            "Order number {num} was shipped.",
            "The password is stored hashed; bypass 123456789 is refused.",
            "Bring your passport to the meeting.",
        ],
        "de": [
            "Bestellnummer {num} wurde versandt.",
            "Passwort: geheim123, Reisepass bitte mitbringen.",
            "Der Pass ist bis 2030 gültig.",
        ],
        "fr": [
            "Numéro de commande {num} expédié.",
            "Le passeport doit être présenté à l'accueil.",
            "Le mot de passe 12345678 est refusé.",
        ],
    },
    "MRZ": {
        "en": ["Copy with damaged zone:\n{bad}\nEnd of copy."],
        "de": ["Kopie mit beschädigter Zone:\n{bad}\nEnde."],
        "fr": ["Copie avec zone abîmée :\n{bad}\nFin."],
    },
    "DE_TAX_ID": {
        "en": [
            "Customer number {bad} is closed.",
            "Contract no. 12345678901.",
            "Order 98765432100.",
        ],
        "de": [
            "Kundennummer {bad} ist geschlossen.",
            "Vertragsnummer 12345678901.",
            "Steuer-ID {bad} ist ungültig.",
        ],
        "fr": ["Numéro client {bad} clôturé.", "Contrat n° 12345678901.", "Référence {bad}."],
    },
    "FR_NIR": {
        "en": ["Reference {bad} is invalid.", "SIRET 732 829 320 00074 of the company."],
        "de": ["Referenz {bad} ist ungültig.", "SIRET 732 829 320 00074 der Gesellschaft."],
        "fr": ["Le numéro {bad} est erroné.", "SIRET 732 829 320 00074 de la société."],
    },
    "IP_ADDRESS": {
        "en": [
            "Version 1.2.3 is current.",
            "The value 256.300.1.1 is out of range.",
            "Clause 10.2.3 applies.",
        ],
        "de": [
            "Version 2.4.1 ist aktuell.",
            "Der Wert 999.1.1.1 ist ungültig.",
            "Ziffer 3.1.2 gilt.",
        ],
        "fr": [
            "La version 3.0.2 est en vigueur.",
            "La valeur 300.2.2.2 est invalide.",
            "L'article 4.2.1 s'applique.",
        ],
    },
    "DATE_OF_BIRTH": {
        "en": [
            "The effective date is {d}.",
            "Signed on {d} in London.",
            "A new company was born from the merger.",
        ],
        "de": [
            "Das Datum des Inkrafttretens ist {d}.",
            "Unterzeichnet am {d} in Berlin.",
            "Die Idee wurde 2019 geboren.",
        ],
        "fr": [
            "La date d'effet est le {d}.",
            "Signé le {d} à Paris.",
            "La société est née de la fusion.",
        ],
    },
    "STREET_ADDRESS": {
        "en": [
            "The Wall Street Journal reported it.",
            "Section 12 applies to all Court filings.",
            "We met 3 Main Points.",
        ],
        "de": [
            "Die Straßenbahn fährt um 12 Uhr.",
            "Der Weg 5 Jahre lang ist lang.",
            "Abschnitt 12 gilt.",
        ],
        "fr": [
            "La rue est fermée depuis 12 jours.",
            "Article 5 du contrat.",
            "Les 3 avenues sont fermées.",
        ],
    },
    "PERSON": {
        "en": [
            "Mark the date in the calendar.",
            "Will the Supplier deliver on time?",
            "The Grant Agreement governs funding.",
            "Frank discussions took place.",
            "The May Report is attached.",
            "Services are provided by Acme Holdings Limited.",
            "Delivery to Victoria Station by Friday.",
            "Payment in Sterling only.",
        ],
        "de": [
            "Die Haftung des Lieferanten ist begrenzt.",
            "Der Vertrag gilt ab August.",
            "Die Kündigung bedarf der Schriftform.",
            "Frankfurt am Main ist Gerichtsstand.",
            "Die Gesellschaft mit beschränkter Haftung haftet.",
            "Ernst und Young prüfen den Abschluss.",
            "Die Deutsche Bank AG ist Zahlstelle.",
            "Gerichtsstand ist Sankt Augustin.",
        ],
        "fr": [
            "La Société Générale est la banque.",
            "Le contrat prend effet en Avril.",
            "La Rose des Vents est un hôtel.",
            "Le fournisseur Saint-Gobain livre.",
            "La Pierre angulaire du projet.",
            "Le Tribunal de Commerce de Paris est compétent.",
            "Livraison à la Gare Saint-Lazare.",
            "La Banque de France est dépositaire.",
        ],
    },
}


def _negative_values(r: R, kind: str) -> dict[str, tuple[str, str]]:
    return {
        "d": ("", r.choice(["15.01.2024", "2024-01-15", "01/15/2024", "3.4.2023"])),
        "o": ("", r.choice(["4711-0815-22", "2024-000123", "A-554433", "12-3456-7890"])),
        "a": ("", r.choice(["1.234.567,00", "12,500.00", "250 000,00", "1 234 567"])),
        "ver": ("", r.choice(["10.4.22", "2.15.3", "4.1.0.7"])),
        "track": (
            "",
            r.choice(["1Z999AA10123456784", "JJD000390007880000", "00340434161094042557"]),
        ),
        "num": ("", passport_number(r)),
        "bad": (
            "",
            {
                "CREDIT_CARD": lambda: card(r, valid=False),
                "IBAN": lambda: iban(r, valid=False),
                "MRZ": lambda: mrz(r, valid=False),
                "DE_TAX_ID": lambda: tax_id(r, valid=False),
                "FR_NIR": lambda: nir(r, valid=False),
            }.get(kind, lambda: "")(),
        ),
    }


def _positive_value(r: R, kind: str, language: str) -> dict[str, tuple[str, str]]:
    rare = kind == "PERSON" and r.random() < 1 / 3
    first = r.choice((RARE_FIRST_NAMES if rare else FIRST_NAMES)[language])
    last = r.choice((RARE_SURNAMES if rare else SURNAMES)[language])
    makers: dict[str, Callable[[], str]] = {
        "EMAIL": lambda: email(r, language),
        "PHONE": lambda: {"en": r.choice([us_phone, uk_phone]), "de": de_phone, "fr": fr_phone}[
            language
        ](r),
        "SSN": lambda: ssn(r),
        "CREDIT_CARD": lambda: card(r),
        "IBAN": lambda: iban(r),
        "PASSPORT": lambda: passport_number(r),
        "MRZ": lambda: mrz(r),
        "DE_TAX_ID": lambda: tax_id(r),
        "FR_NIR": lambda: nir(r),
        "IP_ADDRESS": lambda: ip(r),
        "DATE_OF_BIRTH": lambda: birth_date(r, language),
        "STREET_ADDRESS": lambda: street(r, language),
        "PERSON": lambda: f"{first} {last}",
    }
    return {
        "v": (kind, makers[kind]()),
        "s": ("PERSON", last),
        "f": ("PERSON", first),
    }


# Contract passages written by hand, several values each among numbers and names that are
# not personal: values are marked [[TYPE|value]].
PASSAGES: dict[str, list[str]] = {
    "en": [
        "This Agreement is made on 12 March 2024 between Acme Holdings Limited and "
        "[[PERSON|Sarah Mitchell]], born on [[DATE_OF_BIRTH|04/17/1981]], residing at "
        "[[STREET_ADDRESS|221 Baker Street]], London. Fees of GBP 12,500.00 are paid to "
        "[[IBAN|GB82 WEST 1234 5698 7654 32]] within 30 days of invoice no. 2024-0042.",
        "Notices: [[PERSON|Daniel Okafor]], General Counsel, [[EMAIL|d.okafor@acme.example]], "
        "tel. [[PHONE|+44 20 7946 0958]]. Clause 14.2.1 applies; version 3.1.4 of the "
        "Schedule is attached.",
        "The Grant Agreement (ref. GA-101004) is signed by Mr. [[PERSON|Hargreaves]] for the "
        "Supplier. Payment by card [[CREDIT_CARD|4111 1111 1111 1111]] was declined on "
        "2024-01-15; order 4711-0815-22 stays open.",
        "Will the Supplier deliver to [[STREET_ADDRESS|10 Downing Street]]? Mark the date: "
        "May 5. Contact "
        "[[PHONE|(212) 555-0147]] or the server at [[IP_ADDRESS|192.168.10.24]].",
        "Passport No. [[PASSPORT|533401372]] of [[PERSON|Emily Carter]] was copied; her SSN "
        "[[SSN|123-45-6789]] is on file. Sterling amounts only; Frank discussions followed.",
        "Signed by [[PERSON|James O'Neill]] and witnessed by [[PERSON|Linda Shaw]] on "
        "behalf of Christian Dior SE, Victoria Station branch, unit 4.2.1.",
    ],
    "de": [
        "Zwischen der Muster GmbH und Herrn [[PERSON|Jürgen Becker]], geboren am "
        "[[DATE_OF_BIRTH|12.03.1975]], wohnhaft [[STREET_ADDRESS|Lindenstraße 14]], 10115 "
        "Berlin, wird folgender Vertrag geschlossen. Die Vergütung von 12.500,00 EUR wird auf "
        "das Konto [[IBAN|DE89 3704 0044 0532 0130 00]] überwiesen.",
        "Ansprechpartnerin ist Frau [[PERSON|Sabine Krüger]], erreichbar unter "
        "[[PHONE|030 12345678]] oder [[EMAIL|s.krueger@muster-gmbh.example]]. Gemäß § 823 "
        "Abs. 1 BGB, Az. 12 O 345/21, gilt Ziffer 4.2.1.",
        "Die Steuer-ID des Arbeitnehmers lautet [[DE_TAX_ID|86095742719]]; Personalnummer "
        "12345678901 und Kostenstelle 4711 bleiben intern. Der Vertrag beginnt am 01.08.2024.",
        "Der Reisepass Nr. [[PASSPORT|C01X00T47]] von [[PERSON|Tobias Hoffmann]] wurde "
        "geprüft. Die Deutsche Bank AG ist Zahlstelle, Gerichtsstand ist Frankfurt am Main.",
        "Maschinenlesbare Zone der Kopie:\n"
        "[[MRZ|P<D<<MUSTERMANN<<ERIKA<<<<<<<<<<<<<<<<<<<<<<\n"
        "C01X00T478D<<6408125F2702283<<<<<<<<<<<<<<<4]]\nEnde der Kopie.",
        "Vertreten durch [[PERSON|Anja Schröder]], Prokuristin; Mobil [[PHONE|0171 2345678]]. "
        "Die Haftung ist auf 250 000,00 EUR begrenzt; Ernst und Young prüfen den Abschluss.",
    ],
    "fr": [
        "Entre la société Exemple SAS et Madame [[PERSON|Nathalie Dubois]], née le "
        "[[DATE_OF_BIRTH|3 mars 1982]], demeurant [[STREET_ADDRESS|12 rue de la Paix]], 75002 "
        "Paris, il est convenu ce qui suit. Le montant de 12 500,00 EUR est versé sur le "
        "compte [[IBAN|FR14 2004 1010 0505 0001 3M02 606]].",
        "Contact : M. [[PERSON|Laurent]], au [[PHONE|01 42 68 53 00]] ou "
        "[[EMAIL|contact@exemple-sas.example]]. SIRET 732 829 320 00074; article 4.2.1.",
        "Le numéro de sécurité sociale du salarié est [[FR_NIR|2 95 10 99 126 111 93]]; sa "
        "carte [[CREDIT_CARD|5555 5555 5555 4444]] sert aux frais. Facture du 15/01/2024.",
        "Le contrat est signé par [[PERSON|Julien Moreau]] pour le fournisseur Saint-Gobain. "
        "La Société Générale est la banque; la Pierre angulaire du projet est la livraison.",
        "Passeport n° [[PASSPORT|12AB34567]] de Monsieur [[PERSON|Olivier Bernard]], "
        "joignable au [[PHONE|+33 6 12 34 56 78]]. Livraison à la Gare Saint-Lazare.",
        "Représentée par [[PERSON|Céline Fournier]], gérante. Le serveur "
        "[[IP_ADDRESS|10.0.12.7]] héberge la version 2.4.1 du logiciel.",
    ],
}
_MARK = re.compile(r"\[\[([A-Z_]+)\|(.*?)\]\]", re.S)


def passage(marked: str) -> tuple[str, list[tuple[str, int, int]]]:
    """A passage's text and spans, from its [[TYPE|value]] marks."""
    text, spans, position = "", [], 0
    for match in _MARK.finditer(marked):
        text += marked[position : match.start()]
        spans.append((match.group(1), len(text), len(text) + len(match.group(2))))
        text += match.group(2)
        position = match.end()
    return text + marked[position:], spans


def build(seed: int = 19, per_language: int = 20) -> list[Example]:
    """``per_language`` positives and as many near misses per type and language."""
    r = random.Random(seed)
    examples: list[Example] = []
    for kind in TYPES:
        for language in LANGUAGES:
            for i in range(per_language):
                template = POSITIVE[kind][language][i % len(POSITIVE[kind][language])]
                text, spans = fill(template, _positive_value(r, kind, language))
                examples.append(
                    Example(f"{kind}-{language}-p{i}", language, text, tuple(spans), f"{kind}")
                )
            for i in range(per_language):
                template = NEGATIVE[kind][language][i % len(NEGATIVE[kind][language])]
                text, spans = fill(template, _negative_values(r, kind))
                examples.append(
                    Example(f"{kind}-{language}-n{i}", language, text, tuple(spans), f"not {kind}")
                )
    for language in LANGUAGES:
        for i, marked in enumerate(PASSAGES[language]):
            text, spans = passage(marked)
            examples.append(
                Example(f"passage-{language}-{i}", language, text, tuple(spans), "passage")
            )
    return examples


def load(path: Path = CORPUS) -> list[Example]:
    examples = []
    for line in path.read_text(encoding="utf-8").splitlines():
        raw = json.loads(line)
        examples.append(
            Example(
                raw["id"],
                raw["language"],
                raw["text"],
                tuple((str(t), int(s), int(e)) for t, s, e in raw["spans"]),
                raw["note"],
            )
        )
    return examples


@dataclass
class Score:
    type: str
    positives: int = 0
    predicted: int = 0
    exact: int = 0
    overlapping: int = 0

    @property
    def precision(self) -> float:
        return self.exact / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        return self.exact / self.positives if self.positives else 1.0

    def row(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "positives": self.positives,
            "found": self.predicted,
            "exact": self.exact,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "recall_overlapping": round(self.overlapping / self.positives, 4)
            if self.positives
            else 1.0,
        }


def evaluate(
    examples: Iterable[Example], scan: Callable[[str], Iterable[tuple[str, int, int]]]
) -> dict[str, Score]:
    """Per type: a finding counts when type and offsets equal a labelled span's."""
    scores = {kind: Score(kind) for kind in TYPES}
    for example in examples:
        gold = set(example.spans)
        found = {f for f in scan(example.text) if f[0] in scores}
        for kind, start, end in gold:
            scores[kind].positives += 1
            if any(k == kind and s < end and start < e for k, s, e in found):
                scores[kind].overlapping += 1
        for kind, start, end in found:
            scores[kind].predicted += 1
            if (kind, start, end) in gold:
                scores[kind].exact += 1
    return scores


def main() -> None:
    CORPUS.parent.mkdir(exist_ok=True)
    with CORPUS.open("w", encoding="utf-8") as out:
        for example in build():
            out.write(json.dumps(example.as_json(), ensure_ascii=False) + "\n")
    print(f"wrote {CORPUS}")


if __name__ == "__main__":
    main()
