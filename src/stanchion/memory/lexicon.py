"""Which slot a liked, used or requested thing belongs to: ``programming_language`` for "Rust",
``drink`` for "green tea". One slot holds one current memory, so "I now prefer Rust" replaces
"I love Python". Things in no category get a slot of their own (``preference:item:hiking``)."""

from __future__ import annotations

import re
from functools import cache

CATEGORIES: dict[str, tuple[str, ...]] = {
    "programming_language": (
        "python",
        "rust",
        "go",
        "golang",
        "java",
        "javascript",
        "typescript",
        "kotlin",
        "swift",
        "c++",
        "c#",
        "ruby",
        "php",
        "scala",
        "haskell",
        "elixir",
        "clojure",
        "julia",
        "perl",
        "lua",
        "dart",
        "zig",
        "ocaml",
        "f#",
        "erlang",
        "fortran",
        "cobol",
    ),
    "editor": (
        "vim",
        "neovim",
        "emacs",
        "vs code",
        "vscode",
        "visual studio code",
        "sublime text",
        "intellij",
        "pycharm",
        "nano",
        "helix",
        "zed",
        "jetbrains ides",
        "notepad++",
    ),
    "operating_system": (
        "linux",
        "ubuntu",
        "fedora",
        "arch linux",
        "debian",
        "windows",
        "macos",
        "mac os",
        "a mac",
        "chromeos",
        "freebsd",
    ),
    "drink": (
        "coffee",
        "tea",
        "green tea",
        "black tea",
        "espresso",
        "latte",
        "cappuccino",
        "matcha",
        "hot chocolate",
        "beer",
        "wine",
        "red wine",
        "white wine",
        "kombucha",
        "sparkling water",
        "orange juice",
        "whisky",
        "whiskey",
        "soda",
        "cola",
        "oat milk",
        "decaf",
    ),
    "cuisine": (
        "italian food",
        "thai food",
        "japanese food",
        "mexican food",
        "indian food",
        "chinese food",
        "korean food",
        "french food",
        "greek food",
        "sushi",
        "pizza",
        "ramen",
        "tacos",
        "curry",
        "pasta",
        "burgers",
        "dumplings",
        "pho",
        "barbecue",
        "bbq",
        "seafood",
        "dim sum",
    ),
    "diet": ("vegetarian", "vegan", "pescatarian", "keto", "gluten-free", "halal", "kosher", "paleo"),
    "color": ("red", "blue", "green", "yellow", "purple", "black", "white", "pink", "teal", "navy", "orange"),
    "music": (
        "jazz",
        "rock",
        "classical music",
        "hip hop",
        "hip-hop",
        "pop music",
        "metal",
        "techno",
        "country music",
        "blues",
        "k-pop",
        "reggae",
        "folk music",
        "lo-fi",
        "indie rock",
        "punk",
        "opera",
        "electronic music",
        "house music",
    ),
    "sport": (
        "football",
        "soccer",
        "basketball",
        "tennis",
        "running",
        "cycling",
        "swimming",
        "climbing",
        "bouldering",
        "yoga",
        "golf",
        "baseball",
        "hockey",
        "badminton",
        "volleyball",
        "skiing",
        "surfing",
        "rugby",
        "cricket",
        "table tennis",
        "squash",
        "rowing",
        "boxing",
    ),
    "theme": ("dark mode", "light mode", "dark theme", "light theme"),
    "seat": ("window seat", "window seats", "aisle seat", "aisle seats", "middle seat"),
    "meeting_time": ("morning meetings", "afternoon meetings", "evening meetings", "early meetings"),
    "units": ("metric units", "metric", "imperial units", "imperial", "celsius", "fahrenheit"),
    "response_length": (
        "concise answers",
        "short answers",
        "brief answers",
        "detailed answers",
        "long answers",
        "concise",
        "brief",
        "short",
        "detailed",
        "verbose",
        "terse",
    ),
    "response_format": (
        "bullet points",
        "bullets",
        "tables",
        "markdown",
        "numbered lists",
        "plain text",
        "code examples",
        "prose",
    ),
    "communication": (
        "email",
        "e-mail",
        "slack",
        "phone calls",
        "text messages",
        "video calls",
        "zoom",
        "microsoft teams",
        "whatsapp",
        "signal",
    ),
    "browser": ("firefox", "chrome", "safari", "brave", "microsoft edge", "opera browser"),
    "database": ("postgres", "postgresql", "mysql", "sqlite", "mongodb", "redis", "cassandra", "duckdb"),
    "cloud": ("aws", "gcp", "google cloud", "azure", "digitalocean", "hetzner"),
    "phone": ("iphone", "android", "pixel", "samsung galaxy"),
    "pet_animal": ("dogs", "cats", "rabbits", "parrots"),
}

LANGUAGES = (
    "english",
    "french",
    "spanish",
    "german",
    "italian",
    "portuguese",
    "dutch",
    "japanese",
    "chinese",
    "mandarin",
    "korean",
    "polish",
    "hindi",
    "arabic",
    "russian",
    "swedish",
    "turkish",
)

PROFESSIONS = (
    "engineer",
    "developer",
    "programmer",
    "teacher",
    "doctor",
    "nurse",
    "designer",
    "manager",
    "scientist",
    "student",
    "lawyer",
    "accountant",
    "architect",
    "chef",
    "writer",
    "journalist",
    "analyst",
    "consultant",
    "pharmacist",
    "dentist",
    "researcher",
    "professor",
    "artist",
    "musician",
    "pilot",
    "electrician",
    "plumber",
    "librarian",
    "photographer",
    "translator",
    "veterinarian",
    "economist",
    "administrator",
    "technician",
    "officer",
    "paramedic",
)

# Nouns a user names a category by ("my favourite colour"), as the category.
NOUNS: dict[str, str] = {
    "colour": "color",
    "programming language": "programming_language",
    "coding language": "programming_language",
    "text editor": "editor",
    "ide": "editor",
    "os": "operating_system",
    "operating system": "operating_system",
    "beverage": "drink",
    "food": "cuisine",
    "dish": "cuisine",
    "meal": "cuisine",
    "genre": "music",
    "music genre": "music",
    "band": "music",
    "sport": "sport",
    "team sport": "sport",
}


@cache
def _pattern(term: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w+#-]){re.escape(term)}(?![\w+#-])")


@cache
def _terms() -> list[tuple[str, str]]:
    """(term, category), longest first: "orange juice" is a drink before "orange" is a colour."""
    pairs = [(term, category) for category, terms in CATEGORIES.items() for term in terms]
    return sorted(pairs, key=lambda p: -len(p[0]))


def category_of(text: str) -> str | None:
    """The category of the first lexicon term ``text`` contains (longest terms first), or None."""
    lowered = text.lower()
    best: tuple[int, str] | None = None
    for term, category in _terms():
        found = _pattern(term).search(lowered)
        if found and (best is None or found.start() < best[0]):
            best = (found.start(), category)
    return best[1] if best else None


def noun_category(noun: str) -> str:
    """A category a user names ("colour", "coding language") as its slot word."""
    noun = noun.lower().strip()
    return NOUNS.get(noun, noun)


def language_in(text: str) -> str | None:
    lowered = text.lower()
    for language in LANGUAGES:
        if _pattern(language).search(lowered):
            return language
    return None


def profession_in(text: str) -> bool:
    words = re.findall(r"[a-z]+", text.lower())
    return bool(words) and words[-1].rstrip("s") in PROFESSIONS
