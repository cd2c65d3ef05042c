"""NHS numbers, UPNs and postcodes: what agencies type is accepted, normalised, or refused with
the rule it breaks, in plain functions and in request models."""

from __future__ import annotations

import random

import pytest
from pydantic import BaseModel, ValidationError

from shared.identifiers import (
    UPN,
    IdentifierError,
    NHSNumber,
    UKPostcode,
    inward_code,
    is_temporary_upn,
    is_valid_nhs_number,
    is_valid_postcode,
    is_valid_upn,
    nhs_check_digit,
    normalise_nhs_number,
    normalise_postcode,
    normalise_upn,
    outward_code,
    postcode_area,
    postcode_sector,
    upn_check_letter,
)

# NHS number ---------------------------------------------------------------------------------


def reference_nhs_check_digit(stem: str) -> int | None:
    """The modulus 11 rule written out independently of the module, for cross-checking."""
    total = sum(int(stem[i]) * (10 - i) for i in range(9))
    check = 11 - (total % 11)
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def test_worked_example_4010232137() -> None:
    # 4x10 + 0x9 + 1x8 + 0x7 + 2x6 + 3x5 + 2x4 + 1x3 + 3x2 = 92; 92 mod 11 = 4; 11 - 4 = 7.
    assert sum(int(d) * w for d, w in zip("401023213", range(10, 1, -1), strict=True)) == 92
    assert nhs_check_digit("401023213") == 7
    assert normalise_nhs_number("4010232137") == "4010232137"


@pytest.mark.parametrize("number", ["9434765919", "4010232137"])
def test_known_valid_nhs_numbers(number: str) -> None:
    assert reference_nhs_check_digit(number[:9]) == int(number[9])
    assert normalise_nhs_number(number) == number
    assert is_valid_nhs_number(number)


@pytest.mark.parametrize(
    "typed",
    ["943 476 5919", "943-476-5919", " 9434765919 ", "943 476-5919", "94 34 76 59 19"],
)
def test_spaces_and_hyphens_are_removed(typed: str) -> None:
    assert normalise_nhs_number(typed) == "9434765919"


@pytest.mark.parametrize(
    ("typed", "rule"),
    [
        ("943476591", "must be 10 digits"),
        ("94347659190", "must be 10 digits"),
        ("", "must be 10 digits"),
        ("943476591X", "must contain only digits, spaces or hyphens"),
        ("943.476.5919", "must contain only digits, spaces or hyphens"),
        ("٩٤٣٤٧٦٥٩١٩", "must contain only digits, spaces or hyphens"),  # Arabic-Indic digits
        ("9434765918", "fails the NHS number check digit (modulus 11)"),
        ("4010232138", "fails the NHS number check digit (modulus 11)"),
    ],
)
def test_nhs_number_refusals_name_the_rule(typed: str, rule: str) -> None:
    with pytest.raises(IdentifierError, match=rule.replace("(", r"\(").replace(")", r"\)")):
        normalise_nhs_number(typed)
    assert not is_valid_nhs_number(typed)


def test_a_stem_whose_check_digit_would_be_10_is_refused_for_every_final_digit() -> None:
    stem = "067760436"
    assert reference_nhs_check_digit(stem) is None
    assert nhs_check_digit(stem) is None
    for last in "0123456789":
        with pytest.raises(IdentifierError) as refused:
            normalise_nhs_number(stem + last)
        assert "fails the NHS number check digit (modulus 11)" in str(refused.value)


@pytest.mark.parametrize("digit", "0123456789")
def test_repeated_digit_placeholders_pass_modulus_11_but_are_refused(digit: str) -> None:
    number = digit * 10
    assert reference_nhs_check_digit(number[:9]) == int(digit)
    with pytest.raises(IdentifierError, match="placeholder"):
        normalise_nhs_number(number)


def test_the_999_test_range_is_accepted() -> None:
    assert nhs_check_digit("999000001") == 8
    assert normalise_nhs_number("999 000 0018") == "9990000018"


def test_error_does_not_repeat_the_number() -> None:
    with pytest.raises(IdentifierError) as refused:
        normalise_nhs_number("9434765918")
    assert "9434765918" not in str(refused.value)


def test_random_stems_agree_with_the_reference_rule() -> None:
    generator = random.Random(20240611)
    checked = 0
    for _ in range(1000):
        stem = f"{generator.randrange(10**9):09d}"
        expected = reference_nhs_check_digit(stem)
        assert nhs_check_digit(stem) == expected
        if expected is None or len(set(stem + str(expected))) == 1:
            continue
        number = stem + str(expected)
        assert normalise_nhs_number(number) == number
        wrong = stem + str((expected + 1) % 10)
        assert not is_valid_nhs_number(wrong)
        checked += 1
    assert checked > 850  # about one stem in eleven has no valid check digit


# Unique Pupil Number -------------------------------------------------------------------------

UPN_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"


def test_worked_example_permanent_upn() -> None:
    # 938 2001 24 001: 9x2 + 3x3 + 8x4 + 2x5 + 0x6 + 0x7 + 1x8 + 2x9 + 4x10 + 0x11 + 0x12
    # + 1x13 = 148; 148 mod 23 = 10; the letter table's 10 is L (A=0 ... J=8, K=9, L=10).
    assert upn_check_letter("938200124001") == "L"
    assert normalise_upn("L938200124001") == "L938200124001"
    assert not is_temporary_upn("L938200124001")


def test_worked_example_temporary_upn_values_its_final_letter_from_the_table() -> None:
    # 9x2 + 3x3 + 8x4 + 2x5 + 1x8 + 2x9 + 4x10 = 135, and Z is 22 in the table (not 25):
    # 135 + 22x13 = 421; 421 mod 23 = 7, which is H.
    assert upn_check_letter("93820012400Z") == "H"
    assert normalise_upn("H93820012400Z") == "H93820012400Z"
    assert is_temporary_upn("H93820012400Z")


@pytest.mark.parametrize(
    "body", ["201300024123", "873204523457", "330450018010", "33045001801A", "91900002500R"]
)
def test_constructed_upns_validate(body: str) -> None:
    upn = upn_check_letter(body) + body
    assert normalise_upn(upn) == upn
    assert is_valid_upn(upn)
    assert is_temporary_upn(upn) == body[-1].isalpha()


def test_every_temporary_final_letter_uses_its_table_value() -> None:
    stem = "33045001801"
    for value, letter in enumerate(UPN_LETTERS):
        digits_total = sum(int(c) * p for p, c in enumerate(stem, start=2))
        expected = UPN_LETTERS[(digits_total + value * 13) % 23]
        assert upn_check_letter(stem + letter) == expected
        assert is_temporary_upn(expected + stem + letter)


def test_upn_is_upper_cased_and_spaces_removed() -> None:
    assert normalise_upn(" l938 2001 24 001 ") == "L938200124001"
    assert normalise_upn("h93820012400z") == "H93820012400Z"


@pytest.mark.parametrize(
    ("typed", "rule"),
    [
        ("M938200124001", "fails the UPN check letter (modulus 23)"),
        ("L938200124002", "fails the UPN check letter (modulus 23)"),
        ("L93820012400", "must be 13 characters"),
        ("L9382001240011", "must be 13 characters"),
        ("1938200124001", "must start with a check letter"),
        ("I938200124001", "must start with a check letter"),
        ("O938200124001", "must start with a check letter"),
        ("S938200124001", "must start with a check letter"),
        ("L93820012A001", "characters 2 to 12 must be digits"),
        ("H93820012400I", "a temporary UPN never ends in I, O or S"),
        ("H93820012400O", "a temporary UPN never ends in I, O or S"),
        ("H93820012400S", "a temporary UPN never ends in I, O or S"),
        ("H93820012400-", "must end with a digit"),
        ("\u017f938200124001", "must contain only letters and digits"),  # long s, not S
    ],
)
def test_upn_refusals_name_the_rule(typed: str, rule: str) -> None:
    with pytest.raises(IdentifierError) as refused:
        normalise_upn(typed)
    assert rule in str(refused.value)
    assert not is_valid_upn(typed)


def test_is_temporary_upn_refuses_an_invalid_upn() -> None:
    with pytest.raises(IdentifierError):
        is_temporary_upn("M938200124001")


# UK postcode ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "postcode", "outward", "sector", "area"),
    [
        ("M1 1AE", "M1 1AE", "M1", "M1 1", "M"),  # A9 9AA
        ("B33 8TH", "B33 8TH", "B33", "B33 8", "B"),  # A99 9AA
        ("CR2 6XH", "CR2 6XH", "CR2", "CR2 6", "CR"),  # AA9 9AA
        ("DN55 1PT", "DN55 1PT", "DN55", "DN55 1", "DN"),  # AA99 9AA
        ("W1A 0AX", "W1A 0AX", "W1A", "W1A 0", "W"),  # A9A 9AA
        ("EC1A 1BB", "EC1A 1BB", "EC1A", "EC1A 1", "EC"),  # AA9A 9AA
        ("sw1a1aa", "SW1A 1AA", "SW1A", "SW1A 1", "SW"),
        ("  sw1a   1aa ", "SW1A 1AA", "SW1A", "SW1A 1", "SW"),
        ("m11ae", "M1 1AE", "M1", "M1 1", "M"),
        ("BF1 3AA", "BF1 3AA", "BF1", "BF1 3", "BF"),  # a forces postcode proper
        ("gir 0aa", "GIR 0AA", "GIR", "GIR 0", "GIR"),
    ],
)
def test_postcodes_of_every_shape(
    typed: str, postcode: str, outward: str, sector: str, area: str
) -> None:
    assert normalise_postcode(typed) == postcode
    assert is_valid_postcode(typed)
    assert outward_code(typed) == outward
    assert inward_code(typed) == postcode[-3:]
    assert postcode_sector(typed) == sector
    assert postcode_area(typed) == area


@pytest.mark.parametrize(
    ("typed", "rule"),
    [
        ("SW1A", "must be 5 to 7 letters and digits"),
        ("SW1A 1AAA", "must be 5 to 7 letters and digits"),
        ("", "must be 5 to 7 letters and digits"),
        ("SW1A 1AI", "the last two letters are never C, I, K, M, O or V"),
        ("M1 1CA", "the last two letters are never C, I, K, M, O or V"),
        ("QA1 1AA", "is not a UK postcode"),  # Q never starts a postcode
        ("AI1 1AA", "is not a UK postcode"),  # I is never a second area letter
        ("W1I 1AA", "is not a UK postcode"),  # I never ends an A9A district
        ("EC1C 1AA", "is not a UK postcode"),  # C never ends an AA9A district
        ("SW1A AAA", "is not a UK postcode"),
        ("123 4AA", "is not a UK postcode"),
        ("SW1A-1AA", "only letters, digits and a space"),
        ("SW1A 1A\u00c5", "only letters, digits and a space"),
        ("\u017fw1a 1aa", "only letters, digits and a space"),  # long s upper-cases to S
        ("ASCN 1ZZ", "is not a UK postcode"),
        ("BFPO 123", "is a BFPO number, not a postcode"),
        ("bfpo1234", "is a BFPO number, not a postcode"),
    ],
)
def test_postcode_refusals_name_the_rule(typed: str, rule: str) -> None:
    with pytest.raises(IdentifierError) as refused:
        normalise_postcode(typed)
    assert rule in str(refused.value)
    assert not is_valid_postcode(typed)


def test_postcode_parts_refuse_an_invalid_postcode() -> None:
    for part in (outward_code, inward_code, postcode_sector, postcode_area):
        with pytest.raises(IdentifierError):
            part("BFPO 123")


# Pydantic types ------------------------------------------------------------------------------


class ChildIdentifiers(BaseModel):
    nhs_number: NHSNumber | None = None
    upn: UPN | None = None
    postcode: UKPostcode | None = None


def test_model_holds_the_normalised_forms() -> None:
    child = ChildIdentifiers(nhs_number="943 476 5919", upn="l938 2001 24001", postcode="sw1a1aa")
    assert child.nhs_number == "9434765919"
    assert child.upn == "L938200124001"
    assert child.postcode == "SW1A 1AA"
    assert ChildIdentifiers().nhs_number is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("nhs_number", "9434765918", "Value error, fails the NHS number check digit (modulus 11)"),
        ("nhs_number", "12345", "Value error, must be 10 digits"),
        ("upn", "M938200124001", "Value error, fails the UPN check letter (modulus 23)"),
        ("postcode", "SW1A 1AI", "Value error, is not a UK postcode"),
        ("postcode", "BFPO 123", "Value error, is a BFPO number, not a postcode"),
    ],
)
def test_model_error_names_the_field_and_the_rule(field: str, value: str, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ChildIdentifiers.model_validate({field: value})
    [error] = refused.value.errors()
    assert error["loc"] == (field,)
    assert error["type"] == "value_error"
    assert message in error["msg"]
    assert value not in error["msg"]


def test_model_refuses_a_number_sent_as_a_json_number() -> None:
    # A JSON number would lose an NHS number's leading zeros, so only strings are accepted.
    with pytest.raises(ValidationError):
        ChildIdentifiers.model_validate({"nhs_number": 9434765919})
