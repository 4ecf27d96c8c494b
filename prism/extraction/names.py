"""People's names in text, without a language model: a gazetteer of first names (the
``gender-guesser`` package's dictionary, names frequent in English-, German- and
French-speaking countries) and context rules. A name is found after a title (Mr, Frau,
Madame, ...) or a role phrase (signed by, vertreten durch, représentée par, ...), or as a
known first name followed by a surname; first names that are also everyday words (Will,
Mark, Grant, August, ...) count only after a title or a role phrase. Everything runs in time
linear in the text."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from importlib import resources

Match = tuple[int, int, float]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# First names that are also everyday words (in one of the three languages) or months: only a
# title or a role phrase makes them a name.
_AMBIGUOUS = _words(
    """will may mark grant bill chase art guy rose june april august frank case sterling
    hope joy faith dawn summer miles lane dean rich ray page price hunter bishop major
    king carter don long young white brown black green gray grey love ernst christian
    sunny star iris lily penny ruby angel autumn winter storm rock cliff glen wood
    forest river sky honor justice trinity destiny harmony liberty sage said sun see son
    bay ben gay mai juni juli mars franc blanche constance prudence patience
    victoria florence paris london berlin marine avril toussaint noel noël pascal
    dominique fleur bonne aimé premier max lee van von der den die das des les une la le
    de du per par pour sans"""
)
# Capitalised words that follow a first name without being a surname.
_NOT_SURNAMES = _words(
    """agreement contract party parties company services service supplier customer client
    provider limited ltd inc llc gmbh ag sa sas sarl kg ohg se plc bank court street
    road section article clause schedule annex appendix the and or of for to in on at by
    with vertrag vertrags partei parteien gesellschaft kunde kunden lieferant
    auftraggeber auftragnehmer haftung kündigung laufzeit anlage artikel und oder der
    die das den dem des ein eine contrat société client fournisseur prestataire annexe
    article et ou le la les du des un une monday tuesday wednesday thursday friday
    saturday sunday january february march april may june july august september october
    november december januar februar märz juni juli oktober dezember janvier février
    mars avril mai juin juillet août septembre octobre novembre décembre lundi mardi
    mercredi jeudi vendredi samedi dimanche montag dienstag mittwoch donnerstag freitag
    samstag sonntag"""
)
_NAME_COUNTRIES = (0, 1, 2, 7, 8, 9, 12, 13, 14)  # GB IE US FR BE LU DE AT CH


@functools.cache
def first_names() -> frozenset[str]:
    """Lower-cased first names frequent (4+ of 13) in English-, German- or French-speaking
    countries, from the dictionary the ``gender-guesser`` package ships."""
    names: set[str] = set()
    data = resources.files("gender_guesser").joinpath("data/nam_dict.txt")
    with data.open(encoding="utf-8") as lines:
        for line in lines:
            if line[:1] in "#=" or len(line) < 31:
                continue
            name = line[3:29].strip()
            values = line[30:-1]
            frequent = any(
                i < len(values) and values[i] not in " " and int(values[i], 16) >= 4
                for i in _NAME_COUNTRIES
            )
            if frequent and len(name) > 1:
                for variant in {name.replace("+", "-"), name.replace("+", "")}:
                    names.add(variant.lower())
    return frozenset(names - _AMBIGUOUS)


# A capitalised word: "Müller", "Jean-Pierre", "O'Neill".
_CAP = r"[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ]*(?:['’-][A-ZÀ-ÖØ-Þ])?[a-zß-öø-ÿ]+(?:-[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ]+)?"
_PARTICLE = r"(?:(?:von|van|de|du|da|di|le|la|zu|von der|van der|de la)\s)"
_NAME_RUN = re.compile(
    rf"\b{_CAP}(?:\s(?:[A-Z]\.\s)?{_PARTICLE}?{_CAP}){{0,3}}\b",
)
_TITLE = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Herr|Herrn|Frau|Hr|Fr|Monsieur|Madame|Mademoiselle"
    r"|Mme|Mlle|Maître|Me)\.?|\bM\.)\s+(?:(?:Dr|Prof)\.\s+)?$"
)
_ROLE = re.compile(
    r"(?i:(?:signed by|represented by|attention|attn\.?|contact person|prepared by|reviewed by"
    r"|drafted by|erstellt von|geprüft von|rédigée? par|suivie? par"
    r"|vertreten durch|ansprechpartner(?:in)?|unterzeichnet von|z\.\s?hd\.?"
    r"|représentée? par|signé par|à l'attention de|interlocuteur)(?:\s(?:is|ist|est))?)[:\s]+$"
)


_TITLE_WORDS = _words("""herr herrn frau monsieur madame mademoiselle maître mister miss""")
_TITLE_ABBREVIATIONS = _words("mr mrs ms mx dr prof hr fr mme mlle me")
_SALUTATION_WORDS = _words("""dear hi hello liebe lieber hallo cher chère bonjour""")


# The last word of a title or a role phrase (a cheap test before the phrase's pattern).
_INTRO_ENDS = _words(
    """mr mrs ms miss mx dr prof herr herrn frau hr fr monsieur madame mademoiselle mme
    mlle maître me m by durch par attention attn person ansprechpartner
    ansprechpartnerin von hd de interlocuteur is ist est"""
)


def _introduced(text: str, start: int) -> bool:
    """A title or a role phrase stands right before ``start``."""
    before = text[max(0, start - 40) : start]
    words = before.split()
    if not words or words[-1].strip(".:").lower() not in _INTRO_ENDS:
        return False
    return bool(_TITLE.search(before) or _ROLE.search(before))


def find_names(text: str) -> Iterator[Match]:
    """Spans of names, with a confidence: 0.85 after a title or a role phrase, 0.75 for a
    known first name and a surname, 0.6 for a first name after a salutation."""
    names = first_names()
    for match in _NAME_RUN.finditer(text):
        run = match.group()
        words = run.split()
        offsets = [m.start() for m in re.finditer(r"\S+", run)]
        if words[0].lower() in _TITLE_ABBREVIATIONS and text[match.end() : match.end() + 1] == ".":
            continue  # "Mr." itself: the name after it is a run of its own
        for index, word in enumerate(words):
            lower = word.lower()
            rest = run[offsets[index] :]
            at = match.start() + offsets[index]
            if lower in _TITLE_WORDS or lower in _SALUTATION_WORDS:
                if index + 1 < len(words):
                    following = run[offsets[index + 1] :]
                    if lower in _TITLE_WORDS or following.split()[0].lower() in names:
                        span = _leading_name(following, limit=3)
                        if lower in _SALUTATION_WORDS and len(span.split()) == 1:
                            span_confidence = 0.6
                        else:
                            span_confidence = 0.85
                        start = match.start() + offsets[index + 1]
                        yield start, start + len(span), span_confidence
                break
            if index == 0 and _introduced(text, match.start()):
                span = _leading_name(rest, limit=3)
                yield at, at + len(span), 0.85
                break
            if lower in names:
                span = _leading_name(rest, limit=4)
                last = span.split()[-1].lower()
                if span != word and last not in _NOT_SURNAMES:
                    yield at, at + len(span), 0.75
                break


def _leading_name(run: str, *, limit: int) -> str:
    """The run's first words up to ``limit`` capitalised ones, stopping before a word that is
    not a surname (a company form, a month, a contract word)."""
    kept: list[str] = []
    capitals = 0
    for word in run.split():
        if word.lower() in _NOT_SURNAMES and kept:
            break
        kept.append(word)
        if word[:1].isupper() and not re.fullmatch(r"[A-Z]\.", word):
            capitals += 1
            if capitals >= limit:
                break
    while kept and not kept[-1][:1].isupper():
        kept.pop()  # never end on a particle
    return " ".join(kept) if kept else run.split()[0]
