"""A synthetic partnership with ground truth: families, their moves and name changes, and the
records several agencies made of them, each agency with its own error habits.

Fixed seed, pure Python, no data files: the same seed gives the same partnership on every
machine. Used by the tests (the twin, sibling and unborn traps), the benchmark (accuracy on
100,000 records, speed on 1,000,000) and the demo (``make up`` seeds referrals from it).

What it models, and why (docs/linking.md has the detail):

* English given and family names with their real frequency skew (a Zipf law over lists ordered
  by ONS popularity), nicknames (Alfie for Alfred, Liz for Elizabeth), double-barrelled names;
* households of a mother, a resident or non-resident father, children (twins among them),
  half-siblings from an earlier partner, step-parents, grandparents; unborn children named in a
  pre-birth concern ("Baby Smith") before their birth;
* addresses with postcode-shaped codes, households that move (records made before the move
  carry the old address), children who take a step-parent's name;
* agencies: schools (UPN, known-as names), health (NHS numbers, formal names), police (few
  identifiers, nicknames, estimated ages, typos, given and family names swapped), children's
  social care (some identifiers, known other names).
"""

from __future__ import annotations

import bisect
import csv
import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from services.linking.matching.names import NICKNAME_GROUPS
from services.linking.matching.records import PersonRecord
from shared.identifiers import nhs_check_digit, upn_check_letter

TODAY = date(2026, 11, 1)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Ordered by popularity (ONS baby names and surname counts for England and Wales); the weights
# come from a Zipf law over the rank, which is close to the real skew.
BOYS = _words(
    "OLIVER JACK HARRY GEORGE NOAH CHARLIE JACOB ALFIE FREDDIE OSCAR LEO MUHAMMAD ARCHIE "
    "THOMAS JAMES JOSHUA HENRY WILLIAM MAX LUCAS ETHAN ARTHUR MASON ISAAC HARRISON TEDDY "
    "FINLEY DANIEL RILEY EDWARD JOSEPH ALEXANDER ADAM REGGIE SAMUEL JAXON SEBASTIAN ELIJAH "
    "HARLEY TOBY ARLO DYLAN JUDE BENJAMIN RORY TOMMY JAKE LOUIS CARTER JENSON HUGO BOBBY "
    "FRANKIE OLLIE ZACHARY DAVID ALBIE LEWIS LUCA RONNIE JACKSON MATTHEW ALEX HARVEY REUBEN "
    "JAYDEN CALEB HUNTER THEO NATHAN ELLIOT KAI LIAM TYLER CONNOR ROBERT MICHAEL KIERAN "
    "CAMERON CALLUM AARON LUKE KYLE RYAN JORDAN BRANDON BRADLEY AIDEN LOGAN STANLEY ELLIS "
    "RONAN ALFRED FREDERICK ANTHONY CHRISTOPHER PATRICK RICHARD STEPHEN PETER ANDREW MARK "
    "PAUL CRAIG DARREN GARY LEE SCOTT SEAN STUART WAYNE CARL JONATHAN NICHOLAS TIMOTHY DEAN "
    "JASON KEVIN SHANE RICKY JAMIE ASHLEY MARCUS OMAR YUSUF IBRAHIM ALI HAMZA AYAAN ZAIN "
    "RAYYAN KACPER JAKUB FILIP SZYMON DOMINIC VINCENT TOBIAS FELIX RUFUS ROWAN ELLIOTT KAYDEN "
    "BILLY JOHN KENZIE ROMAN "
)
GIRLS = _words(
    "OLIVIA AMELIA ISLA AVA MIA IVY LILY ISABELLA ROSIE SOPHIA GRACE FREYA ALICE EVIE "
    "FLORENCE WILLOW HARPER ELLA EMILY POPPY SIENNA DAISY MATILDA ELSIE PHOEBE RUBY SOPHIE "
    "EVELYN LUNA CHARLOTTE MILLIE ISABELLE SCARLETT HALLIE ELIZABETH MARGOT ARIA LAYLA MAYA "
    "WILLOW ELEANOR ROSE MAISIE MILA JESSICA HANNAH ABIGAIL LUCY CHLOE ZARA BONNIE EMMA MOLLY "
    "HOLLY ERIN MADISON LEXI ELLIE IMOGEN AMBER LOLA HARRIET JASMINE GEORGIA ELLIE KATIE "
    "MEGAN LAUREN BETHANY SHANNON COURTNEY CHANTELLE JADE LEAH PAIGE KAYLEIGH DEMI CHELSEA "
    "REBECCA SAMANTHA NATALIE DANIELLE STACEY KELLY GEMMA LAURA SARAH AMY CLAIRE NICOLA "
    "HAYLEY KERRY LISA MICHELLE DONNA TRACEY JOANNE AMANDA RACHEL VICTORIA KATHERINE "
    "CATHERINE MARGARET SUSAN PATRICIA DEBORAH SHARON JENNIFER CHRISTINA ALEXANDRA GEORGINA "
    "FRANCESCA JOSEPHINE REBECCA STEPHANIE THERESA AALIYAH AISHA FATIMA MARYAM ZAINAB HAFSA "
    "ZUZANNA MAJA OLIWIA HANNA NINA ESME THEA ORLA NIAMH CARA TIA MARY "
)
SURNAMES = _words(
    "SMITH JONES WILLIAMS TAYLOR BROWN DAVIES EVANS WILSON THOMAS JOHNSON ROBERTS ROBINSON "
    "THOMPSON WRIGHT WALKER WHITE EDWARDS HUGHES GREEN HALL LEWIS HARRIS CLARKE PATEL JACKSON "
    "WOOD TURNER MARTIN COOPER HILL WARD MORRIS MOORE CLARK LEE KING BAKER HARRISON MORGAN "
    "ALLEN JAMES SCOTT PHILLIPS WATSON DAVIS PARKER PRICE BENNETT YOUNG GRIFFITHS MITCHELL "
    "KELLY COOK CARTER RICHARDSON BAILEY COLLINS BELL SHAW MURPHY MILLER COX RICHARDS KHAN "
    "MARSHALL ANDERSON SIMPSON ELLIS ADAMS SINGH BEGUM WILKINSON FOSTER CHAPMAN POWELL WEBB "
    "ROGERS GRAY MASON ALI HUNT HUSSAIN CAMPBELL MATTHEWS OWEN PALMER HOLMES MILLS BARNES "
    "KNIGHT LLOYD BUTLER RUSSELL BARKER FISHER STEVENS JENKINS MURRAY DIXON HARVEY GRAHAM "
    "PEARSON AHMED FLETCHER WALSH KAUR GIBSON HOWARD ANDREWS STEWART ATKINSON FORD REYNOLDS "
    "HOLLAND PAYNE DAY PRESTON LAWSON HUTCHINSON BRADSHAW HOLT FOWLER NOWAK KOWALSKI OKAFOR "
    "MENSAH ADEYEMI NGUYEN CHAUDHRY MAHMOOD IQBAL AKHTAR RAHMAN MIAH OBRIEN MCDONALD MCCARTHY "
    "DOHERTY BYRNE WHITTAKER BRIGGS SUTCLIFFE ACKROYD BOOTHROYD FEATHERSTONE HARGREAVES "
    "CROWTHER PICKERING RAMSBOTTOM OLDROYD SHACKLETON HIGGINBOTTOM WINTERBOTTOM ENTWISTLE "
    "GREENHALGH "
)
STREETS = _words(
    "Church Station Victoria Park Manor Queens Kings Mill School Albert Grange New Green "
    "Highfield Springfield Windsor York Chapel Meadow Orchard Elm Oak Ash Beech Willow Cedar "
    "Chestnut Hawthorn Rowan Birch Poplar Sycamore Larch Hazel Holly Laurel Maple Linden "
    "Alder Juniper Heather Primrose Bluebell Foxglove Clover Bramble Thistle Meadowsweet "
)
STREET_KINDS = ("Road", "Street", "Lane", "Avenue", "Close", "Drive", "Way", "Crescent", "Grove")
TOWNS = ("Derby", "Ashbourne", "Belper", "Ripley", "Ilkeston", "Heanor", "Swadlincote")
INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"

_NICKNAMES_OF: dict[str, list[str]] = {}
for _group in NICKNAME_GROUPS:
    _NICKNAMES_OF.setdefault(_group[0], []).extend(n for n in _group[1:] if n != _group[0])


def _zipf(count: int, exponent: float = 1.0) -> list[float]:
    return list(itertools.accumulate(1.0 / (rank**exponent) for rank in range(1, count + 1)))


_BOY_WEIGHTS = _zipf(len(BOYS), 0.9)
_GIRL_WEIGHTS = _zipf(len(GIRLS), 0.9)
_SURNAME_WEIGHTS = _zipf(len(SURNAMES), 0.8)


@dataclass
class Address:
    line: str
    postcode: str


@dataclass
class Person:
    person_id: str
    household_id: str
    given: str
    middle: str | None
    family: str
    dob: date
    sex: str
    nhs_number: str | None
    upn: str | None
    role: str  # child | mother | father | step_parent | grandparent
    previous_family: str | None = None  # before a name change
    name_changed_on: date | None = None


@dataclass
class Relationship:
    """A true relationship: ``from_person`` is the ``kind`` of ``to_person`` (a child)."""

    from_person: str
    to_person: str
    kind: str  # parent | non_resident_parent | step_parent | grandparent | sibling | ...
    parental_responsibility: bool
    lives_with_child: bool


@dataclass
class Household:
    household_id: str
    members: list[Person] = field(default_factory=list)
    non_resident: list[Person] = field(default_factory=list)
    relationships: list[Relationship] = field(default_factory=list)
    addresses: list[Address] = field(default_factory=list)
    moved_on: date | None = None

    def address_on(self, day: date) -> tuple[Address, bool]:
        """The address on a day, and whether the household has moved since."""
        if self.moved_on is not None and day < self.moved_on:
            return self.addresses[0], True
        return self.addresses[-1], False


@dataclass
class GeneratedRecord:
    record: PersonRecord
    person_id: str
    household_id: str
    made_on: date
    tags: frozenset[str]


@dataclass
class Partnership:
    households: list[Household]
    records: list[GeneratedRecord]

    @property
    def persons(self) -> Iterator[Person]:
        for household in self.households:
            yield from household.members
            yield from household.non_resident


# Agencies and their habits -----------------------------------------------------------------


@dataclass(frozen=True)
class Agency:
    name: str
    nhs_rate: float
    upn_rate: float
    nickname_rate: float
    typo_rate: float
    dob_error_rate: float
    dob_missing_rate: float
    dob_estimated_rate: float
    swap_rate: float
    postcode_rate: float
    address_rate: float
    alias_rate: float
    sex_rate: float


AGENCIES = {
    "school": Agency("school", 0.05, 0.97, 0.12, 0.01, 0.005, 0.0, 0.0, 0.0, 0.98, 0.9, 0.05, 0.98),
    "health": Agency("health", 0.9, 0.0, 0.02, 0.02, 0.01, 0.0, 0.0, 0.002, 0.96, 0.9, 0.1, 0.99),
    "police": Agency("police", 0.03, 0.0, 0.25, 0.06, 0.05, 0.04, 0.06, 0.02, 0.75, 0.7, 0.2, 0.9),
    "social_care": Agency(
        "social_care", 0.55, 0.35, 0.06, 0.02, 0.015, 0.01, 0.0, 0.005, 0.92, 0.85, 0.35, 0.97
    ),
}
CHILD_AGENCY_WEIGHTS = (("school", 0.35), ("health", 0.3), ("police", 0.15), ("social_care", 0.2))
ADULT_AGENCY_WEIGHTS = (("health", 0.35), ("police", 0.4), ("social_care", 0.25))


class Generator:
    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)  # noqa: S311 (reproducible data, not secrets)
        self.person_seq = 0
        self.household_seq = 0
        self.record_seq = 0
        self.nhs_seen: set[str] = set()
        self.upn_seen: set[str] = set()
        self.streets = [f"{s} {k}" for s in STREETS for k in STREET_KINDS]

    # Names, identifiers, places ----------------------------------------------------------------

    def given_name(self, sex: str) -> str:
        if sex == "male":
            return BOYS[bisect.bisect(_BOY_WEIGHTS, self.random.random() * _BOY_WEIGHTS[-1])]
        return GIRLS[bisect.bisect(_GIRL_WEIGHTS, self.random.random() * _GIRL_WEIGHTS[-1])]

    def surname(self) -> str:
        pick = self.random.random() * _SURNAME_WEIGHTS[-1]
        return SURNAMES[bisect.bisect(_SURNAME_WEIGHTS, pick)]

    def nhs_number(self) -> str:
        while True:
            stem = f"{self.random.randrange(400_000_000, 999_999_999):09d}"
            check = nhs_check_digit(stem)
            if check is None:
                continue
            number = f"{stem}{check}"
            if number not in self.nhs_seen and len(set(number)) > 1:
                self.nhs_seen.add(number)
                return number

    def upn(self) -> str:
        while True:
            body = (
                f"{self.random.choice((830, 831, 873, 926)):03d}{self.random.randrange(10**9):09d}"
            )
            number = upn_check_letter(body) + body
            if number not in self.upn_seen:
                self.upn_seen.add(number)
                return number

    def address(self) -> Address:
        rnd = self.random
        district = rnd.randint(1, 24)
        unit = rnd.choice(INWARD_LETTERS) + rnd.choice(INWARD_LETTERS)
        postcode = f"DE{district} {rnd.randint(0, 9)}{unit}"
        line = f"{rnd.randint(1, 180)} {rnd.choice(self.streets)}, {rnd.choice(TOWNS)}"
        return Address(line, postcode)

    def dob(self, earliest: date, latest: date) -> date:
        span = (latest - earliest).days
        return earliest + timedelta(days=self.random.randint(0, max(span, 0)))

    # People and households ---------------------------------------------------------------------

    def person(
        self, household: str, sex: str, family: str, dob: date, role: str, *, child: bool
    ) -> Person:
        self.person_seq += 1
        rnd = self.random
        school_age = child and (TODAY - dob).days > 4 * 365
        return Person(
            person_id=f"P{self.person_seq:07d}",
            household_id=household,
            given=self.given_name(sex),
            middle=self.given_name(sex) if rnd.random() < 0.5 else None,
            family=family,
            dob=dob,
            sex=sex,
            nhs_number=self.nhs_number(),
            upn=self.upn() if school_age else None,
            role=role,
        )

    def household(self) -> Household:
        rnd = self.random
        self.household_seq += 1
        household = Household(household_id=f"H{self.household_seq:06d}")
        hid = household.household_id
        mother_dob = self.dob(date(1975, 1, 1), date(2006, 1, 1))
        mother_family = self.surname()
        father_family = self.surname() if rnd.random() < 0.5 else mother_family
        mother = self.person(hid, "female", mother_family, mother_dob, "mother", child=False)
        household.members.append(mother)
        has_father = rnd.random() < 0.75
        father_resident = has_father and rnd.random() < 0.6
        father = None
        if has_father:
            father_dob = self.dob(mother_dob - timedelta(days=3650), mother_dob + timedelta(1500))
            father = self.person(hid, "male", father_family, father_dob, "father", child=False)
            (household.members if father_resident else household.non_resident).append(father)
        children_family = father_family if father is not None else mother_family
        # An older half-sibling from the mother's earlier relationship, with that father's name.
        half = None
        first_birth = mother_dob + timedelta(days=365 * 18)
        if rnd.random() < 0.2:
            half_family = self.surname()
            half_dob = self.dob(first_birth, min(first_birth + timedelta(3000), TODAY))
            sex = rnd.choice(("male", "female"))
            half = self.person(hid, sex, half_family, half_dob, "child", child=True)
            household.members.append(half)
            first_birth = half_dob + timedelta(days=400)
        count = rnd.choices((1, 2, 3, 4, 5), (0.35, 0.33, 0.18, 0.09, 0.05))[0]
        children: list[Person] = []
        latest = min(mother_dob + timedelta(days=365 * 44), TODAY)
        birth = self.dob(first_birth, min(first_birth + timedelta(2500), latest))
        for _ in range(count):
            if birth > latest:
                break
            twins = rnd.random() < 0.03
            for _twin in range(2 if twins else 1):
                sex = rnd.choice(("male", "female"))
                child = self.person(hid, sex, children_family, birth, "child", child=True)
                if _twin == 1:  # twins never share a given name
                    while child.given == children[-1].given:
                        child.given = self.given_name(sex)
                children.append(child)
            birth = birth + timedelta(days=rnd.randint(400, 2200))
        household.members.extend(children)
        everyone = children + ([half] if half else [])
        # Relationships to each child, as a referral's family section reports them.
        for child in everyone:
            household.relationships.append(
                Relationship(mother.person_id, child.person_id, "parent", True, True)
            )
            if father is not None and child is not half:
                kind = "parent" if father_resident else "non_resident_parent"
                household.relationships.append(
                    Relationship(father.person_id, child.person_id, kind, True, father_resident)
                )
            for other in everyone:
                if other is child:
                    continue
                kind = "half_sibling" if half in (child, other) else "sibling"
                household.relationships.append(
                    Relationship(other.person_id, child.person_id, kind, False, True)
                )
        # A step-parent: the mother's new partner, whose name some children later take.
        if not father_resident and rnd.random() < 0.35:
            step_family = self.surname()
            step_dob = self.dob(mother_dob - timedelta(3650), mother_dob + timedelta(2000))
            step = self.person(hid, "male", step_family, step_dob, "step_parent", child=False)
            household.members.append(step)
            changed_on = self.dob(date(2021, 1, 1), TODAY)
            for child in everyone:
                household.relationships.append(
                    Relationship(step.person_id, child.person_id, "step_parent", False, True)
                )
                if rnd.random() < 0.3 and child.dob < changed_on:
                    child.previous_family = child.family
                    child.family = (
                        f"{child.family}-{step_family}" if rnd.random() < 0.5 else step_family
                    )
                    child.name_changed_on = changed_on
            if rnd.random() < 0.5:
                mother.previous_family = mother.family
                mother.family = step_family
                mother.name_changed_on = changed_on
        if rnd.random() < 0.12:
            grandmother_dob = mother_dob - timedelta(days=rnd.randint(17, 35) * 365)
            grandparent = self.person(
                hid, "female", mother_family, grandmother_dob, "grandparent", child=False
            )
            lives = rnd.random() < 0.4
            (household.members if lives else household.non_resident).append(grandparent)
            for child in everyone:
                household.relationships.append(
                    Relationship(
                        grandparent.person_id, child.person_id, "grandparent", False, lives
                    )
                )
        household.addresses.append(self.address())
        if rnd.random() < 0.3:
            household.addresses.append(self.address())
            household.moved_on = self.dob(date(2021, 1, 1), TODAY - timedelta(days=30))
        return household

    # Records ----------------------------------------------------------------------------------

    def typo(self, name: str) -> str:
        rnd = self.random
        if len(name) < 3:
            return name
        position = rnd.randrange(1, len(name))
        kind = rnd.random()
        letters = "AEIOURSTLNMHDCY"
        if kind < 0.3:
            return name[:position] + rnd.choice(letters) + name[position + 1 :]
        if kind < 0.55:
            return name[:position] + name[position + 1 :]
        if kind < 0.75:
            return name[:position] + rnd.choice(letters) + name[position:]
        if position < len(name) - 1:
            return name[:position] + name[position + 1] + name[position] + name[position + 2 :]
        return name + name[-1]

    def wrong_dob(self, dob: date) -> date:
        rnd = self.random
        for _ in range(10):
            kind = rnd.random()
            try:
                if kind < 0.3 and dob.day <= 12 and dob.day != dob.month:
                    return date(dob.year, dob.day, dob.month)
                if kind < 0.6:
                    return dob.replace(day=min(28, max(1, dob.day + rnd.choice((-1, 1, 10, -10)))))
                if kind < 0.8:
                    return dob.replace(year=dob.year + rnd.choice((-1, 1)))
                return dob.replace(month=min(12, max(1, dob.month + rnd.choice((-1, 1)))))
            except ValueError:
                continue
        return dob

    def record_of(
        self, person: Person, household: Household, agency: Agency, made_on: date
    ) -> GeneratedRecord:
        rnd = self.random
        tags: set[str] = set()
        self.record_seq += 1
        unborn = made_on < person.dob
        family = person.family
        if person.name_changed_on and made_on < person.name_changed_on and person.previous_family:
            family = person.previous_family
            tags.add("name_change")
        elif person.previous_family:
            tags.add("name_change")
        given = person.given
        other_names: list[str] = []
        if unborn:
            given = rnd.choice(
                ("Baby", "Unborn", "Baby of " + household.members[0].given.title(), "")
            )
            tags.add("unborn")
        else:
            if rnd.random() < agency.nickname_rate and _NICKNAMES_OF.get(given):
                given = rnd.choice(_NICKNAMES_OF[given])
                tags.add("nickname")
            if person.middle and rnd.random() < 0.15:
                given = f"{given} {person.middle}"
            if rnd.random() < agency.typo_rate:
                given = self.typo(given)
                tags.add("typo")
            if rnd.random() < agency.typo_rate:
                family = self.typo(family)
                tags.add("typo")
        if person.previous_family and rnd.random() < agency.alias_rate:
            other = person.previous_family if family != person.previous_family else person.family
            other_names.append(other.title())
        if rnd.random() < agency.swap_rate and given:
            given, family = family, given
            tags.add("swapped")
        address, moved = household.address_on(made_on)
        if household.moved_on is not None:
            tags.add("moved")
            if moved:
                tags.add("old_address")
        dob: date | None = person.dob
        estimated = False
        expected = None
        if unborn:
            dob = None
            expected = person.dob + timedelta(days=rnd.randint(-21, 21))
        elif rnd.random() < agency.dob_missing_rate:
            dob = None
            tags.add("dob_missing")
        elif rnd.random() < agency.dob_estimated_rate:
            years = max(0, (made_on - person.dob).days // 365 + rnd.choice((-1, 0, 0, 1)))
            dob = date(made_on.year - years, 7, 1)
            estimated = True
            tags.add("dob_estimated")
        elif rnd.random() < agency.dob_error_rate:
            dob = self.wrong_dob(person.dob)
            tags.add("dob_error")
        nhs = person.nhs_number if not unborn and rnd.random() < agency.nhs_rate else None
        upn = person.upn if person.upn and rnd.random() < agency.upn_rate else None
        if nhs or upn:
            tags.add("identifier")
        sex = (
            person.sex
            if rnd.random() < agency.sex_rate and not (unborn and rnd.random() < 0.7)
            else None
        )
        record = PersonRecord(
            record_id=f"R{self.record_seq:08d}",
            source=agency.name,
            given_names=_display(given),
            family_name=_display(family),
            other_names=tuple(other_names),
            date_of_birth=dob,
            dob_estimated=estimated,
            expected_date=expected,
            sex=sex,
            address=address.line if rnd.random() < agency.address_rate else None,
            postcode=address.postcode if rnd.random() < agency.postcode_rate else None,
            nhs_number=_spaced(nhs, rnd) if nhs else None,
            upn=upn,
        )
        return GeneratedRecord(
            record, person.person_id, household.household_id, made_on, frozenset(tags)
        )

    def records_for(self, household: Household) -> list[GeneratedRecord]:
        rnd = self.random
        found = []
        births = [p.dob for p in household.members if p.role == "child"]
        household_twins = {
            p.person_id for p in household.members if p.role == "child" and births.count(p.dob) > 1
        }
        for person in itertools.chain(household.members, household.non_resident):
            child = person.role == "child"
            weights = CHILD_AGENCY_WEIGHTS if child else ADULT_AGENCY_WEIGHTS
            count = rnd.choices((1, 2, 3, 4, 5, 6), (0.12, 0.2, 0.25, 0.2, 0.13, 0.1))[0]
            if not child:
                count = rnd.choices((1, 2, 3, 4), (0.35, 0.3, 0.2, 0.15))[0]
            for _ in range(count):
                name = rnd.choices([n for n, _ in weights], [w for _, w in weights])[0]
                made_on = self.dob(date(2019, 1, 1), TODAY)
                if made_on < person.dob - timedelta(days=150):
                    made_on = self.dob(person.dob - timedelta(days=120), TODAY)
                if made_on < person.dob and person.person_id in household_twins:
                    # A pre-birth record of twins names both at once ("unborn twins"): it is no
                    # one person's record, so the ground truth leaves it out.
                    made_on = self.dob(person.dob, TODAY)
                if made_on < person.dob and name == "school":
                    name = "health"  # a pre-birth concern comes from midwifery or social care
                if name == "school" and person.upn is None:
                    name = "health"
                found.append(self.record_of(person, household, AGENCIES[name], made_on))
        return found


def _display(name: str) -> str:
    """As a person types it: "SMITH-JONES" → "Smith-Jones"."""
    return "-".join(part.title() for part in name.split("-")) if name else name


def _spaced(nhs: str, rnd: random.Random) -> str:
    return f"{nhs[:3]} {nhs[3:6]} {nhs[6:]}" if rnd.random() < 0.5 else nhs


def generate(records: int, seed: int = 20261122) -> Partnership:
    """A partnership of about ``records`` records (whole households; trimmed to the count)."""
    generator = Generator(seed)
    households: list[Household] = []
    made: list[GeneratedRecord] = []
    while len(made) < records:
        household = generator.household()
        households.append(household)
        made.extend(generator.records_for(household))
    del made[records:]
    generator.random.shuffle(made)
    return Partnership(households, made)


FIELDS = (
    "record_id",
    "source",
    "given_name",
    "family_name",
    "date_of_birth",
    "sex",
    "address",
    "postcode",
    "nhs_number",
    "upn",
)
# Optional columns link-file understands beyond the required ones.
OPTIONAL_FIELDS = ("other_names", "expected_date", "dob_estimated")
TRUTH_FIELDS = ("true_person_id", "household_id", "tags")


def write_csv(records: Sequence[GeneratedRecord], path: Path, *, truth: bool = True) -> None:
    """The link-file input format (with the ground truth in extra columns, which it ignores)."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(FIELDS + OPTIONAL_FIELDS + (TRUTH_FIELDS if truth else ()))
        for generated in records:
            record = generated.record
            dob = record.date_of_birth
            row = [
                record.record_id,
                record.source,
                record.given_names or "",
                record.family_name or "",
                dob.isoformat() if dob else "",
                record.sex or "",
                record.address or "",
                record.postcode or "",
                record.nhs_number or "",
                record.upn or "",
                ";".join(record.other_names),
                record.expected_date.isoformat() if record.expected_date else "",
                "yes" if record.dob_estimated else "",
            ]
            if truth:
                row += [
                    generated.person_id,
                    generated.household_id,
                    " ".join(sorted(generated.tags)),
                ]
            writer.writerow(row)
