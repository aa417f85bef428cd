"""The demo data shipped with snrtune, generated deterministically.

`python -m snrtune.evaluation.demo_data --out src/snrtune/data/demo` writes, byte for byte the same each time:

- ``toolcall_train.jsonl`` / ``toolcall_test.jsonl``: a skill SmolLM2-135M-Instruct lacks and learns in a
  few dozen steps: answer a request with one strict-JSON tool call
  (``{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}``), in the "messages"
  format. The two splits share no request and no tool call.
- ``retention.jsonl``: general-knowledge multiple-choice questions (capitals, arithmetic, units, science,
  languages), true facts only, to measure what fine-tuning made the model forget.
- ``ppl.jsonl``: ordinary English paragraphs written for the project, for a held-out perplexity task.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20240611
N_TOOLCALL_TRAIN = 480
N_TOOLCALL_TEST = 60

CITIES = ["Oslo", "Paris", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Prague", "Warsaw", "Dublin",
          "Tokyo", "Seoul", "Cairo", "Lima", "Toronto", "Chicago", "Denver", "Sydney", "Nairobi", "Helsinki",
          "Athens", "Zurich", "Boston", "Mumbai", "Bangkok", "Hanoi", "Quito", "Accra", "Dakar", "Riga"]
NAMES = ["anna", "ben", "carla", "dev", "emma", "felix", "grace", "hugo", "ines", "jonas", "kim", "leo",
         "maya", "nils", "olga", "paul", "rosa", "sam", "tara", "victor"]
DOMAINS = ["example.com", "mail.org", "work.net"]
SUBJECTS = ["budget review", "team lunch", "project update", "travel plans", "invoice", "weekly report",
            "meeting notes", "birthday party", "contract draft", "holiday schedule"]
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF", "NOK", "CAD", "SEK"]
LANGUAGES = ["French", "German", "Spanish", "Italian", "Japanese", "Dutch", "Polish", "Swedish"]
PHRASES = ["good morning", "thank you", "where is the station", "see you tomorrow", "the bill please",
           "happy birthday", "how much is this", "I am lost", "nice to meet you", "open the window"]
TASKS = ["call the dentist", "water the plants", "buy milk", "pay rent", "book a taxi", "send the slides",
         "walk the dog", "renew the passport", "pick up the kids", "back up the laptop"]


def _email(rng: random.Random) -> str:
    return f"{rng.choice(NAMES)}@{rng.choice(DOMAINS)}"


def _weather(rng: random.Random) -> tuple[str, dict]:
    city, unit = rng.choice(CITIES), rng.choice(["celsius", "fahrenheit"])
    text = rng.choice([
        "What's the weather in {city} right now, in {unit}?",
        "Tell me the current temperature in {city} in {unit}.",
        "How warm is it in {city}? Use {unit}.",
        "Weather report for {city}, please, in degrees {unit}.",
    ]).format(city=city, unit=unit)
    return text, {"name": "get_weather", "arguments": {"city": city, "unit": unit}}


def _timer(rng: random.Random) -> tuple[str, dict]:
    minutes = rng.randint(1, 90)
    text = rng.choice([
        "Set a timer for {m} minutes.",
        "Start a {m} minute timer.",
        "Remind me in {m} minutes with a timer.",
        "Countdown of {m} minutes, please.",
    ]).format(m=minutes)
    return text, {"name": "set_timer", "arguments": {"minutes": minutes}}


def _currency(rng: random.Random) -> tuple[str, dict]:
    amount = rng.choice([5, 10, 20, 25, 50, 75, 100, 120, 150, 200, 250, 500, 1000])
    src, dst = rng.sample(CURRENCIES, 2)
    text = rng.choice([
        "Convert {a} {s} to {d}.",
        "How much is {a} {s} in {d}?",
        "I need {a} {s} converted into {d}.",
        "What do {a} {s} come to in {d}?",
    ]).format(a=amount, s=src, d=dst)
    return text, {"name": "convert_currency", "arguments": {"amount": amount, "from": src, "to": dst}}


def _email_call(rng: random.Random) -> tuple[str, dict]:
    to, subject = _email(rng), rng.choice(SUBJECTS)
    text = rng.choice([
        "Send an email to {to} about the {s}.",
        "Email {to} with the subject {s}.",
        "Write to {to}; subject: {s}.",
        "Please mail {to} regarding the {s}.",
    ]).format(to=to, s=subject)
    return text, {"name": "send_email", "arguments": {"to": to, "subject": subject}}


def _flights(rng: random.Random) -> tuple[str, dict]:
    origin, destination = rng.sample(CITIES, 2)
    text = rng.choice([
        "Find flights from {o} to {d}.",
        "Are there flights between {o} and {d}?",
        "Search for a flight {o} to {d}.",
        "I want to fly from {o} to {d}. What is available?",
    ]).format(o=origin, d=destination)
    return text, {"name": "search_flights", "arguments": {"origin": origin, "destination": destination}}


def _reminder(rng: random.Random) -> tuple[str, dict]:
    task, time = rng.choice(TASKS), f"{rng.randint(6, 21):02d}:{rng.choice(['00', '15', '30', '45'])}"
    text = rng.choice([
        "Remind me to {t} at {h}.",
        "Add a reminder at {h}: {t}.",
        "At {h}, remind me to {t}.",
        "Create a reminder to {t} for {h}.",
    ]).format(t=task, h=time)
    return text, {"name": "add_reminder", "arguments": {"text": task, "time": time}}


def _translate(rng: random.Random) -> tuple[str, dict]:
    phrase, language = rng.choice(PHRASES), rng.choice(LANGUAGES)
    text = rng.choice([
        "Translate '{p}' into {l}.",
        "How do you say '{p}' in {l}?",
        "Give me the {l} for '{p}'.",
        "What is '{p}' in {l}?",
    ]).format(p=phrase, l=language)
    return text, {"name": "translate", "arguments": {"text": phrase, "target_language": language}}


TOOLS = (_weather, _timer, _currency, _email_call, _flights, _reminder, _translate)


def toolcall_examples(n_train: int = N_TOOLCALL_TRAIN, n_test: int = N_TOOLCALL_TEST,
                      seed: int = SEED) -> tuple[list[dict], list[dict]]:
    """Train and test examples in the messages format; no request and no call appears in both."""
    rng = random.Random(seed)
    seen_calls: set[str] = set()
    examples = []
    while len(examples) < n_train + n_test:
        request, call = rng.choice(TOOLS)(rng)
        answer = json.dumps(call)
        if answer in seen_calls:
            continue
        seen_calls.add(answer)
        examples.append({"messages": [{"role": "user", "content": request},
                                      {"role": "assistant", "content": answer}]})
    return examples[:n_train], examples[n_train:]


# --- retention: true general-knowledge facts -------------------------------------------------------------

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "the United Kingdom": "London", "Ireland": "Dublin", "Norway": "Oslo", "Sweden": "Stockholm",
    "Finland": "Helsinki", "Denmark": "Copenhagen", "Poland": "Warsaw", "Austria": "Vienna",
    "Hungary": "Budapest", "Greece": "Athens", "the Czech Republic": "Prague", "Belgium": "Brussels",
    "Russia": "Moscow", "Ukraine": "Kyiv", "Japan": "Tokyo", "China": "Beijing", "South Korea": "Seoul",
    "India": "New Delhi", "Thailand": "Bangkok", "Vietnam": "Hanoi", "Indonesia": "Jakarta",
    "the Philippines": "Manila", "Egypt": "Cairo", "Kenya": "Nairobi", "Nigeria": "Abuja",
    "Ethiopia": "Addis Ababa", "Morocco": "Rabat", "Argentina": "Buenos Aires", "Peru": "Lima",
    "Chile": "Santiago", "Colombia": "Bogota", "Venezuela": "Caracas", "Mexico": "Mexico City",
    "Canada": "Ottawa", "Australia": "Canberra", "New Zealand": "Wellington", "Turkey": "Ankara",
    "Iran": "Tehran", "Iraq": "Baghdad", "Saudi Arabia": "Riyadh", "Cuba": "Havana", "Romania": "Bucharest",
    "Bulgaria": "Sofia", "Serbia": "Belgrade", "Croatia": "Zagreb", "Iceland": "Reykjavik",
    "Pakistan": "Islamabad", "Bangladesh": "Dhaka", "Nepal": "Kathmandu", "Afghanistan": "Kabul",
    "Ghana": "Accra", "Senegal": "Dakar", "Uruguay": "Montevideo", "Paraguay": "Asuncion",
    "Ecuador": "Quito", "Brazil": "Brasilia", "Malaysia": "Kuala Lumpur", "Estonia": "Tallinn",
    "Latvia": "Riga", "Lithuania": "Vilnius", "Slovakia": "Bratislava", "Slovenia": "Ljubljana",
}

LANGUAGE_OF = {
    "Brazil": "Portuguese", "Mexico": "Spanish", "France": "French", "Germany": "German", "Japan": "Japanese",
    "Italy": "Italian", "Russia": "Russian", "Greece": "Greek", "Poland": "Polish", "Turkey": "Turkish",
    "Sweden": "Swedish", "the Netherlands": "Dutch", "Portugal": "Portuguese", "Argentina": "Spanish",
    "Finland": "Finnish", "Hungary": "Hungarian", "South Korea": "Korean", "Thailand": "Thai",
}

UNITS = [  # (question, answer); distractors come from the other answers
    ("How many centimeters are in one meter?", 100), ("How many meters are in one kilometer?", 1000),
    ("How many millimeters are in one centimeter?", 10), ("How many grams are in one kilogram?", 1000),
    ("How many milliliters are in one liter?", 1000), ("How many seconds are in one minute?", 60),
    ("How many minutes are in one hour?", 60), ("How many hours are in one day?", 24),
    ("How many days are in one week?", 7), ("How many months are in one year?", 12),
    ("How many days are in a leap year?", 366), ("How many days are in a common (non-leap) year?", 365),
    ("How many seconds are in one hour?", 3600), ("How many minutes are in one day?", 1440),
    ("How many hours are in one week?", 168), ("How many inches are in one foot?", 12),
    ("How many feet are in one yard?", 3), ("How many ounces are in one pound?", 16),
    ("How many years are in a century?", 100), ("How many years are in a decade?", 10),
    ("How many years are in a millennium?", 1000), ("How many items are in a dozen?", 12),
    ("How many degrees are in a right angle?", 90), ("How many degrees are in a full circle?", 360),
    ("What do the angles of a triangle add up to, in degrees?", 180),
    ("How many sides does a triangle have?", 3), ("How many sides does a square have?", 4),
    ("How many sides does a pentagon have?", 5), ("How many sides does a hexagon have?", 6),
    ("How many sides does an octagon have?", 8),
    ("At what temperature in degrees Celsius does water boil at sea level?", 100),
    ("At what temperature in degrees Celsius does pure water freeze at sea level?", 0),
    ("At what temperature in degrees Fahrenheit does pure water freeze at sea level?", 32),
    ("How many legs does an insect have?", 6), ("How many legs does a spider have?", 8),
    ("How many planets are in the Solar System?", 8), ("How many continents are there on Earth?", 7),
    ("How many players does a soccer team have on the field?", 11),
    ("How many strings does a standard violin have?", 4), ("How many keys does a standard piano have?", 88),
]

SYMBOLS = {
    "gold": "Au", "silver": "Ag", "iron": "Fe", "sodium": "Na", "potassium": "K", "oxygen": "O",
    "hydrogen": "H", "carbon": "C", "nitrogen": "N", "helium": "He", "copper": "Cu", "lead": "Pb",
    "calcium": "Ca", "chlorine": "Cl", "mercury": "Hg", "tin": "Sn", "zinc": "Zn", "sulfur": "S",
}

SCIENCE = [  # (question, answer, three wrong answers)
    ("Which is the largest planet in the Solar System?", "Jupiter", ["Mars", "Venus", "Mercury"]),
    ("Which planet is closest to the Sun?", "Mercury", ["Neptune", "Jupiter", "Saturn"]),
    ("Which planet is known as the Red Planet?", "Mars", ["Venus", "Uranus", "Neptune"]),
    ("Which planet do we live on?", "Earth", ["Mars", "Jupiter", "Venus"]),
    ("What is the star at the center of the Solar System?", "the Sun", ["Sirius", "Polaris", "Vega"]),
    ("Which gas do plants take from the air for photosynthesis?", "carbon dioxide",
     ["helium", "neon", "argon"]),
    ("Which gas do humans need to breathe in to stay alive?", "oxygen", ["helium", "neon", "argon"]),
    ("What is the chemical formula of water?", "H2O", ["CO2", "NaCl", "CH4"]),
    ("Which organ pumps blood through the human body?", "the heart", ["the liver", "the stomach", "the skin"]),
    ("Which organs do humans use to breathe?", "the lungs", ["the kidneys", "the ears", "the bones"]),
    ("What force pulls objects toward the ground?", "gravity", ["magnetism", "friction", "buoyancy"]),
    ("Which is the largest ocean on Earth?", "the Pacific Ocean",
     ["the Indian Ocean", "the Arctic Ocean", "the Southern Ocean"]),
    ("Which is the tallest mountain above sea level?", "Mount Everest",
     ["Mont Blanc", "Mount Fuji", "Mount Kilimanjaro"]),
    ("Which is the largest hot desert in the world?", "the Sahara",
     ["the Gobi", "the Mojave", "the Kalahari"]),
    ("What is the hardest natural material?", "diamond", ["chalk", "talc", "gold"]),
    ("Which is the largest animal alive today?", "the blue whale",
     ["the elephant", "the giraffe", "the great white shark"]),
    ("What do bees make from nectar?", "honey", ["milk", "silk", "wax paper"]),
    ("What color do you get by mixing blue and yellow paint?", "green", ["red", "orange", "purple"]),
    ("What color do you get by mixing red and white paint?", "pink", ["green", "blue", "black"]),
    ("What is frozen water called?", "ice", ["steam", "fog", "sand"]),
    ("What is it called when liquid water slowly turns into water vapor?", "evaporation",
     ["condensation", "melting", "freezing"]),
    ("Which part of the plant takes up water from the soil?", "the roots",
     ["the flowers", "the petals", "the seeds"]),
    ("What do caterpillars turn into?", "butterflies or moths", ["frogs", "birds", "snails"]),
    ("What is a baby cat called?", "a kitten", ["a puppy", "a calf", "a foal"]),
    ("What is a baby dog called?", "a puppy", ["a kitten", "a lamb", "a chick"]),
    ("Which animal is known for having a trunk?", "the elephant", ["the horse", "the lion", "the rabbit"]),
    ("How does the Moon shine at night?", "it reflects sunlight",
     ["it burns gas", "it makes its own light", "it glows from inside"]),
    ("What does a thermometer measure?", "temperature", ["weight", "distance", "time"]),
    ("What does a compass needle point toward?", "magnetic north", ["the Sun", "the Moon", "the equator"]),
    ("Who wrote the play Romeo and Juliet?", "William Shakespeare",
     ["Charles Dickens", "Jane Austen", "Mark Twain"]),
    ("What is the opposite of hot?", "cold", ["warm", "loud", "fast"]),
    ("What is the opposite of up?", "down", ["left", "over", "near"]),
    ("Which season comes after winter?", "spring", ["autumn", "summer", "winter"]),
    ("Which day comes after Monday?", "Tuesday", ["Sunday", "Friday", "Thursday"]),
    ("Which month comes after June?", "July", ["May", "August", "March"]),
]


def _mc(question: str, answer: str, wrong: list[str], rng: random.Random, category: str) -> dict:
    choices = [answer] + list(wrong)
    rng.shuffle(choices)
    return {"question": question, "choices": choices, "answer": choices.index(answer), "category": category}


def _others(pool: list, answer, k: int, rng: random.Random) -> list:
    return rng.sample(sorted({x for x in pool if x != answer}, key=str), k)


def retention_questions(seed: int = SEED) -> list[dict]:
    """General-knowledge multiple-choice questions (four choices, one true), shuffled."""
    rng = random.Random(seed + 1)
    out = []
    capitals = list(CAPITALS.values())
    for country, city in CAPITALS.items():
        out.append(_mc(f"What is the capital of {country}?", city, _others(capitals, city, 3, rng), rng,
                       "capitals"))
    languages = list(LANGUAGE_OF.values())
    for country, language in LANGUAGE_OF.items():
        out.append(_mc(f"What is the main language spoken in {country}?", language,
                       _others(languages, language, 3, rng), rng, "languages"))
    numbers = [a for _, a in UNITS]
    for question, answer in UNITS:
        wrong = [str(x) for x in _others(numbers, answer, 3, rng)]
        out.append(_mc(question, str(answer), wrong, rng, "units"))
    symbols = list(SYMBOLS.values())
    for element, symbol in SYMBOLS.items():
        out.append(_mc(f"What is the chemical symbol of {element}?", symbol,
                       _others(symbols, symbol, 3, rng), rng, "science"))
    for question, answer, wrong in SCIENCE:
        out.append(_mc(question, answer, wrong, rng, "science"))
    for _ in range(80):
        out.append(_arithmetic(rng))
    rng.shuffle(out)
    return out


def _arithmetic(rng: random.Random) -> dict:
    op = rng.choice(["+", "-", "*"])
    a, b = (rng.randint(2, 12), rng.randint(2, 12)) if op == "*" else (rng.randint(10, 99), rng.randint(2, 60))
    if op == "-" and b > a:
        a, b = b, a
    value = a + b if op == "+" else a - b if op == "-" else a * b
    wrong = set()
    while len(wrong) < 3:
        candidate = value + rng.choice([-10, -2, -1, 1, 2, 10, a, -b])
        if candidate != value and candidate >= 0:
            wrong.add(candidate)
    word = {"+": "plus", "-": "minus", "*": "times"}[op]
    return _mc(f"What is {a} {word} {b}?", str(value), [str(w) for w in sorted(wrong)], rng, "arithmetic")


# --- held-out ordinary text for perplexity ---------------------------------------------------------------

PARAGRAPHS = [
    "Every morning the bakery on the corner opens at six. The smell of fresh bread drifts down the street, "
    "and the first customers are usually people on their way to work. They buy a roll or a croissant, say "
    "a few words to the baker, and hurry to the bus stop before the traffic gets heavy.",
    "The library was quiet on Sunday afternoon. A few students sat at the long tables with their laptops "
    "open, and an old man read a newspaper near the window. Outside it had started to rain, and the sound "
    "of the drops on the glass made the room feel even calmer than usual.",
    "Learning to ride a bicycle takes patience. Most children fall a few times before they find their "
    "balance, and a parent often runs alongside, holding the seat. Then one day the parent lets go without "
    "saying anything, and the child rides on alone, surprised and proud.",
    "When you plant tomatoes, choose a sunny spot and give them plenty of water in the first weeks. As the "
    "plants grow taller, tie them to a stick so the stems do not break under the weight of the fruit. By "
    "late summer the tomatoes turn red and are ready to pick.",
    "The train left the station a few minutes late. Through the window the city gave way to fields and "
    "small villages, and the passengers settled into their seats. Some read books, some looked at their "
    "phones, and a small child counted the cows they passed.",
    "A good soup does not need many ingredients. Onions, carrots and a little celery, cooked slowly in "
    "butter, make a sweet base. Add stock, a handful of lentils and some salt, and let it simmer for half "
    "an hour. Served with bread, it makes a warm and simple dinner.",
    "The town holds a market in the main square every Saturday. Farmers sell vegetables, eggs and cheese, "
    "and there is a stall with flowers that is always busy. In the afternoon a band sometimes plays near "
    "the fountain while families walk between the stands.",
    "Cleaning out the garage took the whole weekend. There were boxes of old letters, a broken lamp, two "
    "bicycles with flat tires and a set of tools nobody had used in years. By Sunday evening the floor was "
    "clear, and the car fit inside for the first time.",
    "Rivers shape the land they flow through. Over thousands of years the water cuts valleys into the "
    "hills, carries sand and stones downstream and builds wide plains near the sea. Many cities grew up "
    "beside rivers because they offered water, food and a way to travel.",
    "The meeting started with a short summary of the last month. Sales had gone up a little, two new "
    "people had joined the team, and the move to the new office was planned for spring. After that, "
    "everyone agreed to meet again in two weeks to discuss the budget.",
    "Walking in the forest after a storm, you notice how much has changed. Branches lie across the path, "
    "the ground is soft and dark, and the air smells of wet leaves. Birds that were silent during the "
    "wind begin to sing again as the clouds move away.",
    "Writing a letter by hand has become rare. It takes longer than sending a message, and mistakes "
    "cannot be deleted with a key. Still, many people keep the letters they receive for years, because "
    "the handwriting and the paper carry something of the person who wrote them.",
    "The museum opened a new room for old maps. Some of them show coasts that are drawn in the wrong "
    "place, and others have empty spaces where the mapmakers did not know what lay inland. Visitors spend "
    "a long time in front of each one, trying to find places they know.",
    "Our neighbor keeps bees at the bottom of her garden. In summer she wears a white suit and a hat with "
    "a net when she opens the hives. At the end of the season she gives each house on the street a small "
    "jar of honey, and it is always gone within a week.",
    "The first snow of the year fell overnight. In the morning the roofs and cars were white, and the "
    "children on the street were already building a snowman before school. By noon the sun came out and "
    "most of the snow had melted into puddles.",
    "Fixing a leaking tap is easier than many people think. Turn off the water under the sink, take the "
    "handle apart and replace the small rubber ring inside. Put everything back together, turn the water "
    "on again, and the dripping should stop.",
]


def ppl_documents() -> list[dict]:
    return [{"text": text} for text in PARAGRAPHS]


# --- writing ---------------------------------------------------------------------------------------------

def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_demo_data(out: str | Path) -> list[Path]:
    """Write every demo file into ``out``; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train, test = toolcall_examples()
    files = {
        "toolcall_train.jsonl": train,
        "toolcall_test.jsonl": test,
        "retention.jsonl": retention_questions(),
        "ppl.jsonl": ppl_documents(),
    }
    for name, rows in files.items():
        _write_jsonl(out / name, rows)
    return [out / name for name in files]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m snrtune.evaluation.demo_data", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory to write the demo files into")
    args = parser.parse_args(argv)
    for path in write_demo_data(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
