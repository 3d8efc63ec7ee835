"""Person names and places from their context, and the clean-up of the model's spans.

spaCy's small model misses names and places that no context in its training vouched for, takes
many names for places (and the reverse), and lets spans run over line breaks. These rules are
about how people write, not about any one data set:

- context that only a person's name fills: "call me X", "Dear X", "my son X", "directed by X",
  "X, can you ...", a speaker's label at the start of a line ("Anna: ..."), the line of 2-3
  capitalised words above an address, phone number or e-mail (a letter's or a signature's
  name line);
- context that only a place fills: "based in", "moved here from", "flew to", "University of";
- a name found once is the same name elsewhere in the text ("Faina D. Yefremova ... early
  Yefremova"), and the members of a list ("Gary, Anna and Derek") are of one kind;
- a name or place inside a street address is part of the address; a span ends at a line break;
  "Smith, Jones and Brown LLP" or "the Davis Orchestra" is an organisation, not people.

``refine(text, found)`` applies the last three to everything the recognizers and the model
proposed; the others are recognizers like those of ``guards.recognizers``.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Sequence

from stanchion.guards.recognizers import Found

_UP = r"[^\W\d_a-z]"  # an upper-case letter, any script
_CAP = rf"{_UP}[^\W\d_]*(?:['’-]{_UP}?[^\W\d_]+)*"
_LOW_NAME = r"[^\W\d_]{2,}"
_STOP = (
    r"(?:a|an|the|and|or|but|not|no|so|very|just|me|my|you|your|him|her|his|them|they|it|its|this"
    r"|that|there|here|in|on|at|to|for|from|with|by|of|as|is|was|are|be|please|now|then|too|when"
    r"|if|back|later|tomorrow|today|tonight|soon|asap|again|anytime|whenever|once|after|before|maybe)"
)
_UNIT_WORDS = r"(?:Apt|Apartment|Suite|Ste|Unit|Box|Flat|Floor|PSC|Street|Road|Avenue)"
_NOT_NAMES = (  # capitalised words that start sentences and clauses, never names (not "June", "Jan")
    r"(?:I|I'm|I'd|I'll|I've|He|She|It|We|You|They|This|That|These|Those|The|A|An|My|Our|Your|His"
    r"|Her|Their|When|Where|What|Who|Why|How|Which|Hello|Hi|Hey|Dear|Thanks|Please|Yes|No|And|But"
    r"|Or|If|So|Then|There|Here|Everyone|Someone|Somebody|Nobody|All|Some|Any|Mr|Mrs|Ms|Dr|Miss"
    r"|Mx|Prof|Sir|Madam|Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday|Today|Yesterday"
    r"|Tomorrow|January|February|March|July|September|October|November|December|Mon|Tue|Tues|Wed"
    r"|Thu|Thur|Thurs|Fri|Sat|Feb|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|Sie|Ich|Wir|Ihr|Ihnen|Der"
    r"|Die|Das|Den|Dem|Ein|Eine|Und|Aber|Wie|Was|Wer|Les|Los|Las|Elle|Nous|Vous|Usted)"
)
_NAME_TOKEN = rf"(?!(?:{_UNIT_WORDS}|{_NOT_NAMES})\b){_CAP}"
_FULL = rf"{_NAME_TOKEN}(?:\s+(?:{_UP}\.?\s+)?{_NAME_TOKEN}){{0,2}}"  # "Ryan P Costa", "Zoe Young"

# ---- person names from context ---------------------------------------------------------------

_KIN = (
    r"kid|son|daughter|child|wife|husband|mother|mom|mum|father|dad|brother|sister|friend|boss"
    r"|colleague|partner|cousin|uncle|aunt|nephew|niece|grandson|granddaughter|grandmother"
    r"|grandfather|grandma|grandpa|fiancée?|boyfriend|girlfriend|neighbou?r|manager|doctor"
)
_ROLES = (  # "songwriter Zoe Young", "CEO Jane Roe"
    r"(?:songwriter|singer|guitarist|drummer|author|writer|novelist|poet|actor|actress|director"
    r"|producer|composer|painter|artist|journalist|reporter|CEO|CFO|CTO|chairman|chairwoman"
    r"|president|senator|governor|mayor|minister|professor|coach|captain|detective|officer)"
)
# Strong: a name, even in lower case ("my name is vitoria", "people call me višeslav").
_STRONG = re.compile(
    rf"\b(?i:(?:my|his|her|their|your|maiden|last|first|full|middle)\s+name\s+is|name's|call(?:s|ed)?\s+me"
    rf"|named\s+(?:him|her|me|them|it)|nicknamed)\s+(?!{_STOP}\b)({_LOW_NAME}(?:\s+(?:[^\W\d_]\.?\s+)?(?!{_STOP}\b){_LOW_NAME})?)\b"
)
# A capitalised name after words that introduce a person.
_BEFORE = re.compile(
    rf"\b(?:(?i:dear|hi|hello|hey|thanks,?|thank you,?|regards,|cheers,|sincerely,|attn:?"
    rf"|directed by|written by|produced by|starring|featuring|said|says|asked|told|replied|shouted at"
    rf"|speak to|speak with|talk to|talk with|meet with|follow up with|tribute to|assistant to"
    rf"|secretary to|married to|engaged to|(?:son|daughter|wife|husband|widow|child) of"
    rf"|name:|my (?:{_KIN})|our (?:{_KIN})|{_ROLES}))[ \t]*:?\s+({_FULL})"
    rf"|\b(?i:add)\s+({_FULL})\s+as\b"
)
_SAID_TO = re.compile(
    rf"\b(?:said|says|shouted|whispered)\s+{_FULL}\s+to\s+({_FULL})"
)  # "said Gladys to Logan"
# A name before what only people do or are.
_AFTER = re.compile(
    rf"(?:^|(?<=[.!?:\n\"])\s*)({_FULL}),\s+(?i:can|could|would|will|please|do|did|are|have)\b"
    rf"|\b({_FULL})(?:\s+(?:shouted|yelled|whispered|laughed|nodded|was born)|['’]s (?:{_KIN}))\b"
)
# A speaker's label: "Anna: ..." at the start of a line, unless it names a field.
_FIELDS = (
    r"Name|Address|Phone|Tel|Telephone|Mobile|Cell|Fax|Desk|Office|Home|Work|Email|E-mail|Mail"
    r"|Website|Web|Url|When|Where|What|Why|How|Who|Date|Time|Subject|To|From|Cc|Bcc|Re|Fwd|Note"
    r"|Notes|Zip|Postcode|Bot|User|Customer|Agent|Assistant|System|Human|AI|Q|A|Question|Answer"
    r"|Title|Company|Organisation|Organization|Info|Personal Info|Location|City|Country|State"
    r"|Summary|Description|Status|Error|Warning|Example|Input|Output|Result|Total|Price|Step"
    r"|Update|Edit|Source|Comment|Reply|Message|Directed By|Starring|Genre|Rating|Id|Ssn|Iban"
    r"|Received|Precedence|Sender|Organization|Lines|Path|Newsgroups|References|Importance"
    r"|Priority|Encoding|Boundary|Charset|Attachment|Attachments|Signature|Sent|Tip|Hint|Usage"
)
_SPEAKER = re.compile(rf"(?m)^[ \t>]*(?!(?i:{_FIELDS})\s*:)([^\W\d_][^\W\d_'’-]+)[ \t]*:[ \t]*(?=[\"'\w])")
# A line of two or three capitalised words: a name when an address or a number follows.
_NAME_LINE = re.compile(
    rf"(?m)^[ \t>*?•·]*(?:\w+(?: \w+)?:[ \t]*)?"
    rf"({_NAME_TOKEN}(?:[ \t]+(?:{_UP}\.?[ \t]+)?{_NAME_TOKEN}){{1,2}})[ \t]*$"
)
_MARKS = " \t>*?•·"
_CONTACT = ("STREET_ADDRESS", "PHONE_NUMBER", "EMAIL_ADDRESS")


def context_names(text: str) -> Iterator[Found]:
    """Names that their context vouches for (above spaCy's 0.85, which calls many of them
    places)."""
    for m in _STRONG.finditer(text):
        yield Found(m.start(1), m.end(1), "PERSON", 0.86)
    for pattern in (_BEFORE, _AFTER, _SAID_TO):
        for m in pattern.finditer(text):
            group = next(i for i, g in enumerate(m.groups(), 1) if g)
            if not m.group(group).isupper():  # "SPEAK TO A REAL PERSON" is shouting, not a name
                yield Found(m.start(group), m.end(group), "PERSON", 0.86)
    speakers = list(_SPEAKER.finditer(text))
    if len(speakers) >= 2:  # a transcript: one speaker's label on each of several lines
        for m in speakers:
            yield Found(m.start(1), m.end(1), "PERSON", 0.86)


def name_lines(text: str, found: Sequence[Found]) -> Iterator[Found]:
    """The name line of a letter or a signature: 2-3 capitalised words alone on the first line
    of a block, with an address, phone number or e-mail on one of the next seven lines."""
    contacts = sorted(f.start for f in found if f.entity in _CONTACT and f.score >= 0.5)
    for m in _NAME_LINE.finditer(text):
        above = text[max(0, m.start() - 200) : m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if above.strip(_MARKS):
            continue  # not the first line of its block
        reach = m.end()
        for _ in range(7):
            reach = text.find("\n", reach + 1)
            if reach < 0:
                reach = len(text)
                break
        nearest = bisect.bisect_right(contacts, m.end())
        if nearest < len(contacts) and contacts[nearest] <= reach:
            yield Found(m.start(1), m.end(1), "PERSON", 0.86)


# ---- places from context ---------------------------------------------------------------------

_LINK = r"(?:de|del|della|da|do|dos|das|di|du|la|le|les|van|von|der|nad|na|am|an|im|sur|upon)"
_NOT_PLACES = (  # days, months and pronouns: "in January", "in Denver Tue/Thu", "from I"
    r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday|Today|Yesterday|Tomorrow|January"
    r"|February|March|April|May|June|July|August|September|October|November|December|Mon|Tue|Tues"
    r"|Wed|Thu|Thur|Thurs|Fri|Sat|Sun|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|I|We|You|He"
    r"|She|It|They)"
)
_PLACE_WORD = rf"(?!{_NOT_PLACES}\b){_CAP}"
_PLACE = rf"{_PLACE_WORD}(?:\s+(?:{_LINK}\s+)?{_PLACE_WORD}){{0,3}}"
_PLACE_BEFORE = re.compile(
    rf"\b(?i:based in|located in|born in|lives? in|lived in|living in|moved (?:here )?(?:to|from)"
    rf"|(?:I am|I'm|we are|we're|originally) from|(?:I am|I'm|we are|we're) in|year in"
    rf"|(?:fly|flew|flying|travel(?:l?ed)?|returned|going|coming|trip|relocated|drove|arrived) (?:to|at|in)"
    rf"|university of|city of|town of|village of|home city|home town|hometown"
    rf"|(?:where|location|city|town|country|venue|place of birth|birthplace):)\s+({_PLACE})"
    rf"|\b(?:at|for|with|joined)\s+{_CAP}(?:\s+{_CAP}){{0,2}}\s+in\s+({_PLACE})"  # "at Acme Corp in Bremen"
)


def context_places(text: str) -> Iterator[Found]:
    for m in _PLACE_BEFORE.finditer(text):
        group = 1 if m.group(1) else 2
        yield Found(m.start(group), m.end(group), "LOCATION", 0.86)


# ---- clean-up of the proposed spans ----------------------------------------------------------

_ORG_WORDS = (
    r"Orchestra|Band|Inc|Incorporated|Corp|Corporation|Ltd|Limited|LLC|LLP|PLC|GmbH|AG|SA|Group"
    r"|Partners|Associates|Technologies|Solutions|Company|Co|Bank|Foundation|Institute|Agency"
    r"|Labs?|Holdings|Industries|Systems|Services|Consulting|Ventures|Capital|Media|Studios?"
)
_ORG = re.compile(
    rf"(?:{_CAP}(?:,\s+|\s+(?:and|&)\s+)){{0,4}}{_CAP}(?:\s+{_CAP}){{0,2}}\s+(?:{_ORG_WORDS})\b\.?"
)
# Where an employer or a company stands: "I work for Thinknum", "Coden is a design agency".
_ORG_CONTEXT = re.compile(
    rf"\b(?i:work(?:s|ed|ing)? (?:for|at)|employed by|hired by)\s+({_CAP}(?:\s+{_CAP}){{0,2}})"
    rf"|({_CAP}(?:\s+{_CAP}){{0,2}})\s+is\s+an?\s+(?:[\w-]+\s+){{0,3}}?(?i:company|agency|firm|startup"
    rf"|corporation|bank|business|brand|consultancy|organi[sz]ation|non-?profit|charity|NGO|university)\b"
)
_LIST = re.compile(  # single words, on one line: "Gary, Anna and Derek", not "Anna Berg and Jo Ek"
    rf"(?<![\w-]){_NAME_TOKEN}(?:,[ \t]+{_NAME_TOKEN}){{0,20}}+,?[ \t]+(?:and|&|or)[ \t]+"
    rf"{_NAME_TOKEN}(?![\w-]|[ \t]+{_UP})"
)
_LIST_ITEM = re.compile(_NAME_TOKEN)
_NER = ("PERSON", "LOCATION")


def _mask(size: int, spans: Iterable[tuple[int, int]]) -> bytearray:
    """One byte a character, 1 where a span covers it: overlap tests in linear time."""
    mask = bytearray(size)
    for start, end in spans:
        mask[start:end] = b"\x01" * (end - start)
    return mask


def _inside(mask: bytearray, start: int, end: int) -> bool:
    return end > start and 0 not in mask[start:end]


def _touches(mask: bytearray, start: int, end: int) -> bool:
    return 1 in mask[start:end]


def _trim(text: str, f: Found) -> Found | None:
    """A name or place ends at a line break (its first line with letters is kept) and before a
    possessive; leading lower-case words ("ex-Zombie Lundberg") are not part of it."""
    start, end = f.start, f.end
    piece = text[start:end]
    if "\n" in piece:
        lines = [(m.start(), m.end()) for m in re.finditer(r"[^\n]+", piece)]
        best = next((se for se in lines if any(ch.isalpha() for ch in piece[se[0] : se[1]])), None)
        if best is None:
            return None
        start, end = start + best[0], start + best[1]
    while end > start and text[end - 1] in " \t>,;:":
        end -= 1
    if text[start:end].endswith(("'s", "’s", " '", " ’")):
        end -= 2
    while end > start and text[end - 1] in " \t":
        end -= 1
    words = list(re.finditer(r"\S+", text[start:end]))
    if (
        len(words) > 1
        and f.entity == "PERSON"
        and words[0].group()[0].islower()
        and any(w.group()[0].isupper() for w in words[1:])
    ):
        start += next(w.start() for w in words[1:] if w.group()[0].isupper())
    if end <= start:
        return None
    return Found(start, end, f.entity, f.score)


def refine(
    text: str, found: Sequence[Found], model: Sequence[Found] = (), threshold: float = 0.5
) -> list[Found]:
    """``found`` (the recognizers') and ``model`` (the NER model's) with names and places
    trimmed, dropped inside addresses and organisations, overlapping spans of one kind merged,
    carried to their other mentions and to the other members of their lists."""
    proposed = [*found, *model]
    addresses = _mask(
        len(text),
        ((f.start, f.end) for f in proposed if f.entity == "STREET_ADDRESS" and f.score >= threshold),
    )
    orgs = _mask(len(text), (m.span() for m in _ORG.finditer(text)))
    # The model's guess in an employer's place is a company; a rule's name there stays.
    employers = _mask(
        len(text), (m.span(1) if m.group(1) else m.span(2) for m in _ORG_CONTEXT.finditer(text))
    )
    out: list[Found] = []
    vouched: list[Found] = []  # names to carry to their other mentions
    for f, by_model in [*((f, False) for f in found), *((f, True) for f in model)]:
        if f.entity not in _NER:
            out.append(f)
            continue
        trimmed = _trim(text, f)
        if (
            trimmed is None
            or _inside(addresses, trimmed.start, trimmed.end)
            or _inside(orgs, trimmed.start, trimmed.end)
            or (by_model and _inside(employers, trimmed.start, trimmed.end))
        ):
            continue
        out.append(trimmed)
        if trimmed.entity == "PERSON" and (not by_model or _full_name(text[trimmed.start : trimmed.end])):
            vouched.append(trimmed)
    lines = list(name_lines(text, out))
    out = _merge(text, [*out, *lines])
    out += _mentions(text, [*vouched, *lines], out)
    out += _lists(text, out, orgs)
    return out


def _full_name(span: str) -> bool:
    """Two or more words, each capitalised and not in capitals: "Faina Yefremova", not
    "Ximian GNOME" (the model's guesses that carry to other mentions)."""
    words = span.split()
    return len(words) >= 2 and all(w[0].isupper() and not w.isupper() for w in words)


_NAME_PART = re.compile(rf"(?:\s*(?:{_NAME_TOKEN}|{_LINK}|{_UP}\.?))*\s*")


def _merge(text: str, found: Sequence[Found]) -> list[Found]:
    """Overlapping names (or places) become one span, with the best score of its parts, where
    what the longer adds is more name (a context rule's "Dominique" and the model's "Dominique
    de Villepin"); otherwise the better scored stays alone, as ``resolve`` would keep it."""
    out = [f for f in found if f.entity not in _NER]
    for entity in _NER:
        spans: list[Found] = []
        for f in sorted((f for f in found if f.entity == entity), key=lambda f: f.start):
            last = spans[-1] if spans else None
            if last is None or f.start >= last.end:
                spans.append(f)
                continue
            start, end = min(last.start, f.start), max(last.end, f.end)
            best = last if (last.score, last.end - last.start) >= (f.score, f.end - f.start) else f
            extra = text[start : best.start] + " " + text[best.end : end]
            if _NAME_PART.fullmatch(extra):
                spans[-1] = Found(start, end, entity, best.score)
            else:
                spans[-1] = best
        out += spans
    return out


def _mentions(text: str, vouched: Sequence[Found], found: Sequence[Found]) -> list[Found]:
    """Other mentions of a name found once: its capitalised words elsewhere in the text."""
    names = [f for f in vouched if f.score >= 0.8]
    words = {w for f in names for w in re.findall(_NAME_TOKEN, text[f.start : f.end]) if len(w) > 2}
    if not words:
        return []
    taken = _mask(len(text), ((f.start, f.end) for f in found if f.entity == "PERSON"))
    pattern = re.compile(
        rf"(?<![\w-])(?:{'|'.join(map(re.escape, sorted(words, key=len, reverse=True)))})(?![\w-])"
    )
    extra = []
    for m in pattern.finditer(text):
        if not _touches(taken, m.start(), m.end()):
            extra.append(Found(m.start(), m.end(), "PERSON", 0.86))
    return extra


def _lists(text: str, found: Sequence[Found], orgs: bytearray) -> list[Found]:
    """The members of a list of single capitalised words are people when at least as many of
    them were found as people as were found as places."""
    extra: list[Found] = []
    kinds = {
        kind: _mask(len(text), ((f.start, f.end) for f in found if f.entity == kind and f.score >= 0.5))
        for kind in _NER
    }
    for m in _LIST.finditer(text):
        before = re.search(r"(\S+)[ \t]+$", text[max(0, m.start() - 40) : m.start()])
        if _inside(orgs, m.start(), m.end()) or (before and before.group(1)[0].isupper()):
            continue  # an organisation, or the end of a longer name ("Anna Berg and Jo")
        items = [(i.start() + m.start(), i.end() + m.start()) for i in _LIST_ITEM.finditer(m.group())]
        items = [(s, e) for s, e in items if e - s > 1 and text[s:e] not in {"And", "Or"}]
        people = sum(_touches(kinds["PERSON"], s, e) for s, e in items)
        places = sum(
            _touches(kinds["LOCATION"], s, e) and not _touches(kinds["PERSON"], s, e) for s, e in items
        )
        if people and people >= places:
            extra += [Found(s, e, "PERSON", 0.86) for s, e in items]
    return extra
