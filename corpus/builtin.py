"""The built-in corpus: a seeded, deterministic generator of prompt → piece pairs.

The project may not ship third-party text, so it writes its own offline corpus. Each piece is built
from a *plan* (a hero, a place, a companion, an object, a goal, an obstacle, a turn and an ending) drawn
with a random generator seeded by ``(seed, index)``, so piece ``i`` is the same whatever ``n`` is and
growing the corpus never changes existing pieces. The prompt names the plan's people, places and
things, and the piece uses them, so that models can learn relevance as well as fluency.

Three forms are produced: ``story`` (120–300 words), ``fable`` (a beast fable with a stated moral,
70–160 words) and ``poem`` (titled, rhymed quatrains with line breaks, 60–130 words), across the
genres ``fantasy``, ``science fiction``, ``mystery`` and ``adventure``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pandas as pd

from corpus.schema import make_frame

FORMS: tuple[str, ...] = ("story", "fable", "poem")
GENRES: tuple[str, ...] = ("fantasy", "science fiction", "mystery", "adventure")
FORM_WEIGHTS: tuple[float, ...] = (0.55, 0.25, 0.20)

NAMES = [
    "Mira", "Tomas", "Elin", "Jonah", "Ada", "Felix", "Nora", "Rafi", "Lena", "Oskar", "Priya", "Milo",
    "Sana", "Theo", "Iris", "Kofi", "Yara", "Bram", "Lucia", "Emeka", "Hana", "Ivo", "Zara", "Pavel",
    "Wren", "Soren", "Amara", "Cass", "Dalia", "Ezra", "Greta", "Hugo", "Juno", "Kiran", "Lior", "Maya",
    "Nico", "Orla", "Pip", "Rosa", "Silas", "Tilda", "Umar", "Vera", "Wim", "Xenia", "Yusuf", "Zeno",
]
HEROES = [
    ("girl", "she", "her"), ("boy", "he", "his"), ("young inventor", "she", "her"),
    ("old sailor", "he", "his"), ("shy apprentice", "he", "his"), ("curious student", "she", "her"),
    ("retired detective", "he", "his"), ("young cartographer", "she", "her"), ("baker", "he", "his"),
    ("lighthouse keeper", "she", "her"), ("village healer", "she", "her"), ("street musician", "he", "his"),
]
TRAITS = ["brave", "stubborn", "gentle", "restless", "clever", "lonely", "cheerful", "careful", "proud", "quiet"]


@dataclass(frozen=True)
class GenreKit:
    """The building blocks of one genre: places, companions, objects, goals, obstacles and turns."""

    places: tuple[str, ...]
    companions: tuple[str, ...]
    objects: tuple[str, ...]
    goals: tuple[str, ...]
    obstacles: tuple[str, ...]
    turns: tuple[str, ...]
    moods: tuple[str, ...]


KITS: dict[str, GenreKit] = {
    "fantasy": GenreKit(
        places=("a magical forest", "a floating castle", "a valley of sleeping giants", "an enchanted library",
                "a mountain kingdom", "a river of glass", "a village of talking cats", "a garden of moonflowers"),
        companions=("a tiny dragon", "a talking fox", "a grumpy wizard", "a lost unicorn", "a family of glowing moths",
                    "a stone troll", "a wise old owl", "a mischievous fairy"),
        objects=("a silver key", "a map drawn in starlight", "an enchanted lantern", "a singing sword",
                 "a cracked crystal", "a book with no words", "a golden acorn", "a cloak of feathers"),
        goals=("break an old curse", "find the way home", "wake the sleeping queen", "bring back the lost spring",
               "return a stolen crown", "heal the dying tree"),
        obstacles=("a bridge guarded by a riddling giant", "a storm conjured by a jealous witch",
                   "a maze of thorns that moved at night", "a river that flowed uphill",
                   "a spell that made everyone forget their names"),
        turns=("the creature they feared had been under a spell all along",
               "the answer was written inside the first page they had ignored",
               "the curse could only be broken by a kindness freely given",
               "the key fitted a door inside the hollow tree"),
        moods=("glowing", "whispering", "ancient", "silver", "hidden", "strange"),
    ),
    "science fiction": GenreKit(
        places=("a space station orbiting Jupiter", "a city under the sea", "a colony on Mars",
                "a starship drifting between galaxies", "a robot factory on the Moon", "a research base on Europa",
                "a desert planet with two suns", "a floating city above the clouds"),
        companions=("a helpful robot", "an alien botanist", "a ship's computer with a sense of humour",
                    "a repair drone", "a stranded astronaut", "a cloned cat", "a holographic guide", "a friendly android"),
        objects=("a broken time machine", "a signal from deep space", "a glowing data crystal", "a gravity boot",
                 "a seed vault", "an old star chart", "a pocket telescope", "a prototype engine"),
        goals=("repair the failing reactor", "answer the signal from the stars", "save the last greenhouse",
               "find the missing crew", "stop a runaway asteroid", "reach the far side of the galaxy"),
        obstacles=("a solar storm that scrambled every screen", "a captain who refused to listen",
                   "an airlock that would not open", "a virus in the navigation system",
                   "a countdown that could not be stopped"),
        turns=("the signal was their own message, sent back from the future",
               "the robot had been protecting them the whole time",
               "the aliens had only wanted to say hello",
               "the map was showing a place that did not exist yet"),
        moods=("humming", "distant", "electric", "cold", "bright", "silent"),
    ),
    "mystery": GenreKit(
        places=("a foggy harbour town", "an old manor on a hill", "a crowded night train", "a quiet museum",
                "a seaside hotel", "a snowed-in mountain inn", "a lighthouse on a rocky island", "a busy city market"),
        companions=("a sharp-eyed parrot", "a nervous butler", "a retired police dog", "a talkative neighbour",
                    "a young reporter", "a clockmaker with a secret", "an old housekeeper", "a mysterious stranger"),
        objects=("a torn letter", "a missing painting", "a pocket watch that stopped at midnight", "a locked diary",
                 "a muddy footprint", "a silver locket", "a coded telegram", "an empty birdcage"),
        goals=("find out who stole the necklace", "solve the riddle of the empty room",
               "discover who sent the anonymous letters", "find the missing heir", "uncover the secret of the tower",
               "clear an innocent friend's name"),
        obstacles=("a storm that cut the town off from the world", "a witness who kept changing the story",
                   "a clue that pointed at the wrong person", "a door locked from the inside",
                   "a suspect with a perfect alibi"),
        turns=("the thief had never left the building", "the clock had been set back by an hour",
               "the letter was written by the victim", "the footprints had been made by walking backwards"),
        moods=("foggy", "quiet", "dark", "curious", "uneasy", "grey"),
    ),
    "adventure": GenreKit(
        places=("a jungle full of ruins", "a frozen northern sea", "a desert of red dunes", "a pirate island",
                "a canyon of echoes", "a volcano at the end of the world", "a raging river delta", "a cave below the mountains"),
        companions=("a loyal dog", "a one-eyed pirate", "a clever monkey", "a young guide", "an old explorer",
                    "a talking parrot", "a camel with opinions", "a runaway prince"),
        objects=("a treasure map", "an old compass", "a golden idol", "a rope ladder", "a brass telescope",
                 "a captain's log", "a jade medallion", "a wooden raft"),
        goals=("find the lost city", "reach the top of the highest peak", "recover the sunken treasure",
               "cross the great desert", "rescue a missing friend", "find the source of the river"),
        obstacles=("a rope bridge that snapped", "a sandstorm that buried the trail", "a rival crew of treasure hunters",
                   "a flood that swept away the camp", "a cliff too steep to climb"),
        turns=("the real treasure was the map itself", "the rival crew had been lost too and needed help",
               "the statue pointed to a hidden door", "the river led them back to where they started"),
        moods=("wild", "burning", "endless", "roaring", "golden", "lonely"),
    ),
}

ANIMALS = [
    "fox", "crow", "tortoise", "hare", "ant", "grasshopper", "lion", "mouse", "wolf", "lamb", "owl", "goat",
    "frog", "heron", "bear", "bee", "dove", "cat", "donkey", "squirrel", "rabbit", "peacock", "snail", "eagle",
]
MORALS = [
    ("patience", "Slow and steady work wins in the end."),
    ("pride", "Pride goes before a fall."),
    ("kindness", "No act of kindness, however small, is ever wasted."),
    ("greed", "Those who want everything often end up with nothing."),
    ("honesty", "A liar is not believed even when telling the truth."),
    ("friendship", "A friend in need is a friend indeed."),
    ("preparation", "It is wise to prepare today for the needs of tomorrow."),
    ("flattery", "Never trust a flatterer."),
    ("teamwork", "Together we are stronger than we are alone."),
    ("gratitude", "Gratitude is the sign of a noble heart."),
]
FABLE_SETTINGS = [
    "at the edge of a wide meadow", "beside a cool stream", "deep in the old wood", "on a dusty country road",
    "near a farmer's barn", "under a great oak tree", "on the banks of a pond", "high on a rocky hill",
]
SEASONS = ["spring", "summer", "autumn", "winter"]

# Rhyme groups for poems: every line template ends on a word of its group, so that ABAB stanzas rhyme.
RHYMES: dict[str, tuple[str, ...]] = {
    "night": ("{Subj} is waiting in the night", "and every window holds a light", "the stars come out so small and bright",
              "a pale bird rises into flight", "and all the world is silver-white"),
    "sea": ("{Subj} is dreaming of the sea", "where every wave is wild and free", "I hear it calling out to me",
            "beneath a bent and salted tree", "as far as any eye can see"),
    "sky": ("{Subj} looks up into the sky", "the clouds are slowly drifting by", "and swallows wheel and dip and fly",
            "a wind is singing, low and high", "and no one stops to wonder why"),
    "stone": ("{Subj} stands quiet and alone", "on roads of moss and weathered stone", "with seeds the patient years have sown",
              "in halls where no one's ever known", "a place {pro} once called {pos} own"),
    "rain": ("{Subj} is walking in the rain", "along a long and narrow lane", "the puddles shine like glass again",
             "and silver runs down every pane", "across the wide and empty plain"),
    "day": ("{Subj} has wandered far today", "the morning fades to evening grey", "and shadows lengthen on the way",
            "the children laugh and run and play", "and {pro} is not afraid to stay"),
    "land": ("{Subj} walks across the land", "with {obj} held in {pos} hand", "where old towers used to stand",
             "by rivers running through the sand", "more than anyone had planned"),
    "song": ("{Subj} has listened all along", "to {place} and its ancient song", "the hours pass, the nights are long",
             "the heart is quiet, but it's strong", "a place where all of us belong"),
}


@dataclass(frozen=True)
class Plan:
    """Everything a piece is made of; the prompt and the piece are both written from it."""

    form: str
    genre: str
    name: str
    hero: str
    pronoun: str
    possessive: str
    trait: str
    place: str
    companion: str
    obj: str
    goal: str
    obstacle: str
    turn: str
    mood: str
    animal_a: str
    animal_b: str
    moral_theme: str
    moral: str
    fable_setting: str
    season: str


def _strip_article(phrase: str) -> str:
    for article in ("a ", "an ", "the "):
        if phrase.startswith(article):
            return phrase[len(article):]
    return phrase


def _the(phrase: str) -> str:
    """'a tiny dragon' -> 'the tiny dragon' (a second mention of something already introduced)."""
    return "the " + _strip_article(phrase)


def _an(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def make_plan(rng: random.Random, form: str | None = None, genre: str | None = None) -> Plan:
    """Draws a plan for one piece.

    Args:
        rng: The random generator (seeded by the caller for determinism).
        form: Force a form; drawn by :data:`FORM_WEIGHTS` when None.
        genre: Force a genre; drawn uniformly when None.

    Returns:
        The plan.
    """
    form = form or rng.choices(FORMS, weights=FORM_WEIGHTS)[0]
    genre = genre or rng.choice(GENRES)
    kit = KITS[genre]
    hero, pronoun, possessive = rng.choice(HEROES)
    animal_a, animal_b = rng.sample(ANIMALS, 2)
    moral_theme, moral = rng.choice(MORALS)
    return Plan(
        form=form, genre=genre, name=rng.choice(NAMES), hero=hero, pronoun=pronoun, possessive=possessive,
        trait=rng.choice(TRAITS), place=rng.choice(kit.places), companion=rng.choice(kit.companions),
        obj=rng.choice(kit.objects), goal=rng.choice(kit.goals), obstacle=rng.choice(kit.obstacles),
        turn=rng.choice(kit.turns), mood=rng.choice(kit.moods), animal_a=animal_a, animal_b=animal_b,
        moral_theme=moral_theme, moral=moral, fable_setting=rng.choice(FABLE_SETTINGS), season=rng.choice(SEASONS),
    )


def write_prompt(plan: Plan, rng: random.Random) -> str:
    """Writes the prompt a writer might type for this plan."""
    p = plan
    if p.form == "story":
        options = [
            f"Write {_an(p.genre)} story about a {p.hero}'s adventures in {p.place} where {p.pronoun} meets {p.companion}.",
            f"Write a story about {p.name}, a {p.trait} {p.hero} who must {p.goal} in {p.place}.",
            f"Tell me {_an(p.genre)} story in which {p.name} finds {p.obj} in {p.place}.",
            f"A {p.hero} named {p.name} and {p.companion} set out to {p.goal}. Write what happens.",
            f"Write a short {p.genre} story set in {p.place}, with {p.companion} and {p.obj}.",
        ]
    elif p.form == "fable":
        options = [
            f"Write a fable about a {p.animal_a} and a {p.animal_b} that teaches a lesson about {p.moral_theme}.",
            f"Tell a fable with a moral about {p.moral_theme}, starring a {p.animal_a}.",
            f"Write a short fable in which a {p.animal_a} meets a {p.animal_b} {p.fable_setting}.",
            f"Write a fable about {p.moral_theme}: a {p.animal_a}, a {p.animal_b}, and a hard lesson.",
        ]
    else:
        options = [
            f"Write a poem about {p.place} in {p.season}.",
            f"Write a rhyming poem about {p.name}, a {p.hero}, and {p.obj}.",
            f"Write {_an(p.mood)} poem about {p.companion} in {p.place}.",
            f"Compose a short poem about {p.obj} and {p.place}.",
        ]
    return rng.choice(options)


def _story(p: Plan, rng: random.Random) -> str:
    kit = KITS[p.genre]
    comp, place, obj = p.companion, p.place, p.obj
    openings = [
        f"Once upon a time, in {place}, there lived a {p.trait} {p.hero} named {p.name}.",
        f"{p.name} was a {p.trait} {p.hero} who had always wanted to see {place}.",
        f"Nobody in {place} had ever met a {p.hero} quite like {p.name}.",
        f"The first time {p.name} came to {place}, the air felt {p.mood} and new.",
    ]
    desires = [
        f"More than anything, {p.pronoun} wanted to {p.goal}.",
        f"Everyone said it was impossible to {p.goal}, but {p.name} did not believe them.",
        f"{_cap(p.pronoun)} had made a promise to {p.goal}, and {p.pronoun} meant to keep it.",
    ]
    findings = [
        f"One morning {p.pronoun} found {obj} lying in the grass, and it felt warm in {p.possessive} hands.",
        f"Hidden under a loose stone, {p.name} discovered {obj}.",
        f"A stranger pressed {obj} into {p.possessive} hand and whispered, \"You will need this.\"",
    ]
    meetings = [
        f"Soon {p.pronoun} met {comp}, who offered to help.",
        f"On the road {p.name} met {comp}. \"Where are you going?\" asked {_the(comp)}. "
        f"\"I am going to {p.goal},\" said {p.name}.",
        f"That night {comp} appeared beside the fire and asked to come along.",
    ]
    troubles = [
        f"But the way was blocked by {p.obstacle}.",
        f"Then came the hardest part: {p.obstacle}.",
        f"They had not gone far before they faced {p.obstacle}.",
    ]
    struggles = [
        f"{p.name} tried everything {p.pronoun} knew, and still nothing worked. "
        f"{_cap(_the(comp))} sat down and sighed.",
        f"For three days they tried and failed, and {p.name} began to lose hope.",
        f"{_cap(p.pronoun)} was frightened, but {_the(comp)} reminded {p.possessive if p.pronoun == 'she' else 'him'} "
        f"why they had come.",
    ]
    turns = [
        f"Then {p.name} noticed something strange: {p.turn}.",
        f"At last {p.pronoun} understood that {p.turn}.",
        f"It was {_the(comp)} who realised the truth: {p.turn}.",
    ]
    uses = [
        f"{p.name} held up {_the(obj)}, and the way opened before them.",
        f"With {_the(obj)} in hand and {_the(comp)} at {p.possessive} side, {p.pronoun} went on.",
        f"{_cap(_the(obj))} began to glow, and {p.name} knew exactly what to do.",
    ]
    endings = [
        f"In the end they managed to {p.goal}, and {_the(place)} was never quite the same again.",
        f"By the time the sun rose, {p.name} had done what {p.pronoun} came to do. "
        f"{_cap(_the(comp))} smiled, and together they walked home.",
        f"Years later, people in {_the(place)} still told the story of {p.name} and {_the(comp)}.",
        f"{p.name} kept {_the(obj)} forever, to remember the day {p.pronoun} learned to be brave.",
    ]
    details = [
        f"The {p.mood} light of {_strip_article(place)} fell across the path.",
        f"Somewhere far away, something {p.mood} was waiting.",
        f"{_cap(_the(comp))} talked the whole way, and {p.name} did not mind at all.",
        f"{p.name} wrote everything down in a small notebook, just in case.",
        f"The {p.season} wind smelled of rain and adventure.",
    ]
    paragraphs = [
        " ".join([rng.choice(openings), rng.choice(desires), rng.choice(details)]),
        " ".join([rng.choice(findings), rng.choice(meetings)]),
        " ".join([rng.choice(troubles), rng.choice(struggles)]),
        " ".join([rng.choice(turns), rng.choice(uses)]),
        rng.choice(endings),
    ]
    if rng.random() < 0.5:  # vary the length: some stories get an extra scene
        extra = rng.choice([kit.obstacles[0], kit.obstacles[-1]])
        paragraphs.insert(3, f"Before they could rest, they also had to face {extra}. "
                             f"{p.name} was tired, but {p.pronoun} did not give up.")
    return "\n\n".join(paragraphs)


def _fable(p: Plan, rng: random.Random) -> str:
    a, b = p.animal_a, p.animal_b
    setups = {
        "patience": f"The {a} laughed at the {b} for being slow, and boasted that it could finish the work in half the time.",
        "pride": f"The {a} was very proud of its fine looks and would not speak to the plain little {b}.",
        "kindness": f"The {a} was caught in a hunter's net, and the small {b} chewed through the ropes to set it free.",
        "greed": f"The {a} found a great store of food but would not share a single crumb with the hungry {b}.",
        "honesty": f"The {a} liked to cry out for help when nothing was wrong, just to watch the {b} come running.",
        "friendship": f"The {a} and the {b} promised to help each other whatever happened.",
        "preparation": f"All summer the {b} gathered food, while the {a} sang and slept in the sun.",
        "flattery": f"The {b} had found a piece of cheese, and the {a} began to praise its beautiful voice.",
        "teamwork": f"The {a} could not move the heavy log alone, and the {b} could not lift it either.",
        "gratitude": f"The {b} once saved the {a} from the river, and the {a} swore never to forget it.",
    }
    middles = {
        "patience": f"But the {a} stopped to rest and fell asleep, while the {b} kept going, step by step.",
        "pride": f"One day a storm came, and the {a}'s fine feathers were soaked and torn, while the {b} stayed safe and dry.",
        "kindness": f"\"How could something so small ever help me?\" the {a} had once laughed. Now it had its answer.",
        "greed": f"The {a} tried to carry all of it at once, slipped on the path, and lost everything in the stream.",
        "honesty": f"One evening real danger came, and the {a} cried out, but the {b} thought it was another trick.",
        "friendship": f"When a hunter came, the {b} ran and hid, and left the {a} to face the danger alone.",
        "preparation": f"When winter came, the {a} had nothing to eat and went begging at the {b}'s door.",
        "flattery": f"The {b} opened its mouth to sing, and the cheese fell straight into the {a}'s jaws.",
        "teamwork": f"So the {a} pushed and the {b} pulled, and together they rolled the log across the stream.",
        "gratitude": f"Later the {a} saw a trap set for the {b} and warned it just in time.",
    }
    closers = [
        f"The {a} and the {b} both remembered that day for a long time.",
        f"From then on, the {a} was a little wiser.",
        f"The {b} said nothing, but it never forgot.",
    ]
    moral_lines = [f"Moral: {p.moral}", f"The moral of the story: {p.moral}", p.moral]
    opening = rng.choice([
        f"{_cap(_an(a))} and {_an(b)} lived {p.fable_setting}.",
        f"Long ago, {p.fable_setting}, there lived {_an(a)} and {_an(b)}.",
        f"{_cap(_an(a))} met {_an(b)} one {p.season} morning {p.fable_setting}.",
    ])
    talk = rng.choice([
        f"\"Why should I listen to you?\" said the {a}. \"Because one day you may need me,\" answered the {b}.",
        f"The other animals {p.fable_setting} watched and shook their heads, for they had seen this before.",
        f"\"We shall see,\" said the {b} quietly, and it went on with its work.",
    ])
    body = " ".join([opening, setups[p.moral_theme], talk, middles[p.moral_theme], rng.choice(closers)])
    return body + "\n\n" + rng.choice(moral_lines)


def _poem(p: Plan, rng: random.Random) -> str:
    subjects = [p.name, _cap(_the(p.companion)), f"The {_strip_article(p.place)}"]
    fill = {
        "place": _strip_article(p.place), "obj": _the(p.obj), "pro": "she" if p.pronoun == "she" else "he",
        "pos": p.possessive,
    }
    title = rng.choice([
        _cap(_strip_article(p.place)).title(), f"{p.name} and {_cap(_strip_article(p.obj))}".title(),
        f"{_cap(p.season)} in {_cap(_strip_article(p.place))}".title(), f"A {p.mood.title()} Song",
    ])
    stanzas = []
    groups = rng.sample(sorted(RHYMES), 6)
    for k in range(3):
        ga, gb = groups[2 * k], groups[2 * k + 1]
        # Each stanza opens on its group's subject line, so the poem names the prompt's people and places.
        la = [RHYMES[ga][0], rng.choice(RHYMES[ga][1:])]
        lb = rng.sample(RHYMES[gb], 2)
        subj = subjects[k % len(subjects)]
        lines = [la[0], lb[0], la[1], lb[1]]
        lines = [line.format(Subj=subj, **fill) for line in lines]
        lines = [_cap(line) for line in lines]
        lines[1] += ","
        lines[-1] += "."
        stanzas.append("\n".join(lines))
    envoi = rng.choice([
        f"And still {_the(p.obj)} remembers {_the(p.place)},\nand every {p.mood} {p.season} it has known.",
        f"So keep {_the(p.obj)} close, and think of {_the(p.place)}\nwhen {p.season} comes round again.",
    ])
    return title + "\n\n" + "\n\n".join(stanzas) + "\n\n" + _cap(envoi)


WRITERS = {"story": _story, "fable": _fable, "poem": _poem}


def generate_piece(seed: int, index: int) -> dict[str, str]:
    """Generates piece ``index`` of the corpus with ``seed``: the same inputs always give the same piece.

    Args:
        seed: The corpus seed.
        index: The piece's index.

    Returns:
        One record of the data contract.
    """
    rng = random.Random(f"creative-writer/{seed}/{index}")
    plan = make_plan(rng)
    prompt = write_prompt(plan, rng)
    text = WRITERS[plan.form](plan, rng)
    return {
        "id": f"builtin-{seed}-{index:06d}", "source": "builtin", "form": plan.form, "genre": plan.genre,
        "prompt": prompt, "text": text,
    }


def generate_corpus(n: int = 6000, seed: int = 13) -> pd.DataFrame:
    """Generates the built-in corpus.

    Args:
        n: How many pieces (≥ 1).
        seed: The corpus seed.

    Returns:
        A frame of the data contract with ``n`` rows.

    Raises:
        ValueError: If ``n`` is below 1.
    """
    if n < 1:
        raise ValueError(f"builtin corpus: n must be at least 1, got {n}")
    return make_frame([generate_piece(seed, i) for i in range(n)], where="builtin")
