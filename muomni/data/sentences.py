"""A sentence generator for the demo corpus: varied, readable English from a small grammar.

A talker trained on a few hundred sentences only learns to read if the corpus covers many words
and many shapes: statements in several tenses, questions, commands, exclamations, joined clauses,
lists, and numbers in the forms people write them (counts, years, times, money, percentages,
ordinals, decimals), which ``normalize_text`` spells out. Lengths run from 3 to about 22 words,
1 to 8 seconds of flite speech. The same seed gives the same sentences.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from muomni.data import words as W
from muomni.text import normalize_text

_NOUNS = W.PEOPLE + W.ANIMALS + W.THINGS + W.FOODS + W.ABSTRACT
_CONJUNCTIONS = "and but so because while although when after before until since unless".split()
MIN_WORDS, MAX_WORDS = 3, 22  # spoken words after normalisation: about 1 to 8 s of flite speech
_TIMES = ("this morning", "last night", "on Monday", "on Friday", "every day", "at noon", "next week",
          "in the evening", "after lunch", "before dinner", "last summer", "in the spring", "all day")


def _add_s(word: str) -> str:
    """-s, -es or -ies: the one spelling rule of the third person singular and of the plural."""
    if word.endswith(("s", "sh", "ch", "x", "z")):
        return word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _third_person(verb: str) -> str:
    return verb + "es" if verb in ("go", "do") else _add_s(verb)


def _past(verb: str) -> str:
    if verb in _IRREGULAR:
        return _IRREGULAR[verb][0]
    if verb.endswith("e"):
        return verb + "d"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ied"
    return verb + (verb[-1] if verb in W.DOUBLING else "") + "ed"


def _ing(verb: str) -> str:
    if verb.endswith("ie"):
        return verb[:-2] + "ying"
    if verb.endswith("e") and not verb.endswith(("ee", "ye", "oe")):
        return verb[:-1] + "ing"
    return verb + (verb[-1] if verb in W.DOUBLING else "") + "ing"


def _participle(verb: str) -> str:
    return _IRREGULAR[verb][1] if verb in _IRREGULAR else _past(verb)


def _plural(noun: str) -> str:
    return W.IRREGULAR_PLURALS[noun] if noun in W.IRREGULAR_PLURALS else _add_s(noun)


def _article(word: str) -> str:
    vowel = word[0] in "aeio" or (word[0] == "u" and not word.startswith(("uni", "use", "usu")))
    return "an" if vowel or word.startswith(("hour", "honest")) else "a"


_IRREGULAR = {base: (past, part) for base, past, part in (t.split() for t in W.IRREGULAR)}
_TRANSITIVE = sorted(set(W.TRANSITIVE) | {v for v in _IRREGULAR if v not in W.INTRANSITIVE})
_INTRANSITIVE = sorted(set(W.INTRANSITIVE))


class SentenceGenerator:
    """``SentenceGenerator(seed).sentences(n)`` -> n distinct sentences."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)

    def sentences(self, n: int) -> list[str]:
        seen: set[str] = set()
        out = []
        while len(out) < n:
            shape = self.rng.choice(self.SHAPES)
            s = shape(self)
            s = s[0].upper() + s[1:]
            if s not in seen and MIN_WORDS <= len(normalize_text(s).split()) <= MAX_WORDS:
                seen.add(s)
                out.append(s)
        return out

    # ----- building blocks -----
    def pick(self, words: list[str]) -> str:
        return self.rng.choice(words)

    def maybe(self, p: float, text: str) -> str:
        return text if self.rng.random() < p else ""

    def noun_phrase(self, nouns: list[str] = _NOUNS, plural: bool | None = None) -> str:
        """'the old lamp', 'a lamp', 'three red lamps', 'Emma's kitten'."""
        noun = self.pick(nouns)
        adj = self.maybe(0.5, self.maybe(0.15, self.pick(W.DEGREE) + " ") + self.pick(W.ADJECTIVES) + " ")
        if plural is None:
            plural = self.rng.random() < 0.3
        if plural:
            det = self.pick(["the ", "some ", "many ", "these ", "those ", "our ", "", f"{self.rng.randint(2, 12)} "])
            return f"{det}{adj}{_plural(noun)}"
        det = self.pick(["the", "a", "this", "that", "my", "your", "his", "her", "their", f"{self.pick(W.NAMES)}'s"])
        if det == "a":
            det = _article(adj or noun)
        return f"{det} {adj}{noun}"

    def obj(self) -> str:
        if self.rng.random() < 0.15:
            return f"some {self.pick(W.MASS)}"
        return self.noun_phrase(_NOUNS + W.FOODS)

    def subject(self) -> tuple[str, bool]:
        """(subject, takes the third person singular verb)."""
        r = self.rng.random()
        if r < 0.35:
            return self.pick(W.NAMES), True
        if r < 0.55:
            pronoun = self.pick(["I", "you", "we", "they", "he", "she"])
            return pronoun, pronoun in ("he", "she")
        if r < 0.8:
            return self.noun_phrase(W.PEOPLE + W.ANIMALS, plural=False), True
        return self.noun_phrase(W.PEOPLE + W.ANIMALS, plural=True), False

    def place(self) -> str:
        if self.rng.random() < 0.3:
            return f"{self.pick(['in', 'to', 'from', 'near'])} {self.pick(W.CITIES)}"
        prep = self.pick(["in", "at", "near", "behind", "outside", "inside", "beside", "across", "under"])
        return f"{prep} the {self.maybe(0.3, self.pick(W.ADJECTIVES) + ' ')}{self.pick(W.PLACES)}"

    def extras(self) -> str:
        parts = [self.maybe(0.35, self.place()), self.maybe(0.3, self.pick(_TIMES)),
                 self.maybe(0.2, self.pick(W.ADVERBS))]
        return "".join(" " + p for p in parts if p)

    def clause(self) -> str:
        """A full clause in one of five tenses, with a transitive or intransitive verb."""
        subj, third = self.subject()
        transitive = self.rng.random() < 0.65
        verb = self.pick(_TRANSITIVE if transitive else _INTRANSITIVE)
        tense = self.rng.randrange(5)
        if tense == 0:
            vp = _third_person(verb) if third else verb
        elif tense == 1:
            vp = _past(verb)
        elif tense == 2:
            be = "is" if third else "am" if subj == "I" else "are"
            vp = f"{be} {_ing(verb)}"
        elif tense == 3:
            vp = f"{self.pick(['will', 'can', 'should', 'might', 'must'])} {verb}"
        else:
            vp = f"{'has' if third else 'have'} {self.maybe(0.3, self.pick(['just ', 'never ', 'already ']))}" \
                 f"{_participle(verb)}"
        tail = self.extras() or ("" if transitive else " " + self.pick(W.ADVERBS))  # never a bare "Peter waves."
        return f"{subj} {vp}{' ' + self.obj() if transitive else ''}{tail}"

    # ----- sentence shapes -----
    def statement(self) -> str:
        return self.clause() + "."

    def joined(self) -> str:
        return f"{self.clause()}{self.maybe(0.5, ',')} {self.pick(_CONJUNCTIONS)} {self.clause()}."

    def yes_no_question(self) -> str:
        verb = self.pick(_TRANSITIVE)
        aux = self.pick(["Did", "Can", "Will", "Should", "Could", "Would"])
        subj = self.pick(["you", "we", "they", self.pick(W.NAMES), "the " + self.pick(W.PEOPLE)])
        return f"{aux} {subj} {verb} {self.obj()}{self.extras()}?"

    def wh_question(self) -> str:
        r = self.rng.randrange(5)
        if r == 0:
            return f"Where did {self.pick(W.NAMES)} {self.pick(['put', 'find', 'hide', 'leave', 'buy'])} {self.obj()}?"
        if r == 1:
            when = self.maybe(0.4, " " + self.pick(_TIMES))
            return f"Why is the {self.pick(_NOUNS)} so {self.pick(W.ADJECTIVES)}{when}?"
        if r == 2:
            return f"How many {_plural(self.pick(W.THINGS + W.FOODS + W.ANIMALS))} did {self.pick(W.NAMES)} " \
                   f"{self.pick(['see', 'count', 'buy', 'find', 'bring'])} {self.place()}?"
        if r == 3:
            return f"What time does the {self.pick(W.PLACES)} {self.pick(['open', 'close'])}?"
        return f"Who {_past(self.pick(_TRANSITIVE))} {self.obj()}{self.extras()}?"

    def command(self) -> str:
        verb = self.pick(_TRANSITIVE)
        start = self.pick(["Please ", "Don't ", "", "", "Always ", "Never ", "Quickly, "])
        return f"{start}{verb} {self.obj()}{self.extras()}{self.pick(['.', '.', '!'])}"

    def exclamation(self) -> str:
        r = self.rng.randrange(3)
        if r == 0:
            adj = self.pick(W.ADJECTIVES)
            return f"What {_article(adj)} {adj} {self.pick(_NOUNS)}!"
        if r == 1:
            return f"{self.pick(W.INTERJECTIONS).capitalize()}, the {self.pick(_NOUNS)} is {self.pick(W.ADJECTIVES)}!"
        return f"How {self.pick(W.ADJECTIVES)} {self.pick(W.NAMES)} looks {self.pick(_TIMES)}!"

    def short(self) -> str:
        r = self.rng.randrange(3)
        if r == 0:
            return f"{self.pick(W.NAMES)} {_past(self.pick(_INTRANSITIVE))} {self.pick(W.ADVERBS)}."
        if r == 1:
            return f"Is the {self.pick(_NOUNS)} {self.pick(W.ADJECTIVES)}?"
        return f"{self.pick(_INTRANSITIVE).capitalize()} {self.pick(W.ADVERBS)}, {self.pick(W.NAMES)}!"

    def listing(self) -> str:
        things = [self.obj() for _ in range(self.rng.randint(3, 4))]
        subj, _ = self.subject()
        verb = self.pick(["bought", "found", "packed", "lost", "needed", "brought", "ordered", "painted"])
        return f"{subj} {verb} {', '.join(things[:-1])}, and {things[-1]}{self.maybe(0.5, ' ' + self.place())}."

    def numbers(self) -> str:
        name, r = self.pick(W.NAMES), self.rng.randrange(9)
        thing = _plural(self.pick(W.THINGS + W.ANIMALS + W.FOODS))
        if r == 0:
            return f"There were {self.rng.randint(2, 999)} {thing} {self.place()}."
        if r == 1:
            return f"{name} moved to {self.pick(W.CITIES)} in {self.rng.randint(1850, 2030)}."
        if r == 2:
            clock = f"{self.rng.randint(1, 12)}:{self.pick(['00', '15', '30', '45', '05'])}"
            part = self.maybe(0.5, " " + self.pick(["in the morning", "in the afternoon", "tonight"]))
            return f"The {self.pick(W.PLACES)} opens at {clock}{part}."
        if r == 3:
            price = f"{self.rng.randint(1, 500)}{self.maybe(0.5, f'.{self.rng.randint(10, 99)}')}"
            return f"{name} paid ${price} for {self.noun_phrase(W.THINGS + W.FOODS, plural=False)}."
        if r == 4:
            return f"About {self.rng.randint(2, 98)}% of the {thing} were {self.pick(W.ADJECTIVES)}."
        if r == 5:
            return f"We counted {self.rng.randint(1000, 99999):,} {thing} {self.pick(_TIMES)}."
        if r == 6:
            rank = self.rng.randint(1, 40)
            return f"{name} finished {rank}{_ordinal_suffix(rank)} in the {self.pick(['race', 'contest', 'match'])}."
        if r == 7:
            return f"The {self.pick(W.THINGS)} weighs {self.rng.randint(1, 60)}.{self.rng.randint(1, 9)} kilograms."
        return f"\"Room {self.rng.randint(100, 999)} is on floor {self.rng.randint(2, 30)},\" said {name}."

    SHAPES: list[Callable[[SentenceGenerator], str]] = [
        statement, statement, joined, joined, yes_no_question, wh_question, command, exclamation, short,
        listing, numbers, numbers,
    ]


def _ordinal_suffix(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
