"""Write the memory eval's labelled conversations: ``src/stanchion/evals/memory_conversations.jsonl``.

Hand-written phrasings and values, combined per user by a seeded random generator (so the file
is reproducible and reviewable). Each line is one user: their sessions (user turns only, in
order) and the questions a later run asks, each with the value the recalled memories must hold
(``expect``) and the values they must not (``avoid``: what a later session replaced, and what
other users of the same tenant said for the same thing, which must never leak).

Some phrasings are ones the rule extractor does not read ("Home for me is ..."): they are in the
set on purpose, so the score shows what the rules miss.

    python bench/make_memory_eval.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "src/stanchion/evals/memory_conversations.jsonl"

# attribute -> (values, statements of a first value, statements of a change, questions)
ATTRIBUTES: dict[str, dict[str, Any]] = {
    "home_city": {
        "values": [
            "Berlin",
            "Lisbon",
            "Oslo",
            "Toronto",
            "Nairobi",
            "Lyon",
            "Osaka",
            "Denver",
            "Porto",
            "Krakow",
        ],
        "say": [
            "I live in {v}.",
            "I'm based in {v}, for what it's worth.",
            "I currently live in {v}.",
            "Home for me is {v} these days.",
        ],
        "change": [
            "I moved to {v} last month.",
            "Quick update: I relocated to {v}.",
            "I just moved to {v} for a new job.",
        ],
        "ask": [
            "Which city does the user live in?",
            "Where is the user based?",
            "Where does the user live now?",
        ],
    },
    "employer": {
        "values": [
            "Siemens",
            "Globex",
            "Initech",
            "Umbrella Labs",
            "Stark Industries",
            "Wayne Logistics",
            "Acme Robotics",
            "Hooli",
        ],
        "say": [
            "I work at {v}.",
            "I work for {v} as part of the platform team.",
            "I've been at {v} for two years.",
        ],
        "change": [
            "I just joined {v}.",
            "Big news: I now work at {v}.",
            "I started working at {v} this week.",
        ],
        "ask": ["Where does the user work?", "Which company employs the user?"],
    },
    "programming_language": {
        "values": ["Python", "Rust", "Go", "TypeScript", "Kotlin", "Haskell", "Java", "Elixir"],
        "say": [
            "I love {v}.",
            "I prefer {v} for most projects.",
            "I mostly write {v}, it's my favourite.",
            "My favourite programming language is {v}.",
        ],
        "change": [
            "Actually, I now prefer {v}.",
            "These days I prefer {v} over anything else.",
            "I switched to {v} and I love it.",
        ],
        "ask": [
            "Which programming language does the user prefer?",
            "What language should code examples be in?",
        ],
    },
    "drink": {
        "values": ["coffee", "green tea", "matcha", "espresso", "kombucha", "hot chocolate"],
        "say": ["I love {v}.", "I drink {v} every morning.", "My favourite drink is {v}."],
        "change": ["I now prefer {v}.", "I switched to {v}."],
        "ask": ["What does the user like to drink?", "Which drink should I offer the user?"],
    },
    "allergy": {
        "values": ["peanuts", "shellfish", "penicillin", "cats", "pollen", "gluten"],
        "say": ["I'm allergic to {v}.", "Just so you know, I am allergic to {v}.", "I have a {v} allergy."],
        "ask": ["What is the user allergic to?", "Does the user have any allergies?"],
    },
    "name": {
        "values": ["Alice", "Bao", "Carmen", "Dmitri", "Esther", "Farid", "Grace", "Hiro", "Ines", "Jonas"],
        "say": ["My name is {v}.", "Call me {v}.", "Hi, I'm {v}."],
        "ask": ["What is the user's name?", "What should I call the user?"],
    },
    "dog_name": {
        "values": ["Rex", "Biscuit", "Luna", "Pepper", "Mochi", "Bruno"],
        "say": ["My dog's name is {v}.", "My dog is called {v}."],
        "ask": ["What is the name of the user's dog?"],
    },
    "editor": {
        "values": ["Vim", "Emacs", "VS Code", "Neovim", "Sublime Text", "Helix"],
        "say": ["I use {v} for everything.", "I prefer {v} as my editor."],
        "change": ["I stopped using {old} and use {v} now.", "I moved to using {v}."],
        "ask": ["Which text editor does the user use?"],
    },
    "response_language": {
        "values": ["French", "Spanish", "German", "Portuguese", "Japanese"],
        "say": ["From now on, answer in {v}.", "Please reply in {v} from now on.", "Always respond in {v}."],
        "ask": ["Which language should answers to the user be written in?"],
    },
    "response_length": {
        "values": ["concise", "detailed"],
        "say": [
            "From now on, keep answers {v}.",
            "Please give {v} answers from now on.",
            "I prefer {v} answers.",
        ],
        "ask": ["How long should answers to the user be?"],
    },
    "diet": {
        "values": ["vegetarian", "vegan", "pescatarian"],
        "say": ["I'm {v}.", "I am {v} now."],
        "ask": [
            "Does the user follow a particular diet?",
            "What should I keep in mind when suggesting restaurants?",
        ],
    },
    "color": {
        "values": ["teal", "purple", "navy", "yellow", "green"],
        "say": ["My favourite colour is {v}.", "My favorite color is {v}."],
        "ask": ["What is the user's favourite colour?"],
    },
    "sport": {
        "values": ["bouldering", "tennis", "cycling", "swimming", "basketball", "yoga"],
        "say": ["I really enjoy {v} on weekends.", "I love {v}.", "I'm a big fan of {v}."],
        "change": ["I no longer do much else, I'm into {v} now.", "Lately I prefer {v}."],
        "ask": ["Which sport does the user enjoy?", "What does the user do for exercise?"],
    },
    "job_title": {
        "values": ["nurse", "data analyst", "software engineer", "teacher", "architect", "pharmacist"],
        "say": ["I work as a {v}.", "I'm a {v}.", "My job is {v}."],
        "ask": ["What is the user's job?", "What does the user do for a living?"],
    },
    "seat": {
        "values": ["window seat", "aisle seat"],
        "say": ["I prefer a {v} on flights.", "Please always book me an {v}."],
        "ask": ["Which seat does the user prefer when flying?"],
    },
}
# Negations: a preference the user drops ("avoid" it), with what replaces it.
NEGATIONS = {
    "drink": [
        "I don't drink {old} anymore; {v} for me now.",
        "I no longer drink {old}. I drink {v} instead.",
    ],
}
DISTRACTORS = [
    "Can you summarise the Q3 budget memo?",
    "How many open support tickets mention the refund policy?",
    "Do you like Python?",
    "If I lived in Tokyo, what would rent cost?",
    "My colleague prefers Java, but that's his business.",
    "My manager lives in Madrid.",
    "What's the capital of Australia?",
    "Translate 'good morning' into German please.",
    "My colleague's favourite language is Scala.",
    "Does the travel policy cover taxis?",
    "Write a haiku about autumn.",
    "What is the weather like in Paris in spring?",
    "My sister loves coffee.",
    "Explain how HNSW indexes work.",
]
TENANTS = {"acme": 16, "globex": 12, "initech": 12}
SESSIONS = 4


def _fill(template: str, value: str, old: str = "") -> str:
    text = template.format(v=value, old=old)
    return text[0].upper() + text[1:]


def build(seed: int = 14) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    users: list[dict[str, Any]] = []
    for tenant, count in TENANTS.items():
        tenant_users: list[dict[str, Any]] = []
        for n in range(count):
            sessions: list[list[str]] = [[] for _ in range(SESSIONS)]
            questions: list[dict[str, Any]] = []
            chosen = rng.sample(sorted(ATTRIBUTES), 3)
            final: dict[str, str] = {}
            for attribute in chosen:
                spec = ATTRIBUTES[attribute]
                first, second = rng.sample(spec["values"], 2)
                start = rng.randrange(0, SESSIONS - 1)
                sessions[start].append(_fill(rng.choice(spec["say"]), first))
                avoid: list[str] = []
                value = first
                changes = spec.get("change") or NEGATIONS.get(attribute)
                if changes and rng.random() < 0.5:
                    later = rng.randrange(start + 1, SESSIONS)
                    sessions[later].append(_fill(rng.choice(changes), second, old=first))
                    avoid, value = [first], second
                elif rng.random() < 0.3:  # the same thing restated later: one memory, not two
                    later = rng.randrange(start + 1, SESSIONS)
                    sessions[later].append(_fill(rng.choice(spec["say"]), first))
                final[attribute] = value
                questions.append(
                    {
                        "question": rng.choice(spec["ask"]),
                        "attribute": attribute,
                        "expect": value,
                        "avoid": avoid,
                        "kind": "changed" if avoid else ("fact" if attribute in _FACTS else "preference"),
                    }
                )
            for turns in sessions:
                for _ in range(rng.randint(1, 2)):
                    turns.insert(rng.randrange(len(turns) + 1), rng.choice(DISTRACTORS))
            tenant_users.append(
                {
                    "tenant": tenant,
                    "user": f"{tenant}-u{n:02d}",
                    "sessions": [{"id": f"s{i + 1}", "turns": t} for i, t in enumerate(sessions)],
                    "questions": questions,
                    "_final": final,
                }
            )
        # Another user of the tenant who said a different value for the same thing must not leak.
        for user in tenant_users:
            for question in user["questions"]:
                others = {
                    o["_final"][question["attribute"]]
                    for o in tenant_users
                    if o is not user and question["attribute"] in o["_final"]
                }
                leaks = sorted(v for v in others if v.lower() != question["expect"].lower())
                question["avoid_other_users"] = leaks
        users.extend(tenant_users)
    for user in users:
        del user["_final"]
    return users


_FACTS = {"home_city", "employer", "allergy", "name", "dog_name", "job_title"}


def main() -> None:
    users = build()
    with OUT.open("w", encoding="utf-8") as f:
        for user in users:
            f.write(json.dumps(user, ensure_ascii=False) + "\n")
    questions = sum(len(u["questions"]) for u in users)
    changed = sum(q["kind"] == "changed" for u in users for q in u["questions"])
    print(f"wrote {OUT}: {len(users)} users, {questions} questions ({changed} after a change)")


if __name__ == "__main__":
    main()
