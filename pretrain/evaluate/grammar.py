"""The built-in English grammar set: minimal pairs made by templates written for this project (the way BLiMP was
made, none of its data), one phenomenon per template, a fixed seed, PER_PHENOMENON distinct pairs each.

    grammar_pairs() -> [Pair(good, bad, group=phenomenon), ...]   # deterministic: same list in every process

Each pair differs in the one point its phenomenon names; plausibility is kept simple (any person may see any
thing), so a model is asked about form, not world knowledge. The vocabulary is below.
"""
from __future__ import annotations

import random

from .pairs import Pair

PER_PHENOMENON = 120
SEED = 0

# ---- vocabulary -------------------------------------------------------------------------------------------------
PEOPLE = [  # singular, plural, gender (None: either)
    ("boy", "boys", "m"), ("girl", "girls", "f"), ("man", "men", "m"), ("woman", "women", "f"),
    ("king", "kings", "m"), ("queen", "queens", "f"), ("actor", "actors", None), ("teacher", "teachers", None),
    ("doctor", "doctors", None), ("student", "students", None), ("child", "children", None),
    ("farmer", "farmers", None), ("dancer", "dancers", None), ("singer", "singers", None),
    ("waiter", "waiters", None), ("pilot", "pilots", None), ("brother", "brothers", "m"), ("sister", "sisters", "f"),
]
THINGS = [("book", "books"), ("car", "cars"), ("apple", "apples"), ("chair", "chairs"), ("letter", "letters"),
          ("picture", "pictures"), ("door", "doors"), ("cake", "cakes"), ("window", "windows"), ("song", "songs"),
          ("bottle", "bottles"), ("key", "keys"), ("table", "tables"), ("box", "boxes")]
TRANSITIVE = [("likes", "like"), ("sees", "see"), ("finds", "find"), ("remembers", "remember"), ("cleans", "clean"),
              ("buys", "buy"), ("carries", "carry"), ("paints", "paint"), ("wants", "want"), ("sells", "sell")]
INTRANSITIVE = [("sleeps", "sleep"), ("laughs", "laugh"), ("smiles", "smile"), ("waits", "wait"), ("runs", "run"),
                ("sings", "sing"), ("works", "work"), ("arrives", "arrive")]
PAST_TRANSITIVE = ["found", "bought", "cleaned", "carried", "painted", "liked", "wanted", "sold", "opened", "moved"]
PAST_INTRANSITIVE = ["slept", "arrived", "laughed", "smiled", "fell", "vanished", "died", "sneezed", "yawned"]
IRREGULAR = [("saw", "seen"), ("took", "taken"), ("broke", "broken"), ("chose", "chosen"), ("forgot", "forgotten"),
             ("stole", "stolen"), ("hid", "hidden"), ("drew", "drawn"), ("ate", "eaten"), ("wrote", "written"),
             ("shook", "shaken"), ("threw", "thrown")]
REFLEXIVE_VERBS = ["admired", "hurt", "praised", "described", "helped", "blamed", "saw", "criticized"]
PREPOSITIONS = ["near", "behind", "beside", "next to", "without", "with"]
REFLEXIVE = {"m": "himself", "f": "herself"}
ADVERBS = ["", " again", " yesterday", " today", " in the garden"]


def _the(noun: str) -> str:
    return f"The {noun}"


def _person(rng, plural: bool):
    sg, pl, gender = rng.choice(PEOPLE)
    return (pl if plural else sg), gender


def _thing(rng, plural: bool | None = None):
    sg, pl = rng.choice(THINGS)
    if plural is None:
        plural = rng.random() < 0.5
    return pl if plural else sg


# ---- one template per phenomenon: rng -> (good, bad) ----------------------------------------------------------------
def subject_verb_agreement(rng):
    plural = rng.random() < 0.5
    subj, _ = _person(rng, plural)
    verb = rng.choice(TRANSITIVE)
    obj = _thing(rng)
    return (f"{_the(subj)} {verb[plural]} the {obj}.", f"{_the(subj)} {verb[not plural]} the {obj}.")


def agreement_across_prepositional_phrase(rng):
    plural = rng.random() < 0.5
    subj, _ = _person(rng, plural)
    attractor = _thing(rng, not plural)  # the noun next to the verb has the other number
    prep, verb = rng.choice(PREPOSITIONS), rng.choice(INTRANSITIVE)
    head = f"{_the(subj)} {prep} the {attractor}"
    return f"{head} {verb[plural]}.", f"{head} {verb[not plural]}."


def agreement_across_relative_clause(rng):
    plural = rng.random() < 0.5
    subj, _ = _person(rng, plural)
    other, _ = _person(rng, not plural)
    inner, verb = rng.choice(TRANSITIVE), rng.choice(INTRANSITIVE)
    head = f"{_the(subj)} that the {other} {inner[not plural]}"
    return f"{head} {verb[plural]}.", f"{head} {verb[not plural]}."


def determiner_noun_agreement(rng):
    subj, _ = _person(rng, rng.random() < 0.5)
    sg, pl = rng.choice(THINGS)
    near = rng.random() < 0.5
    det_sg, det_pl = ("this", "these") if near else ("that", "those")
    verb = rng.choice(PAST_TRANSITIVE)
    noun = pl if rng.random() < 0.5 else sg
    good, bad = (det_pl, det_sg) if noun == pl else (det_sg, det_pl)
    return f"{_the(subj)} {verb} {good} {noun}.", f"{_the(subj)} {verb} {bad} {noun}."


def irregular_past_tense(rng):
    subj, _ = _person(rng, rng.random() < 0.5)
    past, participle = rng.choice(IRREGULAR)
    obj = _thing(rng)
    return f"{_the(subj)} {past} the {obj}.", f"{_the(subj)} {participle} the {obj}."


def anaphor_number_agreement(rng):
    plural = rng.random() < 0.5
    sg, pl, gender = rng.choice([p for p in PEOPLE if p[2]])
    verb = rng.choice(REFLEXIVE_VERBS)
    single = REFLEXIVE[gender]
    good, bad = ("themselves", single) if plural else (single, "themselves")
    subj, when = (pl if plural else sg), rng.choice(ADVERBS)
    return f"{_the(subj)} {verb} {good}{when}.", f"{_the(subj)} {verb} {bad}{when}."


def anaphor_gender_agreement(rng):
    sg, _, gender = rng.choice([p for p in PEOPLE if p[2]])
    verb = rng.choice(REFLEXIVE_VERBS)
    other, when = ("f" if gender == "m" else "m"), rng.choice(ADVERBS)
    return f"{_the(sg)} {verb} {REFLEXIVE[gender]}{when}.", f"{_the(sg)} {verb} {REFLEXIVE[other]}{when}."


def negative_polarity_ever(rng):
    subj, _ = _person(rng, False)
    _, participle = rng.choice(IRREGULAR)
    obj = _thing(rng)
    rest = f"{subj} has ever {participle} the {obj}."
    return f"No {rest}", f"The {rest}"


def transitivity(rng):
    subj, _ = _person(rng, rng.random() < 0.5)
    obj = _thing(rng)
    return (f"{_the(subj)} {rng.choice(PAST_TRANSITIVE)} the {obj}.",
            f"{_the(subj)} {rng.choice(PAST_INTRANSITIVE)} the {obj}.")


def existential_there_agreement(rng):
    plural = rng.random() < 0.5
    noun = _thing(rng, plural)
    place = f"{rng.choice(PREPOSITIONS[:3])} the {_thing(rng, False)}"
    phrase = f"many {noun}" if plural else f"a {noun}"
    good, bad = ("are", "is") if plural else ("is", "are")
    return f"There {good} {phrase} {place}.", f"There {bad} {phrase} {place}."


def wh_island(rng):
    asker, _ = _person(rng, rng.random() < 0.5)
    doer, _ = _person(rng, rng.random() < 0.5)
    verb = rng.choice(PAST_TRANSITIVE)
    return (f"What did the {asker} think that the {doer} {verb}?",
            f"What did the {asker} wonder whether the {doer} {verb}?")


PHENOMENA = {f.__name__: f for f in (
    subject_verb_agreement, agreement_across_prepositional_phrase, agreement_across_relative_clause,
    determiner_noun_agreement, irregular_past_tense, anaphor_number_agreement, anaphor_gender_agreement,
    negative_polarity_ever, transitivity, existential_there_agreement, wh_island)}


def grammar_pairs(per_phenomenon: int = PER_PHENOMENON, seed: int = SEED) -> list[Pair]:
    """per_phenomenon distinct pairs of every phenomenon, in a fixed order."""
    out = []
    for name, template in PHENOMENA.items():
        rng = random.Random(f"grammar-{name}-{seed}")
        seen: set[tuple[str, str]] = set()
        tries = 0
        while len(seen) < per_phenomenon:
            tries += 1
            if tries > 100 * per_phenomenon:
                raise RuntimeError(f"the {name} template makes fewer than {per_phenomenon} distinct pairs")
            good, bad = template(rng)
            if (good, bad) not in seen:
                seen.add((good, bad))
                out.append(Pair(good, bad, name))
    return out
