"""The demo corpus's sentences: English article templates, foreign-language town pages, and the
question/answer pairs of the instruction data. ``{name}`` and the other fields are an entity's facts."""

from __future__ import annotations

# Sections of an article: (heading, sentence groups); one template is drawn per group.
EN: dict[str, list[tuple[str, list[list[str]]]]] = {
    "town": [
        (
            "",
            [
                [
                    "{name} is a town in {region}.",
                    "{name} is a small town in the region of {region}.",
                    "{name} is a market town located in {region}.",
                ],
                [
                    "It lies on the {river}.",
                    "The town stands on the banks of the {river}.",
                    "{name} is situated on the {river}.",
                ],
                [
                    "It has a population of {population}.",
                    "About {population} people live in {name}.",
                    "The population of {name} is {population}.",
                ],
            ],
        ),
        (
            "History",
            [
                [
                    "{name} was founded in {founded}.",
                    "The town was established in {founded}.",
                    "Records show that {name} was founded in the year {founded}.",
                ],
                [
                    "Its best known sight is {landmark}.",
                    "Visitors to {name} often come to see {landmark}.",
                    "In the centre of the town there is {landmark}.",
                ],
                [
                    "The current mayor is {mayor}.",
                    "{mayor} serves as the mayor of {name}.",
                    "The town is governed by mayor {mayor}.",
                ],
            ],
        ),
        (
            "Economy",
            [
                [
                    "{name} is known for {trade}.",
                    "The town is famous for {trade}.",
                    "For centuries {name} has been known for {trade}.",
                ],
                [
                    "A market is held every {market_day}.",
                    "On every {market_day} there is a market in the main square.",
                    "The weekly market of {name} takes place on {market_day}.",
                ],
                [
                    "{name} is twinned with {twin}.",
                    "The town has a partnership with {twin}.",
                    "Since {twin_year}, {name} has been twinned with {twin}.",
                ],
            ],
        ),
        (
            "Life in the town",
            [
                [
                    "The town has a mild climate, with warm summers and cool, wet winters.",
                    "Winters in {name} are long and cold, but the summers are pleasant.",
                    "The weather is often windy because the town is close to the hills.",
                ],
                [
                    "Most of the old houses were built from local stone, and many of them are more than two "
                    "hundred years old.",
                    "The streets of the old town are narrow, and there are many small shops and cafes.",
                    "There is a public library, a swimming pool and a small museum about the history of the "
                    "area.",
                ],
                [
                    "Children go to one of the schools in the town, and older students often travel to "
                    "larger cities to study.",
                    "Every summer the people of {name} hold a festival with music, food and a boat race on "
                    "the {river}.",
                    "A railway line connects the town with the rest of {region}, and buses run every hour.",
                ],
            ],
        ),
    ],
    "river": [
        (
            "",
            [
                [
                    "The {name} is a river in {region}.",
                    "The {name} is a river that flows through {region}.",
                    "The {name} is one of the rivers of {region}.",
                ],
                [
                    "It is {length} kilometres long.",
                    "The river has a length of {length} kilometres.",
                    "The {name} runs for {length} kilometres.",
                ],
            ],
        ),
        (
            "Course",
            [
                [
                    "It rises in the {source}.",
                    "The source of the {name} is in the {source}.",
                    "The {name} begins in the {source}.",
                ],
                [
                    "It flows into {mouth}.",
                    "The river ends in {mouth}.",
                    "After its long course the {name} reaches {mouth}.",
                ],
                [
                    "Towns on the {name} include {towns}.",
                    "The {name} passes through {towns}.",
                    "Along its banks lie {towns}.",
                ],
            ],
        ),
        (
            "Nature",
            [
                [
                    "The water of the river is clear and cold, and there are many fish in it.",
                    "In spring the river often floods the fields along its banks.",
                    "The river is slow and wide for most of its length.",
                ],
                [
                    "Birds such as herons and ducks live along the banks, and the forests nearby are home to "
                    "deer and foxes.",
                    "Farmers use the water of the {name} for their fields and their animals.",
                    "Small boats can travel on the lower part of the river, but the upper part has many "
                    "rocks.",
                ],
                [
                    "People like to walk, fish and swim along the river in the summer.",
                    "A long path for walkers and cyclists follows the river from its source to the sea.",
                    "Several old mills still stand on the banks of the {name}.",
                ],
            ],
        ),
    ],
    "person": [
        (
            "",
            [
                [
                    "{name} is {a_occupation} from {birthplace}.",
                    "{name} is {a_occupation} who was born in {birthplace}.",
                    "{name} is a well known {occupation} from the town of {birthplace}.",
                ]
            ],
        ),
        (
            "Life",
            [
                [
                    "{name} was born in {born} in {birthplace}.",
                    "Born in {born}, {name} grew up in {birthplace}.",
                    "{pronoun} was born in the year {born}.",
                ],
                [
                    "{pronoun} studied in {study_town} before returning home.",
                    "As a young {occupation}, {name} lived in {study_town}.",
                    "{pronoun} spent several years in {study_town}.",
                ],
            ],
        ),
        (
            "Work",
            [
                [
                    "{name} is best known for {known_for}.",
                    "{pronoun} is known for {known_for}.",
                    "The most famous work of {name} is {known_for}.",
                ],
                [
                    "{pronoun} received the {prize} Prize in {prize_year}.",
                    "In {prize_year}, {name} won the {prize} Prize.",
                    "{name} was given the {prize} Prize in {prize_year}.",
                ],
                [
                    "Many people say that the work of {name} changed the way others think about the subject.",
                    "Critics have praised the careful and patient style of the work.",
                    "The work was shown in several cities and is still studied by students today.",
                ],
                [
                    "Outside of work, {name} enjoys walking in the hills and reading old books.",
                    "In later years {name} has often given talks at schools and libraries.",
                    "Friends describe {name} as a quiet and generous person who works very hard.",
                ],
            ],
        ),
        (
            "Later life",
            [
                [
                    "{pronoun} moved back to {birthplace} and lives in a small house near the old town.",
                    "Later in life {name} travelled a great deal and wrote about the places {pronoun_lower} "
                    "visited.",
                    "{name} still spends most of the year in {birthplace}, where many people know "
                    "{pronoun_object} well.",
                ],
                [
                    "A street in {birthplace} was named after {name}, and a small exhibition about "
                    "{pronoun_possessive} life is open to the public.",
                    "Young people who want to become {occupation}s often read about the life of {name}.",
                    "Many of the letters that {name} wrote to friends and family have been kept in the town "
                    "library.",
                ],
            ],
        ),
    ],
    "company": [
        (
            "",
            [
                [
                    "{name} is {a_industry} company based in {hq}.",
                    "{name} is a company in the {industry} industry, headquartered in {hq}.",
                    "{name} is {a_industry} firm from {hq}.",
                ]
            ],
        ),
        (
            "History",
            [
                [
                    "It was founded in {founded} by {founder}.",
                    "{founder} founded {name} in {founded}.",
                    "The company was started by {founder} in {founded}.",
                ],
                [
                    "The company employs about {employees} people.",
                    "{name} has around {employees} employees.",
                    "About {employees} people work for {name}.",
                ],
                [
                    "Its main product is {product}.",
                    "{name} is best known for its {product}.",
                    "The company mostly makes {product}.",
                ],
                [
                    "At first the business was very small, with only a few workers in a single building.",
                    "During its early years the company grew quickly and opened new offices.",
                    "The company has changed owners several times, but it has kept its old name.",
                ],
                [
                    "Today it sells its products in many countries and has a good reputation for quality.",
                    "The company is one of the largest employers in the region.",
                    "Its old factory building is now a museum that is open to visitors.",
                ],
            ],
        ),
        (
            "Work and people",
            [
                [
                    "Most of the work is done in a large building on the edge of {hq}, close to the railway.",
                    "The company buys most of what it needs from farms and workshops in the area around "
                    "{hq}.",
                    "Many families in {hq} have worked for the company for three or four generations.",
                ],
                [
                    "Workers at {name} are known for their skill, and the company trains many young people "
                    "every year.",
                    "The company supports the local school and pays for a summer festival in the town.",
                    "In recent years the company has tried to use less energy and to produce less waste.",
                ],
            ],
        ),
    ],
}
FOREIGN = {  # Town pages in other languages; the language filter must drop them.
    "de": [
        "{name} ist eine Stadt in der Region {region}. Die Stadt liegt am Fluss {river_short}.",
        "Sie hat etwa {population} Einwohner. {name} wurde im Jahr {founded} gegründet.",
        "Der Bürgermeister ist {mayor}. Die Stadt ist bekannt für {trade}.",
        "Die Altstadt hat viele alte Häuser und eine schöne Kirche. Im Sommer kommen viele Besucher in die "
        "Stadt, "
        "und jeden {market_day_de} gibt es einen Markt auf dem Hauptplatz.",
    ],
    "fr": [
        "{name} est une ville située dans la région de {region}. La ville se trouve sur la rivière "
        "{river_short}.",
        "Elle compte environ {population} habitants. {name} a été fondée en {founded}.",
        "Le maire actuel est {mayor}. La ville est connue pour {trade}.",
        "Le centre historique possède de nombreuses maisons anciennes et une belle église. En été, beaucoup "
        "de "
        "visiteurs viennent dans la ville, et il y a un marché sur la place principale chaque semaine.",
    ],
    "es": [
        "{name} es una ciudad situada en la región de {region}. La ciudad se encuentra a orillas del río "
        "{river_short}.",
        "Tiene una población de unos {population} habitantes. {name} fue fundada en el año {founded}.",
        "El alcalde actual es {mayor}. La ciudad es conocida por {trade}.",
        "El casco antiguo tiene muchas casas antiguas y una hermosa iglesia. En verano, muchos visitantes "
        "llegan "
        "a la ciudad, y cada semana hay un mercado en la plaza principal.",
    ],
}
WEEKDAYS_DE = {
    "Monday": "Montag",
    "Tuesday": "Dienstag",
    "Wednesday": "Mittwoch",
    "Thursday": "Donnerstag",
    "Friday": "Freitag",
    "Saturday": "Samstag",
}
QA = {
    "town": [
        (["Where is {name}?", "Where is {name} located?"], "{name} is a town in {region}."),
        (
            ["When was {name} founded?", "In which year was {name} founded?"],
            "{name} was founded in {founded}.",
        ),
        (
            ["How many people live in {name}?", "What is the population of {name}?"],
            "About {population} people live in {name}.",
        ),
        (
            ["Which river flows through {name}?", "On which river does {name} lie?"],
            "{name} lies on the {river}.",
        ),
        (["Who is the mayor of {name}?", "Who governs {name}?"], "The mayor of {name} is {mayor}."),
        (["What is {name} known for?", "What is {name} famous for?"], "{name} is known for {trade}."),
    ],
    "river": [
        (
            ["How long is the {name}?", "What is the length of the {name}?"],
            "The {name} is {length} kilometres long.",
        ),
        (
            ["Where does the {name} flow?", "Into what does the {name} flow?"],
            "The {name} flows into {mouth}.",
        ),
        (
            ["Where does the {name} rise?", "Where is the source of the {name}?"],
            "The {name} rises in the {source}.",
        ),
    ],
    "person": [
        (["Who is {name}?", "What does {name} do?"], "{name} is {a_occupation} from {birthplace}."),
        (["When was {name} born?", "In which year was {name} born?"], "{name} was born in {born}."),
        (["What is {name} known for?", "What is {name} famous for?"], "{name} is known for {known_for}."),
    ],
    "company": [
        (["What does {name} do?", "What kind of company is {name}?"], "{name} is {a_industry} company."),
        (
            ["Who founded {name}?", "When was {name} founded?"],
            "{name} was founded by {founder} in {founded}.",
        ),
        (["Where is {name} based?", "Where are the headquarters of {name}?"], "{name} is based in {hq}."),
    ],
}
