"""Names as agencies write them: normal forms, English nicknames, placeholders, phonetic keys.

Agencies spell the same child's name differently ("Liz", "Elizabeth", "Elizabteh"), write
hyphenated family names with or without the hyphen, and, before a birth or in a hurry, write a
placeholder ("Baby Smith", "Unborn", "NK") where the given name would be. Everything here is a
pure function of the text, so the batch linker and the online resolver agree exactly.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Final

import jellyfish

# Groups of English given names that are one name to a person who knows the child: the first
# entry is the canonical (formal) form. A nickname may belong to several formal names
# ("Alex" is Alexander and Alexandra; "Sam" is Samuel and Samantha): ``nickname_related``
# answers with any shared group, ``canonical`` picks the first group only (for blocking keys).
NICKNAME_GROUPS: Final[tuple[tuple[str, ...], ...]] = (
    ("ALFRED", "ALFIE", "ALF", "FRED", "FREDDIE"),
    ("FREDERICK", "FRED", "FREDDIE", "FREDDY", "FREDDIE"),
    ("ALEXANDER", "ALEX", "ALEC", "ALFIE", "SANDY", "XANDER", "LEX"),
    ("ALEXANDRA", "ALEX", "ALEXA", "LEXI", "LEXIE", "SANDRA", "SASHA"),
    ("ANTHONY", "TONY", "ANT"),
    ("ABIGAIL", "ABBIE", "ABBY", "ABI", "GAIL"),
    ("ANDREW", "ANDY", "DREW"),
    ("BENJAMIN", "BEN", "BENNY", "BENJI"),
    ("CATHERINE", "CATH", "CATHY", "KATE", "KATIE", "KAT", "KATHY", "CAT"),
    ("KATHERINE", "KATE", "KATIE", "KAT", "KATHY", "KATY", "KITTY"),
    ("CHARLES", "CHARLIE", "CHAS", "CHUCK"),
    ("CHARLOTTE", "CHARLIE", "LOTTIE", "LOTTY", "CHARLEY"),
    ("CHRISTOPHER", "CHRIS", "KIT", "TOPHER"),
    ("CHRISTINA", "CHRISTINE", "CHRIS", "CHRISSIE", "TINA", "KIRSTY"),
    ("DANIEL", "DAN", "DANNY"),
    ("DANIELLE", "DANI", "ELLE"),
    ("DAVID", "DAVE", "DAVEY", "DAI"),
    ("EDWARD", "ED", "EDDIE", "TED", "TEDDY", "NED"),
    ("ELEANOR", "ELLIE", "NELL", "NELLIE", "NORA", "ELLA"),
    ("ELIZABETH", "LIZ", "LIZZIE", "LIZZY", "BETH", "BETTY", "ELIZA", "BETSY", "LIBBY", "ELSIE"),
    ("EMILY", "EMMY", "MILLY", "EM"),
    ("EMMA", "EMMY", "EM"),
    ("GEORGE", "GEORDIE", "GEO"),
    ("GEORGINA", "GEORGIE", "GINA"),
    ("HARRY", "HAL", "HAZ"),
    ("HENRY", "HARRY", "HANK", "HAL"),
    ("ISABELLA", "BELLA", "IZZY", "ISSY", "ISABEL", "IZZIE"),
    ("ISABELLE", "BELLE", "IZZY", "ISSY", "ISABEL", "BELLA"),
    ("JACOB", "JAKE", "JAKEY", "JAY"),
    ("JAMES", "JIM", "JIMMY", "JAMIE", "JIMBO"),
    ("JENNIFER", "JEN", "JENNY", "JENNI"),
    ("JESSICA", "JESS", "JESSIE", "JESSIE"),
    ("JONATHAN", "JON", "JONNY", "JONTY"),
    ("JOHN", "JACK", "JOHNNY", "JON"),
    ("JOSEPH", "JOE", "JOEY", "JOE"),
    ("JOSHUA", "JOSH"),
    ("LAWRENCE", "LAURENCE", "LARRY", "LAURIE"),
    ("LEONARD", "LEN", "LENNY", "LEO"),
    ("LOUISE", "LOU", "LOUIE", "LULU"),
    ("LOUIS", "LOUIE", "LOU"),
    ("MARGARET", "MAGGIE", "MEG", "PEGGY", "MADGE", "MAISIE", "DAISY", "MARGE"),
    ("MATTHEW", "MATT", "MATTY"),
    ("MICHAEL", "MIKE", "MICKY", "MICK", "MIKEY"),
    ("MOHAMMED", "MOHAMMAD", "MUHAMMAD", "MOHAMED", "MO"),
    ("NATHAN", "NATE", "NAT"),
    ("NATHANIEL", "NATE", "NAT", "NATHAN"),
    ("NICHOLAS", "NICK", "NICKY", "NICO"),
    ("NICOLA", "NICKY", "NIKKI", "NICOLE"),
    ("OLIVER", "OLLIE", "OLLY", "OLI"),
    ("OLIVIA", "LIVVY", "LIV", "OLLIE", "LIVIA"),
    ("PATRICK", "PADDY", "PAT", "RICK"),
    ("PATRICIA", "PAT", "PATSY", "TRISH", "TRICIA"),
    ("PETER", "PETE"),
    ("REBECCA", "BECKY", "BECCA", "BEX"),
    ("RICHARD", "RICK", "RICKY", "DICK", "RICH", "RICHIE"),
    ("ROBERT", "BOB", "BOBBY", "ROB", "ROBBIE", "BERT"),
    ("SAMUEL", "SAM", "SAMMY"),
    ("SAMANTHA", "SAM", "SAMMY", "SAMMIE"),
    ("SARAH", "SARA", "SAL", "SALLY", "SADIE"),
    ("SOPHIA", "SOPHIE", "SOPH"),
    ("STEPHEN", "STEVEN", "STEVE", "STEVIE"),
    ("SUSAN", "SUE", "SUSIE", "SUZY"),
    ("THEODORE", "THEO", "TED", "TEDDY"),
    ("THOMAS", "TOM", "TOMMY", "TOMMIE"),
    ("TIMOTHY", "TIM", "TIMMY"),
    ("VICTORIA", "VICKY", "VICKI", "TORI", "TORY"),
    ("WILLIAM", "BILL", "BILLY", "WILL", "WILLIE", "LIAM", "WILLS"),
    ("ZACHARY", "ZACH", "ZAC", "ZAK"),
    ("AMELIA", "MILLIE", "AMY", "MILLY", "MELIA"),
    ("MATILDA", "TILLY", "TILLIE", "MATTIE"),
    ("ARCHIBALD", "ARCHIE", "ARCHY"),
    ("ALBERT", "ALBIE", "BERT", "BERTIE", "AL"),
    ("RONALD", "RON", "RONNIE"),
    ("DONALD", "DON", "DONNIE"),
    ("GABRIEL", "GABE", "GABBY"),
    ("GABRIELLA", "GABBY", "GABI", "ELLA"),
    ("FRANCESCA", "FRANKIE", "FRAN", "CESCA"),
    ("FRANCIS", "FRANK", "FRANKIE", "FRAN"),
    ("HANNAH", "HANNA", "ANNA"),
    ("JACQUELINE", "JACKIE", "JACQUI"),
    ("KIMBERLEY", "KIM", "KIMBERLY"),
    ("LEANNE", "LEE", "LEANNA"),
    ("MADISON", "MADDIE", "MADDY"),
    ("MADELEINE", "MADDIE", "MADDY", "MADELINE"),
    ("MAXIMILIAN", "MAX", "MAXIE"),
    ("MAXWELL", "MAX"),
    ("PHILIP", "PHIL", "PHILLIP", "PIP"),
    ("PHOEBE", "PHEBE"),
    ("ROSEMARY", "ROSIE", "ROSE", "ROSY"),
    ("ROSALIND", "ROS", "ROSIE", "ROZ"),
    ("STANLEY", "STAN"),
    ("TERENCE", "TERRY", "TEL"),
    ("THERESA", "TERESA", "TESS", "TESSA", "TERRI"),
    ("VINCENT", "VINCE", "VINNY"),
    ("GRACE", "GRACIE"),
    ("EVELYN", "EVIE", "EVA", "EVE"),
    ("FLORENCE", "FLO", "FLOSSIE", "FLORRIE"),
    ("HARRIET", "HATTIE", "HARRIE"),
    ("JOSEPHINE", "JOSIE", "JO", "JOSEY"),
    ("JOANNE", "JO", "JOJO", "JOANNA"),
    ("LUCY", "LU", "LUCIE"),
    ("LUKE", "LUKEY"),
    ("MARY", "MOLLY", "POLLY", "MAE", "MAMIE"),
    ("MICHELLE", "SHELL", "SHELLEY", "MICHELE"),
    ("RAYMOND", "RAY"),
    ("REGINALD", "REG", "REGGIE"),
    ("SEBASTIAN", "SEB", "SEBBY", "BASTIAN"),
    ("SIDNEY", "SID", "SYD"),
    ("TOBIAS", "TOBY"),
    ("DOMINIC", "DOM", "NICK"),
    ("JAYDEN", "JAY", "JADEN", "JAIDEN"),
    ("KAYDEN", "KAY", "CAYDEN", "KAIDEN"),
    ("LEWIS", "LOUIS", "LOU"),
    ("REUBEN", "RUBEN", "RUBE"),
    ("RUBY", "RUBIE"),
    ("SCARLETT", "SCARLET", "LETTIE"),
    ("SIENNA", "SIENA"),
    ("ZOE", "ZOEY"),
    ("CAMERON", "CAM", "CAMMY"),
    ("CONNOR", "CONOR", "CON"),
    ("DYLAN", "DILLON"),
    ("ELLIOT", "ELLIOTT", "ELI"),
    ("ETHAN", "EFAN"),
    ("FINLEY", "FINLAY", "FINN", "FIN"),
    ("FREYA", "FREJA"),
    ("IMOGEN", "IMMY", "IMI"),
    ("JASMINE", "JAZ", "JAZZ", "JASMIN", "MINNIE"),
    ("KIERAN", "CIARAN", "KIER"),
    ("LAYLA", "LAILA", "LEILA"),
    ("MAISIE", "MAISY", "MAZ"),
    ("MOLLIE", "MOLLY"),
    ("NOAH", "NOA"),
    ("POPPY", "POPS"),
    ("RILEY", "RYLEY"),
    ("TYLER", "TY"),
    ("WILLOW", "WILLA"),
    ("AIDAN", "AIDEN", "ADEN"),
    ("ARTHUR", "ART", "ARTIE"),
    ("HUGO", "HUGH"),
    ("JUSTIN", "JUS"),
    ("KAI", "KYE"),
    ("LEO", "LEON", "LEONARDO"),
    ("MASON", "MACE"),
    ("OSCAR", "OSSIE", "OZZY"),
    ("RONAN", "RO"),
    ("SHANNON", "SHAN"),
    ("STEPHANIE", "STEPH", "STEFFI"),
    ("TRACEY", "TRACY", "TRACE"),
    ("WAYNE", "WAYNEY"),
    ("DEBORAH", "DEBBIE", "DEB", "DEBRA"),
    ("GEMMA", "JEMMA", "GEM"),
    ("KELLY", "KELLIE"),
    ("NATALIE", "NAT", "NATTIE", "NATALIA"),
    ("SHARON", "SHAZ"),
    ("CHANTELLE", "CHANTAL", "SHANTELLE"),
    ("CARL", "KARL"),
    ("CRAIG", "CRAIGY"),
    ("DARREN", "DAZ", "DARRAN"),
    ("GARY", "GAZ", "GARRY"),
    ("LEE", "LEIGH"),
    ("MARK", "MARC", "MARKY"),
    ("PAUL", "PAULY"),
    ("SCOTT", "SCOTTY"),
    ("SEAN", "SHAUN", "SHAWN"),
    ("STUART", "STEWART", "STU"),
    ("JADE", "JAYDE"),
    ("LAURA", "LAURIE", "LOLLY"),
    ("AMANDA", "MANDY", "MANDA"),
    ("AMY", "AIMEE", "AMIE"),
    ("CLAIRE", "CLARE", "CLAIR"),
    ("DONNA", "DON"),
    ("EMILIA", "MILLIE", "EMMY", "MILLY"),
    ("KAYLEIGH", "KAYLEY", "KAYLIE", "KAYLA"),
    ("KERRY", "KERRI", "KERRIE"),
    ("LISA", "LEESA"),
    ("RACHEL", "RACHAEL", "RACH"),
    ("ZARA", "ZAHRA"),
)

# Given "names" that only say that the name is not known (yet): compared as missing, never as
# a disagreement, so "Baby Smith" can join the born child's person.
PLACEHOLDER_GIVEN_NAMES: Final[frozenset[str]] = frozenset(
    {
        "BABY",
        "BABYOF",
        "UNBORN",
        "UNNAMED",
        "UNKNOWN",
        "NK",
        "NOTKNOWN",
        "INFANT",
        "CHILD",
        "BOY",
        "GIRL",
        "MALE",
        "FEMALE",
        "TWIN",
        "TWIN1",
        "TWIN2",
        "TWINA",
        "TWINB",
        "NEWBORN",
        "NONAME",
        "NA",
        "TBC",
        "TBA",
        "X",
        "XX",
        "XXX",
        "ANON",
        "ANONYMOUS",
    }
)

_NICKNAMES: Final[dict[str, frozenset[int]]] = {}
for _index, _group in enumerate(NICKNAME_GROUPS):
    for _name in _group:
        _NICKNAMES.setdefault(_name, frozenset())
        _NICKNAMES[_name] = _NICKNAMES[_name] | {_index}

_NOT_LETTERS = re.compile(r"[^A-Z\s'\-]")
_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=200_000)
def normalise(text: str | None) -> str:
    """Upper-case ASCII letters, single spaces and hyphens; accents and apostrophes dropped
    ("O'Brien" → "OBRIEN", "Zoë" → "ZOE", "smith - jones" → "SMITH-JONES")."""
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_text = decomposed.encode("ascii", "ignore").decode("ascii").upper()
    letters = _NOT_LETTERS.sub("", ascii_text).replace("'", "")
    letters = re.sub(r"\s*-\s*", "-", letters)
    return _SPACES.sub(" ", letters).strip(" -")


def tokens(name: str) -> tuple[str, ...]:
    """The parts of a normalised name: "SMITH-JONES" and "SMITH JONES" → ("SMITH", "JONES")."""
    return tuple(part for part in re.split(r"[\s\-]+", name) if part)


def is_placeholder(given: str) -> bool:
    """Whether a normalised given name only stands in for an unknown one ("BABY", "UNBORN")."""
    compact = given.replace(" ", "").replace("-", "")
    if not compact or compact in PLACEHOLDER_GIVEN_NAMES:
        return True
    first = tokens(given)[0] if given else ""
    # "Baby of Jane", "Unborn Smith", "Twin 1": a placeholder word leads the name.
    return first in {"BABY", "UNBORN", "TWIN", "INFANT", "UNNAMED", "NEWBORN"}


def nickname_related(a: str, b: str) -> bool:
    """Whether two (single-token, normalised) given names are the same name to English speakers."""
    groups_a = _NICKNAMES.get(a)
    if not groups_a:
        return False
    groups_b = _NICKNAMES.get(b)
    return bool(groups_b and groups_a & groups_b)


@lru_cache(maxsize=50_000)
def nickname_variants(given: str) -> frozenset[str]:
    """Every name in every nickname group of ``given`` (itself excluded)."""
    groups = _NICKNAMES.get(given, frozenset())
    return frozenset(name for index in groups for name in NICKNAME_GROUPS[index]) - {given}


@lru_cache(maxsize=200_000)
def canonical(given: str) -> str:
    """The formal form of a given name for blocking ("LIZ" → "ELIZABETH"); itself if unknown."""
    groups = _NICKNAMES.get(given)
    if not groups:
        return given
    return NICKNAME_GROUPS[min(groups)][0]


def canonical_initials(given: str) -> frozenset[str]:
    """Every initial the name could be filed under: its own and each of its formal forms'."""
    groups = _NICKNAMES.get(given, frozenset())
    return frozenset({given[:1]} | {NICKNAME_GROUPS[index][0][:1] for index in groups})


@lru_cache(maxsize=200_000)
def phonetic(name: str) -> str:
    """A phonetic key (Metaphone: Smith, Smyth and Smithe share one; so do Catherine and
    Katherine)."""
    if not name:
        return ""
    return str(jellyfish.metaphone(name))
