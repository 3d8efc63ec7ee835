"""The offline extractor: first-person statements of fact and preference, by rules.

Each user message is cut into clauses ("I live in Berlin and I work at Siemens" is two); a clause
is read only when the user speaks of themself (it starts with "I", "my" or "call me" once fillers
such as "actually," or "from now on," are set aside). Questions, conditionals ("if I lived in ...")
and other people's statements ("my colleague prefers Java") give nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from stanchion.memory.lexicon import category_of, language_in, noun_category, profession_in
from stanchion.memory.records import Candidate, Kind, slot_name
from stanchion.types import Message

_CLAUSE_END = re.compile(
    r"(?<=[.!?;])\s+|\n+|,?\s+(?:and|but|so)\s+(?=(?:i|i'm|my|call me)\b)|,\s+(?=(?:i|i'm|my)\s)", re.I
)
_FILLER = re.compile(
    r"^(?:(?:actually|oh|ok|okay|hmm+|um+|uh+|right|sure|oops|sorry|wait|well|also|btw|by the way|so|and|but|hey|hi|hello|honestly|just so you know|"
    r"fyi|update|correction|quick update|heads up|anyway|these days|nowadays|lately|now|yes|no|"
    r"to be honest|for the record|in fact|these days)\b[,:!\s-]*)+",
    re.I,
)
_GREETING = re.compile(r"^(?:hi|hello|hey|good (?:morning|afternoon|evening))\b", re.I)
_GREETED_NAME = re.compile(r"^(?i:i'm|i am)\s+(?P<v>[A-Z][\w'-]+)$")
_FROM_NOW_ON = re.compile(r"^(?:from now on|going forward|in future|in the future|from today)[,:\s]+", re.I)
_TRAILING_FROM_NOW_ON = re.compile(r",?\s+(?:from now on|going forward|in (?:the )?future)\s*$", re.I)
# Alternatives that never match the same word (an ambiguous pair backtracks exponentially).
_ADVERBS = r"(?:(?:much|now|still|also|do|kind of|quite|always|[a-z]+ly)\s+)*"
_VALUE_END = re.compile(
    r"\s*(?:,|;|:|\(|\s-\s|\bbecause\b|\bsince\b|\bbut\b|\bso\b|\bwhich\b|\bthough\b|\bthese days\b|"
    r"\bnowadays\b|\banymore\b|\bany more\b|\bover\b|\brather than\b|\binstead of\b|\bmore than\b|"
    r"\bthan\b|\bnow\b|\bat the moment\b|\bright now\b|\bfor now\b|\bas well\s*$|\btoo\s*$|\bfrom now on\b|"
    r"\bif possible\b|\bplease\b|\bthanks\b|\bwith my\b|\bwhen\b|\bwhile\b|\s(?:on|at|for|as an?|last|"
    r"yesterday|ago|this (?:week|month|year)|since|every|as|and (?:use|now|i)|instead)\b)",
    re.I,
)
_NOT_ABOUT_ME = re.compile(
    r"^(?:if|when|whether|suppose|imagine|would|should|could|do you|does|did you)\b", re.I
)
_MY_IGNORED = frozenset(
    {
        "question",
        "point",
        "problem",
        "guess",
        "understanding",
        "bad",
        "issue",
        "concern",
        "idea",
        "plan",
        "thought",
        "apologies",
        "pleasure",
        "request",
        "answer",
        "goal",
        "task",
        "code",
    }
)

_NAME = re.compile(
    r"^(?:my name is|my name's|call me|please call me|you can call me|i'm called|i am called|i go by)\s+"
    r"(?P<v>[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*){0,2})"
)
_RESIDENCE = re.compile(
    r"^i(?:'m| am)?\s+" + _ADVERBS + r"(?:live|living|reside|residing|based|settled)\s+(?:in|at)\s+(?P<v>.+)",
    re.I,
)
_MOVED = re.compile(
    r"^i(?:'ve| have)?\s+"
    + _ADVERBS
    + r"(?:just\s+|recently\s+|finally\s+)?(?:moved|relocated)\s+(?:back\s+)?to\s+(?P<v>.+)",
    re.I,
)
_ORIGIN = re.compile(r"^i(?:'m| am| was)?\s+(?:originally\s+)?(?:from|grew up in|born in)\s+(?P<v>.+)", re.I)
_EMPLOYER = re.compile(
    r"^i(?:'m| am)?\s+" + _ADVERBS + r"(?:work|working|employed)\s+(?:at|for|by)\s+(?P<v>.+)", re.I
)
_JOINED = re.compile(
    r"^i(?:'ve| have)?\s+(?:just\s+|recently\s+)?(?:joined|started at|started working at)\s+(?P<v>.+)", re.I
)
_JOB = re.compile(
    r"^(?:i(?:'m| am)?\s+"
    + _ADVERBS
    + r"(?:work|working)\s+as|my job is|my job title is|my role is|i'm now|i am now)\s+(?P<v>.+)",
    re.I,
)
_IAM = re.compile(
    r"^i(?:'m| am)\s+" + _ADVERBS + r"(?P<v>(?:a|an)\s+.+|vegetarian.*|vegan.*|pescatarian.*)", re.I
)
_ALLERGY = re.compile(
    r"^i(?:'m| am)\s+" + _ADVERBS + r"(?P<neg>no longer\s+|not\s+)?allergic to\s+(?P<v>.+)"
    r"|^i have an?\s+(?P<v2>[\w -]+?)\s+allergy\b",
    re.I,
)
_MY = re.compile(
    r"^my\s+(?P<k>[\w' -]{2,40}?)\s+(?:is|are|was changed to|has changed to|changed to|is now|are now)\s+(?P<v>.+)",
    re.I,
)
_VERBS = (
    r"prefer|like|love|enjoy|adore|favou?r|hate|dislike|detest|loathe|can't stand|cannot stand|"
    r"use|drink|eat|play|listen to|watch|read|want|need|write|code in|am into|'m into|am a fan of|'m a fan of|"
    r"am a big fan of|'m a big fan of|switched to|went back to|moved to using"
)
# "I use the search box", "I want a refund": a preference only when the thing is in a category.
_NEEDS_CATEGORY = frozenset(
    {"use", "drink", "eat", "play", "listen to", "watch", "read", "want", "need", "write", "code in"}
)
_NEGATIVE = frozenset({"hate", "dislike", "detest", "loathe", "can't stand", "cannot stand"})
_PREFERENCE = re.compile(r"^i\s*" + _ADVERBS + r"(?P<verb>" + _VERBS + r")\s+(?P<v>.+)", re.I)
_NEGATED = re.compile(
    r"^i\s+(?:no longer|don't|do not|dont|never)\s+"
    + _ADVERBS
    + r"(?P<verb>"
    + _VERBS
    + r"|live in|work at|work for)\s+(?P<v>.+?)(?:\s+(?:anymore|any more|these days|now))?$"
    r"|^i(?:'m| am)\s+(?:no longer|not)\s+(?P<verb2>into|a fan of|living in|working at|working for)\s+(?P<v2>.+?)"
    r"(?:\s+(?:anymore|any more))?$"
    r"|^i(?:'ve| have)?\s+(?:stopped|quit|gave up|given up)\s+(?P<verb3>using|drinking|eating|playing|watching|"
    r"listening to|reading)?\s*(?P<v3>.+)",
    re.I,
)
_INSTRUCTION = re.compile(
    r"^(?:please\s+)?(?:always\s+|never\s+)?(?:answer|reply|respond|write|talk|speak|use|give|keep|show|format|"
    r"send|book|get|order|switch to|stick to)\b.*",
    re.I,
)


class RuleExtractor:
    """Facts and preferences from the user's own first-person statements, without a model."""

    name = "rules"

    async def extract(self, messages: Sequence[Message]) -> list[Candidate]:
        return self.extract_sync(messages)

    def extract_sync(self, messages: Sequence[Message]) -> list[Candidate]:
        found: dict[str, Candidate] = {}
        for message in messages:
            if message.role != "user":
                continue
            for clause in clauses(message.content):
                candidate = read_clause(clause)
                if candidate is not None:
                    found.pop(candidate.slot, None)  # the later statement of a slot wins
                    found[candidate.slot] = candidate
        return list(found.values())


def clauses(text: str) -> list[str]:
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    parts: list[str] = []
    for part in (c.strip() for c in _CLAUSE_END.split(text) if c and c.strip()):
        if parts and _GREETING.fullmatch(parts[-1].rstrip(",.!")):
            parts[-1] = f"{parts[-1]} {part}"  # "Hi, I'm Jonas" stays one clause
        else:
            parts.append(part)
    return parts


# A statement about oneself is short; longer clauses (pasted text, logs) are not read.
MAX_CLAUSE_CHARS = 300


def read_clause(clause: str) -> Candidate | None:
    """The fact or preference one clause states about the user, or None."""
    if clause.rstrip().endswith("?") or len(clause) > MAX_CLAUSE_CHARS:
        return None
    said = clause.strip().rstrip(".!")
    greeted = _GREETING.match(said)
    body = _FILLER.sub("", said)
    if greeted and (named := _GREETED_NAME.match(body)):
        return Candidate("fact", "fact:name", body[0].upper() + body[1:], named["v"])
    instruction = False
    for pattern in (_FROM_NOW_ON, _TRAILING_FROM_NOW_ON):
        if pattern.search(body):
            body = pattern.sub("", body).strip()
            body = _FILLER.sub("", body)
            instruction = True
    if not body or _NOT_ABOUT_ME.match(body):
        return None
    text = body[0].upper() + body[1:]
    for reader in (_name, _allergy, _negated, _residence, _employer, _job, _i_am, _my, _preference):
        candidate = reader(body, text)
        if candidate is not None:
            return candidate
    if instruction or _INSTRUCTION.match(body):
        return _instruction(body, text, explicit=instruction)
    return None


def _value(raw: str) -> str:
    value = _VALUE_END.split(raw, maxsplit=1)[0].strip(" .!\"'")
    return re.sub(r"^(?:the|a|an|to|on|in|at)\s+", "", value, flags=re.I).strip()


def _item(value: str) -> str:
    words = re.findall(r"[a-z0-9+#]+", value.lower())
    return "_".join(w for w in words if w not in {"a", "an", "the", "my", "to", "of"})[:40]


def _fact(slot: str, text: str, value: str, *, negated: bool = False) -> Candidate | None:
    return Candidate("fact", slot, text, value, negated) if value else None


def _name(body: str, text: str) -> Candidate | None:
    found = _NAME.match(body[0].lower() + body[1:]) or _NAME.match(body)
    return _fact("fact:name", text, found["v"].strip()) if found else None


def _allergy(body: str, text: str) -> Candidate | None:
    found = _ALLERGY.match(body)
    if not found:
        return None
    value = _value(found["v"] or found["v2"] or "")
    return _fact(slot_name("fact", "allergy", _item(value)), text, value, negated=bool(found["neg"]))


def _residence(body: str, text: str) -> Candidate | None:
    found = _RESIDENCE.match(body) or _MOVED.match(body)
    if found:
        return _fact("fact:home_city", text, _value(found["v"]))
    found = _ORIGIN.match(body)
    return _fact("fact:hometown", text, _value(found["v"])) if found else None


def _employer(body: str, text: str) -> Candidate | None:
    found = _EMPLOYER.match(body) or _JOINED.match(body)
    return _fact("fact:employer", text, _value(found["v"])) if found else None


def _job(body: str, text: str) -> Candidate | None:
    found = _JOB.match(body)
    if not found:
        return None
    value = _value(found["v"])
    if body.lower().startswith(("i'm now", "i am now")) and not profession_in(value):
        return None
    return _fact("fact:job_title", text, value)


def _i_am(body: str, text: str) -> Candidate | None:
    found = _IAM.match(body)
    if not found:
        return None
    value = _value(found["v"])
    if category_of(value) == "diet":
        return Candidate("preference", "preference:diet", text, value)
    if profession_in(value):
        return _fact("fact:job_title", text, value)
    return None


def _my(body: str, text: str) -> Candidate | None:
    found = _MY.match(body)
    if not found:
        return None
    noun = found["k"].lower().replace("'s name", " name").replace("'s", "").strip()
    if noun in _MY_IGNORED or len(found["v"].split()) > 10:
        return None
    value = _value(found["v"])
    if not value:
        return None
    if re.search(r"\b(?:favou?rite|preferred)\b", noun) and not re.match(
        r"^(?:favou?rite|preferred)\b", noun
    ):
        return None  # "my colleague's favourite language is Scala": someone else's preference
    favourite = re.match(r"^(?:favou?rite|preferred|go-to)\s+(?P<n>.+)$", noun)
    if favourite:
        category = category_of(value) or noun_category(favourite["n"])
        return Candidate("preference", slot_name("preference", category), text, value)
    if noun in ("home", "hometown", "city", "home city", "home town"):
        return _fact("fact:home_city", text, value)
    if noun in ("employer", "company", "workplace"):
        return _fact("fact:employer", text, value)
    if noun in ("job", "role", "job title", "title", "profession", "occupation"):
        return _fact("fact:job_title", text, value)
    return _fact(slot_name("fact", noun), text, value)


def _preference_slot(verb: str, value: str) -> str:
    category = category_of(value)
    if category:
        return slot_name("preference", category)
    if verb in ("live in", "living in"):
        return "fact:home_city"
    if verb in ("work at", "work for", "working at", "working for"):
        return "fact:employer"
    return slot_name("preference", "item", _item(value))


def _preference(body: str, text: str) -> Candidate | None:
    found = _PREFERENCE.match(body)
    if not found:
        return None
    verb = found["verb"].lower().lstrip("'").removeprefix("am ")
    value = _value(found["v"])
    if not value or len(value.split()) > 8:
        return None
    if verb in _NEEDS_CATEGORY and not category_of(value):
        return None  # "I use the search box", "I read the report": not a preference
    slot = _preference_slot(verb, value)
    return Candidate("preference", slot, text, value, negated=verb in _NEGATIVE)


def _negated(body: str, text: str) -> Candidate | None:
    found = _NEGATED.match(body)
    if not found:
        return None
    verb = (found["verb"] or found["verb2"] or found["verb3"] or "").lower()
    value = _value(found["v"] or found["v2"] or found["v3"] or "")
    if not value:
        return None
    slot = _preference_slot(verb, value)
    kind: Kind = "fact" if slot.startswith("fact:") else "preference"
    return Candidate(kind, slot, text, value, negated=True)


def _instruction(body: str, text: str, *, explicit: bool) -> Candidate | None:
    """ "From now on, answer in French" and "always use bullet points": how to answer."""
    lowered = body.lower()
    for named in re.finditer(r"\b(?:in|to|into)\s+(\w+)", lowered):  # "answer in French", "switch to English"
        if language := language_in(named[1]):
            return Candidate("preference", "preference:response_language", text, language.capitalize())
    category = category_of(body)
    if category:
        found = re.search(
            r"(?<![\w-])(" + "|".join(map(re.escape, _terms_of(category))) + r")(?![\w-])", lowered
        )
        return Candidate("preference", slot_name("preference", category), text, found[1] if found else body)
    if not explicit:
        return None
    words = _item(body).split("_")[:3]
    return Candidate("preference", slot_name("preference", "instruction", *words), text, body)


def _terms_of(category: str) -> tuple[str, ...]:
    from stanchion.memory.lexicon import CATEGORIES

    return tuple(sorted(CATEGORIES[category], key=len, reverse=True))
