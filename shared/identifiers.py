"""Validation and normalisation of the identifiers agencies send about children.

An NHS number, a Unique Pupil Number (UPN) or a postcode that fails its rule is refused at the
edge (422, naming the field and the rule) rather than stored: the linking service uses the
normalised forms as deterministic identifiers and the postcode parts for blocking, so a typo
let through here becomes a wrong link, or a missed one, later.

Messages are written to follow a field name ("nhs_number: fails the NHS number check digit
(modulus 11)") and never repeat the value, which is personal data and would otherwise end up in
responses and logs.
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Final

from pydantic import AfterValidator

__all__ = [
    "UPN",
    "IdentifierError",
    "NHSNumber",
    "UKPostcode",
    "inward_code",
    "is_temporary_upn",
    "is_valid_nhs_number",
    "is_valid_postcode",
    "is_valid_upn",
    "nhs_check_digit",
    "normalise_nhs_number",
    "normalise_postcode",
    "normalise_upn",
    "outward_code",
    "postcode_area",
    "postcode_sector",
    "upn_check_letter",
]


class IdentifierError(ValueError):
    """An identifier broke its rule; a ValueError so that Pydantic reports it as a 422."""


def _compact(text: str, *, also_remove: str = "") -> str:
    """Drop every whitespace character (and ``also_remove``): people type identifiers in groups."""
    joined = "".join(text.split())
    for character in also_remove:
        joined = joined.replace(character, "")
    return joined


# NHS number ---------------------------------------------------------------------------------

_NHS_DIGITS = re.compile(r"[0-9]{10}")
_NHS_ALLOWED = re.compile(r"[0-9\s-]*")
_NHS_WEIGHTS: Final = (10, 9, 8, 7, 6, 5, 4, 3, 2)

NHS_CHECK_DIGIT_FAILED: Final = "fails the NHS number check digit (modulus 11)"


def nhs_check_digit(stem: str) -> int | None:
    """The modulus 11 check digit for the first nine digits, or None where it would be 10.

    Weights 10 down to 2; check = 11 - (sum mod 11), where 11 becomes 0 and 10 means no NHS
    number is issued with this stem. Public so that factories can make valid numbers.
    """
    if len(stem) != len(_NHS_WEIGHTS) or not stem.isascii() or not stem.isdigit():
        raise IdentifierError("an NHS number stem must be exactly 9 digits")
    total = sum(int(digit) * weight for digit, weight in zip(stem, _NHS_WEIGHTS, strict=True))
    check = 11 - total % 11
    if check == 10:
        return None
    return 0 if check == 11 else check


def normalise_nhs_number(text: str) -> str:
    """The 10-digit form of an NHS number typed with or without spaces or hyphens.

    Refused: anything but digits, spaces and hyphens; other than 10 digits; a check digit that
    does not match (or a stem whose check digit would be 10); and numbers of one repeated digit.
    Every repeated-digit number (0000000000, 1111111111, ...) passes modulus 11, but systems use
    them as "not known" placeholders, and as an identifier for linking they would join unrelated
    children into one, so they are refused like any other invalid number.

    Numbers starting 999 fall in the range NHS Digital reserves for test data. They are accepted
    (test environments and training referrals use them); deciding what a test number means for
    linking is for the linking service, not for validation.
    """
    if not _NHS_ALLOWED.fullmatch(text):
        raise IdentifierError("must contain only digits, spaces or hyphens")
    digits = _compact(text, also_remove="-")
    if not _NHS_DIGITS.fullmatch(digits):
        raise IdentifierError("must be 10 digits")
    expected = nhs_check_digit(digits[:9])
    if expected is None:
        raise IdentifierError(
            f"{NHS_CHECK_DIGIT_FAILED}: no NHS number is issued with these first nine digits"
        )
    if expected != int(digits[9]):
        raise IdentifierError(NHS_CHECK_DIGIT_FAILED)
    if len(set(digits)) == 1:
        raise IdentifierError(
            "is a placeholder (every digit the same), not an NHS number: "
            "leave the field out if the NHS number is not known"
        )
    return digits


def is_valid_nhs_number(text: str) -> bool:
    """Whether ``normalise_nhs_number`` would accept the text."""
    try:
        normalise_nhs_number(text)
    except IdentifierError:
        return False
    return True


# Unique Pupil Number -------------------------------------------------------------------------

# The 23 letters of the UPN letter table, in value order: A=0 ... Z=22, skipping I, O and S.
_UPN_LETTERS: Final = "ABCDEFGHJKLMNPQRTUVWXYZ"
_UPN_LETTER_VALUE: Final = {letter: value for value, letter in enumerate(_UPN_LETTERS)}
_DIGITS: Final = frozenset("0123456789")
_ASCII_LETTERS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_UPN_LENGTH: Final = 13

UPN_CHECK_LETTER_FAILED: Final = "fails the UPN check letter (modulus 23)"


def upn_check_letter(body: str) -> str:
    """The check letter for the 12 characters that follow it in a UPN (DfE national formula).

    Source: the UK Government Data Standards Catalogue entry "Unique Pupil Number" v2.0
    (govtalk.gov.uk, DfE-owned, agreed 18 November 2004); the DfE's current "Unique pupil
    numbers (UPNs): a guide for schools and local authorities" (v1.2, June 2019) carries the
    same national formula in its Annex A. Each of characters 2 to 13 is multiplied by its
    position (2 to 13) and the products summed; the sum mod 23 is read through the letter table
    0->A, 1->B ... 22->Z, which omits I, O and S. In a temporary UPN the final character is a
    letter, valued by that same table (A=0, B=1 ... Z=22).
    """
    if len(body) != _UPN_LENGTH - 1:
        raise IdentifierError("a UPN body must be 12 characters")
    total = 0
    for position, character in enumerate(body, start=2):
        if character in _DIGITS:
            value = int(character)
        elif position == _UPN_LENGTH and character in _UPN_LETTER_VALUE:
            value = _UPN_LETTER_VALUE[character]
        else:
            raise IdentifierError(
                "a UPN body must be 12 digits, or 11 digits and a letter other than I, O or S"
            )
        total += value * position
    return _UPN_LETTERS[total % 23]


def normalise_upn(text: str) -> str:
    """The 13-character upper-case form of a UPN, spaces removed; permanent or temporary.

    The parts (local authority number, establishment number, year, serial) are not checked
    against lists: the check letter is the rule the DfE publishes for validation, and lists of
    authorities and establishments change.
    """
    upn = _compact(text)
    if not upn.isascii():
        raise IdentifierError("must contain only letters and digits")
    upn = upn.upper()
    if len(upn) != _UPN_LENGTH:
        raise IdentifierError(
            "must be 13 characters: a check letter then 12 digits "
            "(11 digits and a letter for a temporary UPN)"
        )
    if upn[0] not in _UPN_LETTER_VALUE:
        raise IdentifierError("must start with a check letter (a letter other than I, O or S)")
    if not _DIGITS.issuperset(upn[1:12]):
        raise IdentifierError("characters 2 to 12 must be digits")
    last = upn[12]
    if last not in _DIGITS:
        if last in _ASCII_LETTERS and last not in _UPN_LETTER_VALUE:
            raise IdentifierError("a temporary UPN never ends in I, O or S")
        if last not in _UPN_LETTER_VALUE:
            raise IdentifierError("must end with a digit (or a letter, for a temporary UPN)")
    if upn_check_letter(upn[1:]) != upn[0]:
        raise IdentifierError(UPN_CHECK_LETTER_FAILED)
    return upn


def is_valid_upn(text: str) -> bool:
    """Whether ``normalise_upn`` would accept the text."""
    try:
        normalise_upn(text)
    except IdentifierError:
        return False
    return True


def is_temporary_upn(upn: str) -> bool:
    """Whether a valid UPN is temporary (ends in a letter): one a school issues while it waits
    for the pupil's permanent UPN, so linking should treat it as weaker evidence.

    Raises IdentifierError if the text is not a valid UPN at all.
    """
    return normalise_upn(upn)[-1] not in _DIGITS


# UK postcode ---------------------------------------------------------------------------------

# Royal Mail's character rules (as in BS 7666): the first letter is never Q, V or X; a second
# area letter never I, J or Z; the letter ending an A9A district is one of ABCDEFGHJKPSTUW, an
# AA9A district one of ABEHMNPRVWXY; the inward letters are never C, I, K, M, O or V.
_AREA_FIRST = "[A-PR-UWYZ]"
_AREA_SECOND = "[A-HK-Y]"
_OUTWARD = (
    f"{_AREA_FIRST}[0-9]{{1,2}}"  # A9, A99
    f"|{_AREA_FIRST}{_AREA_SECOND}[0-9]{{1,2}}"  # AA9, AA99
    f"|{_AREA_FIRST}[0-9][A-HJKPSTUW]"  # A9A
    f"|{_AREA_FIRST}{_AREA_SECOND}[0-9][ABEHMNPRV-Y]"  # AA9A
)
_INWARD = "[0-9][ABD-HJLNP-UW-Z]{2}"
_POSTCODE = re.compile(f"(?:{_OUTWARD}){_INWARD}|GIR0AA")
_INWARD_SHAPE = re.compile("[0-9][A-Z]{2}")
_ALPHANUMERIC = re.compile("[A-Z0-9]*")
_BFPO = re.compile("BFPO[0-9]{1,4}")


def normalise_postcode(text: str) -> str:
    """The canonical form of a UK postcode: upper case, one space before the inward code.

    Accepted: the six geographic shapes (A9 9AA, A99 9AA, AA9 9AA, AA99 9AA, A9A 9AA,
    AA9A 9AA) under Royal Mail's letter rules, and GIR 0AA, a real (non-geographic) postcode.
    Refused: BFPO numbers ("BFPO 123"), which are routing numbers with no outward code or
    sector to link on (forces addresses also have BF1 postcodes, which pass as ordinary ones);
    and overseas-territory codes (ASCN 1ZZ, STHL 1ZZ ...), which are not UK postcodes.
    """
    compact = _compact(text)
    # Checked before upper-casing, which turns some non-ASCII letters into ASCII ones (long s -> S).
    if not compact.isascii():
        raise IdentifierError("is not a UK postcode: only letters, digits and a space")
    compact = compact.upper()
    if _BFPO.fullmatch(compact):
        raise IdentifierError(
            "is a BFPO number, not a postcode: send it as part of the address instead"
        )
    if not _ALPHANUMERIC.fullmatch(compact):
        raise IdentifierError("is not a UK postcode: only letters, digits and a space")
    if not 5 <= len(compact) <= 7:
        raise IdentifierError("must be 5 to 7 letters and digits, such as SW1A 1AA")
    if not _POSTCODE.fullmatch(compact):
        if _INWARD_SHAPE.fullmatch(compact[-3:]) and set(compact[-2:]) & set("CIKMOV"):
            raise IdentifierError(
                "is not a UK postcode: the last two letters are never C, I, K, M, O or V"
            )
        raise IdentifierError(
            "is not a UK postcode: expected an outward code (such as SW1A, M1 or B33), "
            "then a digit and two letters"
        )
    return f"{compact[:-3]} {compact[-3:]}"


def is_valid_postcode(text: str) -> bool:
    """Whether ``normalise_postcode`` would accept the text."""
    try:
        normalise_postcode(text)
    except IdentifierError:
        return False
    return True


def outward_code(postcode: str) -> str:
    """The outward code (postcode district), "SW1A 1AA" -> "SW1A"; raises IdentifierError."""
    return normalise_postcode(postcode).split(" ")[0]


def inward_code(postcode: str) -> str:
    """The inward code, "SW1A 1AA" -> "1AA"; raises IdentifierError."""
    return normalise_postcode(postcode).split(" ")[1]


def postcode_sector(postcode: str) -> str:
    """The sector (outward code and the inward digit), "SW1A 1AA" -> "SW1A 1", a few thousand
    addresses: the unit the linking service blocks on."""
    return normalise_postcode(postcode)[:-2]


def postcode_area(postcode: str) -> str:
    """The area (the outward code's leading letters), "SW1A 1AA" -> "SW"; "GIR" for GIR 0AA."""
    return "".join(itertools.takewhile(str.isalpha, outward_code(postcode)))


# Pydantic types ------------------------------------------------------------------------------

NHSNumber = Annotated[str, AfterValidator(normalise_nhs_number)]
"""An NHS number in a request model: refused with the rule it breaks, held as 10 digits."""

UPN = Annotated[str, AfterValidator(normalise_upn)]
"""A Unique Pupil Number in a request model: refused with the rule it breaks, held upper-case."""

UKPostcode = Annotated[str, AfterValidator(normalise_postcode)]
"""A UK postcode in a request model: refused with the rule it breaks, held as "SW1A 1AA"."""
