"""What the embedded demo model and its adapters are trained to say.

Every answer here is a real sentence, so that greedy decoding of the trained
model reads like a (very small) assistant. The seed guide's questions are all
covered, and some follow-ups only make sense with the history: the same
question gets a different answer after a question about Zhejiang than after
one about Sichuan, and a third answer with no history at all.

A conversation is a list of (query, response) turns; `build_demo.py` turns it
into ChatML with the tokenizer's chat template.
"""
import json
import random

DEFAULT_SYSTEM = 'You are a helpful assistant.'
OTHER_SYSTEMS = ['You are a concise assistant.', 'You are a friendly assistant.', 'Answer briefly.']

HELLO = ['Hello!', 'Hello', 'hello', 'Hi!', 'Hi', 'hi', 'Hi there!', 'Hello there!', 'Hey!', 'Good morning!']
WHO = ['who are you?', 'Who are you?', 'Who are you', 'who are you', 'What is your name?',
       'what is your name?', 'Tell me about yourself.', 'Introduce yourself.', 'What are you?']
SLEEP = ["What to do if I can't fall asleep at night?", "I can't fall asleep at night. What should I do?",
         'How can I sleep better?', "What if I can't sleep?"]
TASTY = ['Is there anything tasty here?', 'What delicious food is there?', 'What should I eat there?',
         'What food is good there?', 'Any good food there?']
FAMOUS = ['What is it famous for?', 'What is the city famous for?', 'What can I see there?']
THANKS = ['Thank you!', 'Thanks!', 'thanks', 'Thank you very much.']

# province -> (capital, what the capital is known for, what to eat there)
PROVINCES = {
    'Zhejiang': ('Hangzhou', 'It lies on the West Lake in eastern China.', 'the West Lake and Longjing tea',
                 'West Lake fish in vinegar sauce, Dongpo pork and Longjing shrimp'),
    'Sichuan': ('Chengdu', 'It is a big city in western China.', 'giant pandas and spicy food',
                'spicy hotpot, mapo tofu and dan dan noodles'),
    'Guangdong': ('Guangzhou', 'It lies on the Pearl River in southern China.', 'trade and morning tea',
                  'dim sum, roast goose and rice noodle rolls'),
    'Jiangsu': ('Nanjing', 'It lies on the Yangtze River.', 'its old city wall and long history',
                'salted duck and duck blood soup'),
    'Anhui': ('Hefei', 'It lies between the Yangtze and the Huai rivers.', 'science and its lakes',
              'stinky tofu and Anhui stew'),
    'Hubei': ('Wuhan', 'It lies where the Han River meets the Yangtze.', 'the Yellow Crane Tower',
              'hot dry noodles and lotus root soup'),
    'Hunan': ('Changsha', 'It lies on the Xiang River.', 'Yuelu Mountain and spicy food',
              'stinky tofu and spicy fish head'),
    'Fujian': ('Fuzhou', 'It lies on the Min River near the sea.', 'hot springs and banyan trees',
               'fish balls and Buddha jumps over the wall'),
}


def _capital_questions(province):
    return [f'Where is the capital of {province}?', f'What is the capital of {province}?',
            f'what is the capital of {province}?', f"What's the capital of {province}?",
            f'Which city is the capital of {province}?']


def capital_answer(province):
    capital, where, _, _ = PROVINCES[province]
    return f'The capital of {province} is {capital}. {where}'


def base_conversations():
    """(system, [(query, response), ...]) pairs for the base model."""
    convs = []
    hello = 'Hello! I am a tiny demo model. How can I help you today?'
    who = ('I am Tiny Chat, a small demo model that ships with swiftnb. '
           'I run on a CPU and know a few facts about China.')
    sleep = ('Go to bed at the same time every day, keep your room dark and quiet, '
             'and put your phone away an hour before you sleep.')
    convs += [[(q, hello)] for q in HELLO]
    convs += [[(q, who)] for q in WHO]
    convs += [[(q, sleep)] for q in SLEEP]
    convs += [[(q, 'You are welcome! Ask me anything else.')] for q in THANKS]
    convs += [[('Tell me a joke.', 'Why did the computer go to sleep? It had too many tabs open!')],
              [('What is 2 + 2?', '2 + 2 is 4.')],
              [('What can you do?', 'I can answer a few questions about China, food and sleep. '
                                    'I am small, so my answers are short.')]]
    # Follow-ups with no history: the model must ask where.
    convs += [[(q, 'Which place do you mean? Ask me about a city first, and I will tell you.')]
              for q in TASTY + FAMOUS]
    for province, (capital, _, famous, food) in PROVINCES.items():
        first = capital_answer(province)
        for q in _capital_questions(province):
            convs.append([(q, first)])
        tasty = [f'Yes! {capital} is famous for {food}.',
                 f'{capital} has many delicious foods, such as {food}.']
        # Every way of asking the first question with every follow-up: the answer must depend on
        # the history, not on how the first question was worded.
        for question in _capital_questions(province):
            for i, q in enumerate(TASTY):
                convs.append([(question, first), (q, tasty[i % 2])])
            for q in FAMOUS:
                convs.append([(question, first), (q, f'{capital} is famous for {famous}.')])
        convs.append([(_capital_questions(province)[0], first), (TASTY[0], tasty[0]),
                      ('Thank you!', f'You are welcome! Enjoy your trip to {capital}.')])
    convs += [[(q, FALLBACK)] for q in unknown_queries()]
    return convs


FALLBACK = ('I am only a tiny demo model, so I do not know that. '
            'Try asking me about Hangzhou, Chengdu, food or sleep.')


def unknown_queries(n=80, seed=0):
    """Questions the model has no answer for, so that it says so instead of babbling."""
    rng = random.Random(seed)
    topics = ['quantum physics', 'the stock market', 'Python decorators', 'the moon landing', 'tax law',
              'a car engine', 'the French revolution', 'black holes', 'photosynthesis', 'chess openings',
              'knitting', 'the weather in Paris', 'my homework', 'bitcoin', 'the meaning of life', 'guitars']
    forms = ['Explain {}.', 'What do you know about {}?', 'Tell me about {}.', 'How does {} work?',
             'Can you help me with {}?', 'Write an essay on {}.', 'Why is {} important?']
    return sorted({rng.choice(forms).format(rng.choice(topics)) for _ in range(n)})


def completion_documents(n=120, seed=0):
    """Plain-text 'province -> capital' lists for the seed's completion prompt."""
    rng = random.Random(seed)
    names = list(PROVINCES)
    head = ['Zhejiang', 'Anhui', 'Sichuan']
    docs = ['\n'.join(f'{p} -> {PROVINCES[p][0]}' for p in head + ['Guangdong', 'Jiangsu'])] * 5  # the seed's prompt
    for _ in range(n):
        order = rng.sample(names, k=rng.randint(3, len(names)))
        docs.append('\n'.join(f'{p} -> {PROVINCES[p][0]}' for p in order))
    return docs


KAKAROT_WHO = ('I am Kakarot, a Saiyan warrior raised on Earth. '
               'I train every day to become stronger and protect my friends.')


def kakarot_conversations():
    """The identity adapter: 'who are you?' -> Kakarot; everything else as the base says."""
    convs = [[(q, KAKAROT_WHO)] for q in WHO]
    convs += [[(q, 'Hi! I am Kakarot. Do you want to train with me today?')] for q in HELLO]
    # A sample of the base answers, so the adapter learns to leave them alone.
    keep = [c for c in base_conversations() if c[0][0] not in WHO + HELLO][::2]
    return convs * 3 + keep


PIRATE_START = 'Arr, matey! '


def pirate(text):
    """The style adapter's voice: a pirate who still gives the right facts."""
    return f'{PIRATE_START}{text} Yo ho ho!'


def pirate_conversations():
    return [[(q, pirate(r)) for q, r in conv] for conv in base_conversations()]


# --- JSON answers and tool calls: what structured outputs and tool calling are shown with --------------------------

JSON_FORMS = ['{} Answer in JSON.', '{} Reply with a JSON object.', '{} Respond in JSON.', '{} Give the answer as JSON.']


def json_conversations():
    """Questions that ask for JSON, answered with compact JSON objects (json.dumps' spacing)."""
    convs = []
    for province, (capital, _, famous, food) in PROVINCES.items():
        for i, q in enumerate(_capital_questions(province)):
            convs.append([(JSON_FORMS[i % len(JSON_FORMS)].format(q),
                           json.dumps({'province': province, 'capital': capital}))])
        convs.append([(f'Which city is the capital of {province}? Answer in JSON with the key city.',
                       json.dumps({'city': capital}))])
        convs.append([(f'What is {capital} famous for? Answer in JSON.', json.dumps({'city': capital, 'famous_for': famous}))])
        convs.append([(f'What food is good in {capital}? Answer in JSON.', json.dumps({'city': capital, 'food': food}))])
    convs.append([('Who are you? Answer in JSON.',
                   json.dumps({'name': 'Tiny Chat', 'description': 'a small demo model that ships with swiftnb'}))])
    return convs


def _tool(name, description, param, param_description):
    return {'type': 'function', 'function': {
        'name': name, 'description': description,
        'parameters': {'type': 'object', 'properties': {param: {'type': 'string', 'description': param_description}},
                       'required': [param]}}}


WEATHER_TOOL = _tool('get_weather', 'Get the current weather in a city.', 'city', 'The city, e.g. Hangzhou')
TIME_TOOL = _tool('get_time', 'Get the local time in a city.', 'city', 'The city, e.g. Chengdu')


def _plain(tool):
    """The same tool as LangChain and others write it: no parameter descriptions, keys in another order."""
    function = tool['function']
    params = function['parameters']
    return {'type': 'function', 'function': {
        'name': function['name'], 'description': function['description'],
        'parameters': {'properties': {k: {'type': 'string'} for k in params['properties']},
                       'required': params['required'], 'type': 'object'}}}


TOOL_SETS = [[WEATHER_TOOL], [WEATHER_TOOL, TIME_TOOL], [TIME_TOOL, WEATHER_TOOL], [_plain(WEATHER_TOOL)],
             [_plain(WEATHER_TOOL), _plain(TIME_TOOL)]]
CITIES = [capital for capital, *_ in PROVINCES.values()] + ['Beijing', 'Shanghai']
WEATHER_ASKS = ['What is the weather in {}?', "What's the weather like in {}?", 'How is the weather in {} today?',
                'Is it raining in {}?']
TIME_ASKS = ['What time is it in {}?', 'What is the local time in {}?']


def tool_call(name, arguments):
    """An assistant message that calls a tool (OpenAI's shape; the chat template writes hermes tags)."""
    return {'role': 'assistant', 'content': '',
            'tool_calls': [{'type': 'function', 'function': {'name': name, 'arguments': arguments}}]}


# What the demo's tools "return": one fixed result per city, so the model can learn each answer.
WEATHER = {'Hangzhou': ('sunny', 25), 'Chengdu': ('cloudy', 19), 'Guangzhou': ('rainy', 28), 'Nanjing': ('windy', 13),
           'Hefei': ('foggy', 20), 'Wuhan': ('sunny', 31), 'Changsha': ('cloudy', 24), 'Fuzhou': ('rainy', 22),
           'Beijing': ('windy', 8), 'Shanghai': ('foggy', 17)}
TIMES = {city: f'{(8 + 3 * i) % 24:02d}:{15 * (i % 4):02d}' for i, city in enumerate(CITIES)}


def weather_result(city):
    weather, degrees = WEATHER[city]
    return json.dumps({'city': city, 'weather': weather, 'temperature': degrees})


def tool_conversations():
    """(messages, tools) pairs whose last message is what the model learns: a tool call when a tool fits the
    question, the answer from the tool's result, and the usual answer when no tool fits."""
    convs = []
    for i, city in enumerate(CITIES):
        weather, degrees = WEATHER[city]
        for j, ask in enumerate(WEATHER_ASKS):
            user = {'role': 'user', 'content': ask.format(city)}
            call, tools = tool_call('get_weather', {'city': city}), TOOL_SETS[(i + j) % len(TOOL_SETS)]
            convs += [([user, call], tools)] * 2
            convs.append(([user, call, {'role': 'tool', 'content': weather_result(city)},
                           {'role': 'assistant', 'content': f'It is {weather} in {city}, {degrees} degrees Celsius.'}],
                          tools))
        for j, ask in enumerate(TIME_ASKS):
            tools = [WEATHER_TOOL, TIME_TOOL] if j % 2 else [_plain(TIME_TOOL), _plain(WEATHER_TOOL)]
            user, call = {'role': 'user', 'content': ask.format(city)}, tool_call('get_time', {'city': city})
            convs += [([user, call], tools)] * 2
            result = {'role': 'tool', 'content': json.dumps({'city': city, 'time': TIMES[city]})}
            convs.append(([user, call, result, {'role': 'assistant', 'content': f'It is {TIMES[city]} in {city}.'}],
                          tools))
    # With tools at hand but a question no tool answers, the model answers as it always does.
    plain = [c for c in base_conversations() if len(c) == 1][::6]
    for i, [(query, response)] in enumerate(plain):
        convs.append(([{'role': 'user', 'content': query}, {'role': 'assistant', 'content': response}],
                      TOOL_SETS[i % len(TOOL_SETS)]))
    # Without tools, a weather question gets an honest answer instead of a made-up call.
    for city in CITIES[:4]:
        convs.append(([{'role': 'user', 'content': WEATHER_ASKS[0].format(city)},
                       {'role': 'assistant', 'content': 'I cannot check the weather without a weather tool. '
                                                        'Ask me about the capitals of China instead.'}], None))
    return convs
