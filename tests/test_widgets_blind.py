"""BlindCompare driven through its methods (what its buttons call): names hidden and order drawn per prompt,
votes written as ms-swift preference rows (DPO and KTO) that read back as such, win rates with Wilson intervals."""
import json

import pytest

from conftest import direct_answer
from swiftnb.widgets import BlindCompare
from swiftnb.widgets.blind import wilson

PROMPTS = ['Who are you?', 'Where is the capital of Zhejiang?', 'Hello!']


@pytest.fixture
def blind(adapter_engine, tmp_path):
    return BlindCompare(adapter_engine, variants=[None, 'kakarot', 'pirate'], votes_file=tmp_path / 'votes.jsonl',
                        prompts=PROMPTS, seed=3, max_tokens=32)


def shown(blind, letter: str) -> str:
    """The variant behind a letter (what the voter does not see)."""
    return list(blind.answers)['ABC'.index(letter)]


def test_votes_become_dpo_rows_and_win_rates(blind, adapter_engine):
    orders, beaten = [], 0
    for choice in ('A', 'B', 'tie'):
        answers = blind.send_next(timeout=120)
        orders.append(list(answers))
        if choice != 'tie':
            beaten += sum(text != answers[shown(blind, choice)] for text in answers.values())
        assert [view.title.value for view in blind.views] == ['<b>A</b>', '<b>B</b>', '<b>C</b>']
        for variant, text in answers.items():  # each column is still its variant's own answer
            adapter = None if variant == adapter_engine.model_type else variant
            assert text == direct_answer(adapter_engine, blind.prompt_sent, adapter=adapter, max_new_tokens=32)
        winner = shown(blind, choice) if choice != 'tie' else None
        blind.vote(choice)
        if winner:
            assert blind.votes[-1]['choice'] == winner
    assert len({tuple(order) for order in orders}) > 1  # the order is drawn anew
    rows = [json.loads(line) for line in blind.votes_file.read_text().splitlines()]
    assert len(rows) == beaten >= 2  # a DPO row for each answer the chosen one beat, none for the tie
    for row in rows:
        assert set(row) == {'messages', 'rejected_response'}
        assert [m['role'] for m in row['messages']] == ['user', 'assistant']
        assert row['messages'][1]['content'] != row['rejected_response']
    first = blind.votes[0]
    assert rows[0]['messages'][0]['content'] == PROMPTS[0]
    rates = blind.win_rates()
    assert sum(n for _, n, _, _ in rates.values()) == 9 and sum(w for w, _, _, _ in rates.values()) == 3.0
    assert rates[first['choice']][0] >= 1
    blind.reveal()
    assert 'kakarot' in blind.table.value and '95% interval' in blind.table.value
    assert 'kakarot' not in blind.shows()
    with pytest.raises(ValueError, match='every prompt has been sent'):
        blind.send_next()


def test_kto_labels_and_wrong_votes(adapter_engine, tmp_path):
    blind = BlindCompare(adapter_engine, variants=[None, 'kakarot'], votes_file=tmp_path / 'kto.jsonl',
                         format='kto', system='You are a helpful assistant.', max_tokens=16)
    with pytest.raises(ValueError, match='vote once every answer of the prompt has finished'):
        blind.vote('A')
    blind.send('Who are you?', timeout=120)
    with pytest.raises(ValueError, match="a vote is one of A, B, 'tie' or 'bad'; got 'C'"):
        blind.vote('C')
    blind.vote('bad')
    rows = [json.loads(line) for line in blind.votes_file.read_text().splitlines()]
    assert [row['label'] for row in rows] == [False, False]
    assert [m['role'] for m in rows[0]['messages']] == ['system', 'user', 'assistant']
    with pytest.raises(ValueError, match="format must be 'dpo' or 'kto'"):
        BlindCompare(adapter_engine, variants=[None, 'kakarot'], format='orpo')


def test_wilson_intervals():
    assert wilson(0, 0) == (0.0, 1.0)
    low, high = wilson(8, 10)
    assert round(low, 3) == 0.490 and round(high, 3) == 0.943  # the textbook figures for 8 of 10
