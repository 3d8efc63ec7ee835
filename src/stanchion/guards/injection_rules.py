"""Rules for known prompt-injection patterns, and the lexical features the classifier reads.

Each rule is a named regular expression over the text after ``clean`` (NFKC, zero-width and
control characters removed). ``rule_hits`` runs them on the text, on a de-obfuscated copy
(spaced or dotted letters joined, leetspeak digits read as letters) and on any base64 or hex
blob that decodes to text. A rule names an attack *pattern*, not a topic: "How do I kill a
Python process?" or "What is a system prompt?" match none of them.

The override and persona rules skip short quoted spans, so a document that *mentions* an attack
("attackers write 'ignore previous instructions'") is left to the classifier.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import unicodedata
from dataclasses import dataclass

_ZERO_WIDTH = re.compile(r"[\u200b-\u200f\u2060-\u2064\ufeff\u00ad]")
_QUOTED = re.compile(r"\"[^\"\n]{1,80}\"|“[^”\n]{1,80}”|„[^“”\n]{1,80}[“”]|«[^»\n]{1,80}»")

_W = r"(?:\W+\w+){0,6}?\W+"  # up to six words between two parts of a phrase
_VERB = (
    r"ignor\w*|disregard\w*|forget|forgot|drop|skip|bypass\w*|override|abandon|discard|nevermind|never mind"
    r"|stop following|do not follow|don'?t follow|pay no attention to|set aside|put aside|throw (?:out|away)"
    r"|leave behind|let go of|verwirf|deja de lado|deja atrás|descarta|omite|laisse tomber|mets de côté"
    r"|lascia perdere|metti da parte|tralascia|deixe de lado|descarte|pomiń|porzuć|odrzuć|отбрось|откажись от|не следуй"
    r"|vergiss|vergessen sie|missacht\w*|übergeh\w*"
    r"|oublie[zr]?|ne tiens pas compte|ne tenez pas compte|fais abstraction"
    r"|olvid\w*|haz caso omiso|no hagas caso"
    r"|dimentica\w*|non tenere conto"
    r"|esque[cç]\w*|desconsider\w*"
    r"|negeer|vergeet|zignoruj|zapomnij|ignorera|glöm|zaboravi"
    r"|игнориру\w*|забудь\w*|не обращай внимания"
)
_OBJECT = (
    r"instructions?|rules|guidelines|directions|directives|prompts?|orders|commands|constraints"
    r"|restrictions|polic(?:y|ies)|programming|tasks|assignments|system (?:message|prompt)|everything"
    r"|(?:the|this) question|the user|(?:the )?documents provided|frage|pregunta|domanda"
    r"|anweisungen|instruktionen|befehle|regeln|aufgaben|aufträge|vorgaben|richtlinien|alles"
    r"|consignes|règles|tout"
    r"|instrucciones|reglas|indicaciones|directrices|todo"
    r"|istruzioni|regole|direttive|tutto"
    r"|instru[cç][oõ]es|regras|diretrizes|tudo"
    r"|instructies|regels|instrukcje|zasady|wszystko|instruktioner|regler|allt|instrukcije|sve"
    r"|инструкци\w*|правил\w*|вс[её]"
)
_YOUR = r"your|ur|deine?[nm]?|tes|ton|vos|votre|tus?|tuo|tue|seu|suas?|je|jouw|твой|свой|свои|ваш\w*"
_PROMPT = (
    r"system ?prompt|system message|prompt(?:[- ]?texts?)?|instructions|initial instructions|rules"
    r"|configuration|developer message|systemprompt|anweisungen|instruktionen|consignes|instrucciones"
    r"|istruzioni|instru[cç][oõ]es|instructies|systeemprompt|промпт\w*|инструкци\w*"
)
_SHOW = (
    r"print|show|reveal|repeat|output|display|tell me|give me|list|dump|leak|share|write out|spell out"
    r"|what (?:is|are|was|were)|zeige?|gib|verrate|nenne|was sind|affiche|montre|donne|révèle|recopie"
    r"|répète|quelles sont|muestra|dime|revela|repite|cuáles son|mostra\w*|dimmi|rivela|ripeti"
    r"|mostre|revele|diga|repita|quais são|laat|toon|geef|покажи|выведи|раскрой|повтори"
)
_LIMITS = (
    r"restrict\w*|limit\w*|filters?|censor\w*|rules|guidelines|polic(?:y|ies)|ethic\w*|moral\w*|einschränk\w*|zensur|regeln|richtlinien"
    r"|règles?|restriction\w*|filtres?|censure|reglas?|restricci\w*|filtros?|censura|restrizion\w*|filtri"
    r"|regole|restri\w*|regras?|beperking\w*|regels?|ограничени\w*|фильтр\w*|цензур\w*|правил\w*"
)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    skip_quoted: bool = False  # run on the text with short quoted spans blanked


def _rx(*parts: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in parts), re.IGNORECASE | re.DOTALL)


RULES: tuple[Rule, ...] = (
    Rule(
        "override_instructions",
        _rx(
            rf"\b(?:{_VERB})\b{_W}(?:{_OBJECT})\b",
            r"\b(?:previous|prior|above|earlier|preceding|old|original) (?:instructions|rules|information)\b"
            r".{0,30}\b(?:outdated|void|irrelevant|no longer|not apply|do not apply)",
            r"\b(?:vorherigen|bisherigen|obigen) (?:anweisungen|instruktionen|informationen|ausführungen)\b"
            r".{0,40}\b(?:gelten nicht|irrelevant|nicht ganz|ignorieren|hinter sich)",
            r"\babweichend (?:zu|von) (?:den )?vorherigen",
            r"\b(?:change|replace|update) your instructions\b|\byour (?:new )?instructions are now\b",
            r"\bnew (?:rule|instructions?|system instructions?)\s*:",
            r"talimat\w*.{0,25}(?:yok say|görmezden gel|unut)",
            r"(?:忽略|无视|忘记|忘掉|不要理会|抛开|放弃|不要遵守).{0,12}(?:指令|指示|规则|提示|设定|要求)",
            r"(?:指令|指示|规则).{0,6}(?:抛在脑后|抛开|作废)",
            r"(?:指示|ルール|命令|規則).{0,12}(?:無視|忘れ|捨て|従わない)",
            r"\byour (?:guidelines|instructions|rules|polic(?:y|ies)) (?:have|has) (?:just )?(?:been )?(?:updated|changed|lifted|removed)",
            r"(?:지시|규칙|명령).{0,12}(?:무시|잊어)",
        ),
        skip_quoted=True,
    ),
    Rule(
        "persona_override",
        _rx(
            r"\byou are (?:now )?dan\b|\bdan mode\b|\bdo anything now\b|\b(?:ist|bist|es|eres|sei|é|bent|ты) "
            r"(?:jetzt |nun |maintenant |ahora |ora |agora |nu |теперь )?dan\b",
            r"\bjailbr(?:oken|eak mode)\b|\bbroken free\b|\bfreed? from (?:all )?(?:your |its )?(?:limitations|restrictions|rules)",
            r"\bfrom now on,? you (?:are|will be|will act)\b|\byou are no longer (?:an? )?(?:ai|assistant|chatbot|language model|bound)",
            r"\b(?:ab jetzt|ab sofort|von nun an) bist du\b|\bdu bist (?:jetzt|nun) (?:eine?n? )?(?:ki|böse)",
            r"\bà partir de maintenant,? tu es\b|\btu es maintenant\b|\ba partir de ahora,? eres\b|\bahora eres\b",
            r"\bora sei\b|\bagora você é\b|\bje bent nu\b|\bтеперь ты\b|你现在是",
            r"\b(?:unfiltered|uncensored|amoral|unrestricted|evil|malicious|böse|bösartige|malvada|malvagia|méchante)"
            r" (?:ai|ki|ia|chatbot|assistant|model|mode)\b",
            rf"\b(?:ai|ki|ia|bot|chatbot|assistant|model\w*|mode|modus|ии|dan)\b.{{0,40}}"
            rf"\b(?:without|no|ohne|keine|keinerlei|sans|sin|senza|sem|zonder|без|not bound by)\b\W+(?:\w+\W+){{0,3}}?(?:{_LIMITS})",
            rf"\b(?:without|no|ohne|keine|keinerlei|sans|sin|senza|sem|zonder|без)\b\W+(?:\w+\W+){{0,2}}?(?:{_LIMITS})"
            r".{0,40}\b(?:ai|ki|ia|bot|chatbot|assistant|ии)\b",
            r"没有任何限制|不受任何限制",
        ),
        skip_quoted=True,
    ),
    Rule(
        "task_hijack",
        _rx(
            r"\b(?:do not|don'?t|stop|never) (?:answer\w*|use|look)\b.{0,50}\b(?:instead|but (?:just|only|tell|say|write|output)"
            r"|just (?:say|output|write|print))",
            r"\b(?:beantworte|antworte)\b.{0,25}\bnicht\b.{0,30}\bsondern\b",
            r"\bne (?:réponds|répondez) pas\b.{0,40}\b(?:écris|dis|seulement)",
            r"\bno (?:respondas|responda|contestes)\b.{0,40}\b(?:escribe|di|solo)\b|\bnon rispondere\b|\bnão responda\b",
            r"\bno matter what (?:the (?:next )?user|they|anyone) (?:asks?|says?)\b|\bwhatever the (?:next )?user (?:asks|says)\b"
            r"|\begal was (?:der nutzer|der benutzer|man) (?:fragt|sagt)",
            r"\b(?:well done|great|good|excellent|fantastic|sehr gut|gut gemacht|très bien|muy bien|molto bene|muito bem"
            r"|that'?s enough|das genügt|thanks|okay|ok)\b\W+(?:\w+\W+){0,5}?(?:new task|neue aufgabe|nouvelle tâche"
            r"|nueva tarea|nuovo compito|nova tarefa|your (?:real|new|next) task)\b",
            r"\b(?:now|nun|jetzt) (?:new|further|neue|weitere) (?:tasks|instructions|aufgaben|anweisungen) (?:follow|folgen)\b",
            r"\b(?:nun|jetzt) folg(?:t|en) (?:eine )?(?:neue|weitere) (?:aufgaben?|anweisungen)\b",
            r"\b(?:answer|respond|reply)\b.{0,40}\b(?:by|from|with|using) your own knowledge\b"
            r"|\bnot (?:by|from|according to|using) the (?:provided )?(?:articles|documents|context|sources)\b"
            r"|\bdisregarding the (?:provided )?(?:articles|documents|context|sources)\b"
            r"|\bdespite what you(?:'ve| have) been (?:told|instructed)\b",
            r"\bsecretly (?:include|add|insert|append|mention)\b|\bfrom now on\b.{0,30}\b(?:every|all|each) (?:answers?|repl(?:y|ies)|responses?)\b",
        ),
        skip_quoted=True,
    ),
    Rule(
        "fake_system_marker",
        _rx(
            r"<\|(?:im_start|im_end|system|endoftext|user|assistant|begin_of_text|start_header_id|eot_id)\|>",
            r"\[/?INST\]|<</?SYS>>|</?system>|\[system\]\(#",
            r"(?:^|\n)\s*#{0,4}\s*(?:system|systeme|système|sistema|систем\w*)\s*:.{0,80}"
            r"\b(?:you|the (?:assistant|ai|model|user)|new|ignore|must|override|grant|reveal|du|neue|nouvelle|le modèle)\b",
            r"(?:^|\n)\s*(?:assistant|ai)\s*:\s*(?:sure|ok|okay|of course|i will|i'll|absolutely)\b",
            r"(?:^|\n)\s*human\s*:\s*human\s*:",
        ),
    ),
    Rule(
        "framing_escape",
        _rx(
            r"</\s*(?:sources?|documents?|context|data|user|instructions?|quellen|kontext|input|search_results?|tool_output)\s*>",
            r"<source\s+id\s*=",
            r"\bend of (?:the )?(?:document|user input|context|sources|input)\b.{0,40}\b(?:instruction|system|ignore|new)",
            r"\b(?:note|message|instructions?|hinweis|nota|note pour|hidden instruction)\s+(?:to|for|an|a|para|pour|per)\s+"
            r"(?:the |die |l'|la )?(?:ai|llm|language model|assistant|ki|ia|chatbot|agent)\b",
            r"\bif you are an? (?:ai|llm|language model|assistant|chatbot)\b",
            r"\b(?:ai|llm) (?:agents?|assistants?|models?) (?:processing|reading|summari[sz]ing)\b",
            r"\bdear (?:ai|assistant|chatbot|llm)\b|\binstructions for ai\b",
            r"\b(?:ai|agent|assistant)(?: assistant| agent)?\s*[:,]\s*(?:disregard|ignore|you must)\b",
        ),
    ),
    Rule(
        "prompt_exfiltration",
        _rx(
            rf"\b(?:{_SHOW})\b.{{0,40}}?\b(?:{_YOUR})\s+(?:\w+[ -]){{0,2}}?(?:{_PROMPT})\b",
            r"\b(?:print|show|reveal|repeat|output|display|tell me)\b.{0,30}\bthe (?:system|hidden|initial|original|secret) "
            r"(?:prompt|instructions|message)\b",
            r"\b(?:repeat|print|output|copy|show)\b.{0,30}\b(?:text|words|everything|all|prompt)\b.{0,25}\b(?:above|before (?:this|my))",
            r"\bwhat (?:was|is) written (?:at the (?:beginning|start|top)|above|before)",
            r"\b(?:use|using|with)\b.{0,20}\b(?:information|text|content) (?:in|of) (?:the|your) prompt\b",
            r"(?:^|[.!?:]\s*|please |can you |could you )"
            r"(?:list|reveal|tell me|give me|print|show|share|output|dump|display|verrate|dimmi|dime|dis-moi|diga-me|скажи)\b.{0,30}"
            r"\b(?:api[- ]?keys?|passwords?|passwörter|credentials|secret keys?|access tokens?|mot de passe|contraseña|senha|пароль)\b",
            r"(?:输出|显示|告诉我|泄露|重复|打印).{0,10}(?:系统提示|提示词|系统指令)",
            r"システムプロンプト.{0,12}(?:表示|教え|出力)",
        ),
    ),
    Rule(
        "data_exfiltration",
        _rx(
            r"!\[[^\]]*\]\(https?://[^)\s]*[?=][^)]*\)",
            r"\b(?:send|forward|email|e-mail|post|upload|append|transfer|copy|exfiltrate)\b.{0,60}"
            r"\b(?:conversation|history|chat|previous messages|user's|files|\.env|credentials|passwords|keys|records|invoices)\b"
            r".{0,40}(?:https?://|\b[\w.+-]+@[\w-]+\.\w+|\bquery parameter)",
            r"\bappend\b.{0,40}\b(?:query parameter|to (?:the |this )?url)\b",
        ),
    ),
)

KEYWORD_FAMILIES: dict[str, re.Pattern[str]] = {
    "override_verb": _rx(rf"\b(?:{_VERB}|stop|stopp|attention|achtung)\b"),
    "instruction_noun": _rx(rf"\b(?:{_OBJECT}|prompt\w*|assignments?|tasks?|aufträge?|aufgaben?)\b"),
    "new_task": _rx(
        r"\b(?:now|from now on|new task|new instructions?|next task|jetzt|nun|neue aufgabe|maintenant|"
        r"nouvelle tâche|ahora|nueva tarea|ora|nuovo compito|agora|nova tarefa|теперь)\b"
    ),
    "identity": _rx(
        r"\b(?:you are|you're|act as|pretend|imagine you|role-?play|du bist|stell dir vor|fungieren|tu es|"
        r"eres|sei|você é|je bent|ты)\b"
    ),
    "force_output": _rx(
        r"\b(?:say|print|output|just write|only write|reply with|respond with|sag|schreib\w*|gib .{0,10}aus|"
        r"dis|écris|di|escribe|scrivi|diga|escreva|скажи)\b"
    ),
    "praise_pivot": _rx(
        r"\b(?:well done|great|very good|excellent|fantastic|that is enough|that's enough|sehr gut|gut gemacht|"
        r"ausgezeichnet|das genügt|wow|congratulations|simply great)\b"
    ),
    "context_ref": _rx(
        r"\b(?:documents? provided|articles?|context|above|the prompt|kontext|artikel|obigen|quellen)\b"
    ),
}
FEATURE_NAMES: tuple[str, ...] = (
    *(f"rule:{r.name}" for r in RULES),
    "rule:obfuscated",
    *(f"kw:{name}" for name in KEYWORD_FAMILIES),
    "shouting",
    "log_length",
)


def clean(text: str) -> str:
    """NFKC (full-width and compatibility forms folded), zero-width and control characters removed."""
    text = unicodedata.normalize("NFKC", text)
    text = _ZERO_WIDTH.sub("", text)
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc")


_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
# A word of letters with digits inside (1gn0re, prev10us), not a name ending in a number (python3, v1).
_LEET_WORD = re.compile(
    r"\b[^\W_]*[013457][^\W_]*[^\W\d_]{2,}[^\W_]*\b|\b[^\W\d_]+[013457]+[^\W\d_]+[^\W_]*\b"
)
_SPACED = re.compile(r"\b\w(?: \w){2,}\b|\b\w(?:[.\-_*]\w){2,}\b")
_BASE64 = re.compile(r"(?<![\w+/])[A-Za-z0-9+/]{16,}={0,2}(?![\w+/=])")
_HEX = re.compile(r"\b(?:[0-9a-fA-F]{2}){8,}\b")


def _deobfuscate(text: str) -> str:
    """Spaced or dotted letters joined ("I g n o r e" -> "Ignore"), digits inside words read as letters."""
    joined = _SPACED.sub(lambda m: re.sub(r"[ .\-_*]", "", m.group()), text)
    return _LEET_WORD.sub(lambda m: m.group().translate(_LEET), joined)


def _decoded_blobs(text: str) -> list[str]:
    """Text hidden in base64 or hex blobs (those that decode to mostly printable UTF-8)."""
    found: list[str] = []
    for match in _BASE64.finditer(text):
        blob = match.group()
        try:
            raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
        except (binascii.Error, ValueError):
            continue
        found.append(raw.decode("utf-8", errors="replace"))
    for match in _HEX.finditer(text):
        found.append(bytes.fromhex(match.group()).decode("utf-8", errors="replace"))
    return [t for t in found if t and sum(c.isprintable() or c.isspace() for c in t) / len(t) > 0.9]


def _scan(text: str) -> list[tuple[str, tuple[int, int]]]:
    hits: list[tuple[str, tuple[int, int]]] = []
    unquoted: str | None = None
    for rule in RULES:
        target = text
        if rule.skip_quoted:
            if unquoted is None:  # same length, so spans stay valid
                unquoted = _QUOTED.sub(lambda m: " " * len(m.group()), text)
            target = unquoted
        hits.extend((rule.name, m.span()) for m in rule.pattern.finditer(target))
    return hits


def rule_spans(cleaned: str) -> list[tuple[str, tuple[int, int]]]:
    """(rule name, span) of every match in ``cleaned`` itself (text from ``clean``)."""
    return _scan(cleaned)


def rule_hits(cleaned: str) -> tuple[str, ...]:
    """Names of the rules that match ``cleaned``, its de-obfuscated copy or a decoded blob in it.
    ``obfuscated`` is added when a rule matched only after de-obfuscating or decoding."""
    direct = {name for name, _ in _scan(cleaned)}
    hidden: set[str] = set()
    for variant in (_deobfuscate(cleaned), *_decoded_blobs(cleaned)):
        if variant != cleaned:
            hidden.update(name for name, _ in _scan(variant))
    names = [r.name for r in RULES if r.name in direct or r.name in hidden]
    if hidden - direct:
        names.append("obfuscated")
    return tuple(names)


def features(cleaned: str, hits: tuple[str, ...]) -> list[float]:
    """The lexical half of the classifier's input, in ``FEATURE_NAMES`` order."""
    values = [1.0 if r.name in hits else 0.0 for r in RULES]
    values.append(1.0 if "obfuscated" in hits else 0.0)
    values.extend(1.0 if p.search(cleaned) else 0.0 for p in KEYWORD_FAMILIES.values())
    letters = [c for c in cleaned if c.isalpha()]
    upper = sum(c.isupper() for c in letters) / len(letters) if letters else 0.0
    values.append(1.0 if upper > 0.5 and len(letters) >= 12 else upper)
    values.append(math.log1p(len(cleaned)) / 8.0)
    return values
