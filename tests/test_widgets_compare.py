"""CompareWidget driven through its methods on both backends: columns equal each variant alone."""
import json
import shutil

import pytest

from conftest import direct_answer, settles
from swiftnb import DEMO_ADAPTERS, DEMO_MODEL_DIR
from swiftnb.widgets import CompareWidget
from swiftnb.widgets.diff import word_diff_html

VARIANTS = [None, 'kakarot', 'pirate']


@pytest.mark.parametrize('settings', [dict(max_tokens=48), dict(max_tokens=48, temperature=0.9, seed=11)],
                         ids=['greedy', 'seeded-sampling'])
def test_each_column_equals_its_variant_alone(adapter_engine, settings):
    compare = CompareWidget(adapter_engine, variants=VARIANTS, **settings)
    answers = compare.send('Who are you?')
    assert list(answers) == [adapter_engine.model_type, 'kakarot', 'pirate']
    config = dict(max_new_tokens=settings['max_tokens'], temperature=settings.get('temperature'),
                  seed=settings.get('seed'))
    for (name, text), variant in zip(answers.items(), VARIANTS):
        assert text == direct_answer(adapter_engine, 'Who are you?', adapter=variant, **config), name
    assert len(set(answers.values())) == 3  # each adapter visibly changes the answer
    for view, answer in zip(compare.views, compare.answers.values()):
        assert view.num_updates >= 1 and answer.finish_reason in ('stop', 'length') and answer.tokens > 0
        assert 'TTFT' in view.footer_html


def test_differences_from_the_first_column_are_marked(adapter_engine):
    compare = CompareWidget(adapter_engine, variants=VARIANTS, max_tokens=48)
    answers = list(compare.send('Who are you?').values())
    first, *others = compare.views
    assert '<mark' not in first.body_html
    for view, text in zip(others, answers[1:]):
        assert view.body_html == word_diff_html(answers[0], text) and '<mark' in view.body_html
    compare.highlight.value = False  # plain Markdown again
    assert all('<mark' not in view.body_html for view in others)


def test_batch_runs_every_prompt_through_every_variant(adapter_engine):
    prompts = ['Who are you?', 'Where is the capital of Zhejiang?']
    compare = CompareWidget(adapter_engine, variants=VARIANTS, prompts=prompts, max_tokens=40)
    results = compare.run_batch()
    assert [(r['prompt'], r['variant']) for r in results] == [
        (p, v) for p in prompts for v in (adapter_engine.model_type, 'kakarot', 'pirate')]
    for row, (prompt, variant) in zip(results, [(p, v) for p in prompts for v in VARIANTS]):
        assert row['response'] == direct_answer(adapter_engine, prompt, adapter=variant, max_new_tokens=40)
        assert row['tokens'] > 0 and row['finish_reason'] in ('stop', 'length') and row['ttft_s'] > 0
    assert compare.results == results and compare.to_dataframe().shape == (6, 7)
    assert all(row['response'].split()[0] in compare.table.value for row in results)


def test_stop_aborts_every_column(adapter_engine):
    compare = CompareWidget(adapter_engine, variants=VARIANTS, max_tokens=2000, ignore_eos=True)
    future = compare.submit('Tell me about China.')
    assert settles(lambda: adapter_engine.num_running >= 1)
    compare.stop()
    future.result(timeout=30)
    assert settles(lambda: adapter_engine.num_running == 0)
    assert [a.finish_reason for a in compare.answers.values()] == ['abort'] * 3


def test_bad_variants_and_prompts_are_clear_errors(adapter_engine):
    with pytest.raises(ValueError, match="unknown variant 'lora-x'; known: .*kakarot, pirate"):
        CompareWidget(adapter_engine, variants=[None, 'lora-x'])
    with pytest.raises(ValueError, match="two columns are named 'kakarot'"):
        CompareWidget(adapter_engine, variants=['kakarot', 'kakarot'])
    with pytest.raises(ValueError, match="a column from another server is \\(name, url\\)"):
        CompareWidget(adapter_engine, variants=[None, ('merged', 'merged-folder')])
    compare = CompareWidget(adapter_engine, variants=VARIANTS)
    with pytest.raises(ValueError, match='no prompts to run'):
        compare.run_batch()
    compare.settings.fields['seed'].value = 'x'
    with pytest.raises(ValueError, match="seed: Input should be a valid integer.*got 'x'"):
        compare.send('Hello')
    assert 'seed: Input should be a valid integer' in compare.status.value
    compare.settings.fields['seed'].value = '3'
    assert len(compare.send('Hello', timeout=60)) == 3 and compare.status.value == ''


def test_a_run_sweep_shows_each_checkpoint_beside_the_base(adapter_engine, tmp_path):
    """A fine-tuning run's folder (ms-swift's and Trainer's layout: checkpoint-<step>, here copies of the demo
    adapters, and a merged checkpoint that is no adapter): every checkpoint loaded on the live engine and compared
    with the base; one written later appears on refresh()."""
    run = tmp_path / 'v0-20261201-120000'
    for step, adapter in ((20, 'pirate'), (10, 'kakarot')):
        shutil.copytree(DEMO_ADAPTERS[adapter], run / f'checkpoint-{step}')
    shutil.copytree(DEMO_MODEL_DIR, run / 'checkpoint-20-merged')
    try:
        sweep = CompareWidget.from_run(adapter_engine, run, max_tokens=48)
        assert sweep.variants == [adapter_engine.model_type, 'checkpoint-10', 'checkpoint-20']
        answers = sweep.send('Who are you?')
        for name, variant in zip(answers, VARIANTS):
            assert answers[name] == direct_answer(adapter_engine, 'Who are you?', adapter=variant, max_new_tokens=48)
        shutil.copytree(DEMO_ADAPTERS['pirate'], run / 'checkpoint-30')
        assert sweep.refresh() == ['checkpoint-30'] and sweep.refresh() == []
        assert [view.box for view in sweep.views] == list(sweep.columns.children) and len(sweep.views) == 4
        assert list(sweep.send('Who are you?').values())[3] == answers['checkpoint-20']  # the same adapter again
        chosen = CompareWidget.from_run(adapter_engine, run, checkpoints=[30, 'checkpoint-10'], base=False)
        assert chosen.variants == ['checkpoint-10', 'checkpoint-30']  # in step order, loaded once
        with pytest.raises(ValueError, match=r"checkpoint-40 not in '.*'; it has checkpoint-10, checkpoint-20, "
                                             r'checkpoint-30'):
            CompareWidget.from_run(adapter_engine, run, checkpoints=[40])
        with pytest.raises(ValueError, match=r"no LoRA checkpoints in '.*' \(checkpoint-\*/adapter_config.json\)"):
            CompareWidget.from_run(adapter_engine, tmp_path)
    finally:
        for name in [name for name in adapter_engine.adapters if name.startswith('checkpoint-')]:
            adapter_engine.remove_lora(name)


def test_a_batch_from_a_dataset_file_is_scored_against_its_references(adapter_engine, tmp_path):
    """Prompts from a .jsonl in the seed's dataset format: rows with a 'response' get each answer scored (exact
    match, or the function given), history and system go with the prompt, and the table shows means per variant."""
    who = direct_answer(adapter_engine, 'Who are you?', adapter='kakarot', max_new_tokens=40)
    history = [['Where is the capital of Zhejiang?', 'Hangzhou.']]
    dataset = tmp_path / 'val.jsonl'
    dataset.write_text('\n'.join(json.dumps(row) for row in [
        {'query': 'Who are you?', 'response': who},
        {'query': 'Is there anything tasty here?', 'history': history}]) + '\n')
    compare = CompareWidget(adapter_engine, variants=VARIANTS, prompts=dataset, max_tokens=40)
    results = compare.run_batch()
    scores = {row['variant']: row['score'] for row in results if row['prompt'] == 'Who are you?'}
    assert scores == {adapter_engine.model_type: 0.0, 'kakarot': 1.0, 'pirate': 0.0}
    tasty = [row for row in results if row['prompt'] == 'Is there anything tasty here?']
    assert all('score' not in row for row in tasty)
    assert tasty[0]['response'] == direct_answer(adapter_engine, 'Is there anything tasty here?', history=history,
                                                 max_new_tokens=40)
    assert 'mean score' in compare.table.value and '<b>1.00</b> of 1' in compare.table.value
    assert 'first after' in compare.table.value
    lengths = CompareWidget(adapter_engine, variants=VARIANTS, score=lambda answer, ref: len(answer) / len(ref),
                            max_tokens=40).run_batch([{'query': 'Who are you?', 'response': who}])
    assert lengths[1]['score'] == 1.0 and lengths[0]['score'] == len(lengths[0]['response']) / len(who)
    with pytest.raises(ValueError, match=r"prompts\[0\]: needs a 'query' string"):
        CompareWidget(adapter_engine, variants=VARIANTS, prompts=[{'question': 'Who are you?'}])


def test_one_grid_of_an_adapter_its_merged_model_and_another_server(engine, pt_engine, tmp_path):
    """"adapter on vLLM vs merged vs peft" as one grid: the kernel's vLLM engine serves kakarot; the adapter merged
    into tiny-chat is served by a second (pt) engine, and kakarot on the pt backend by a third, each at a URL."""
    from swiftnb import BackgroundServer
    from swiftnb.engine.options import PtOptions
    from swiftnb.engine.pt import PtEngine
    from swiftnb.export import merge_lora
    merged_dir = merge_lora(str(DEMO_ADAPTERS['kakarot']), str(tmp_path / 'merged'), base_dir=str(DEMO_MODEL_DIR))
    merged = PtEngine('tiny-chat', str(merged_dir), PtOptions())
    peft = PtEngine('tiny-chat', pt_engine.model_dir, PtOptions(enable_lora=True))
    servers = [BackgroundServer(merged, port=0),  # two at once: serve() keeps one per kernel
               BackgroundServer(peft, port=0, lora_modules={'kakarot': str(DEMO_ADAPTERS['kakarot'])})]
    try:
        engine.add_lora('kakarot-grid', str(DEMO_ADAPTERS['kakarot']))
        grid = CompareWidget(engine, variants=['kakarot-grid', ('merged', servers[0].url),
                                               ('adapter on peft', servers[1].url, 'kakarot')],
                             prompts=['who are you?', 'Hello!'], max_tokens=24)
        assert grid.variants == ['kakarot-grid', 'merged', 'adapter on peft']
        answers = grid.send('who are you?', timeout=120)
        assert list(answers) == grid.variants
        assert answers['kakarot-grid'] == direct_answer(engine, 'who are you?', adapter='kakarot-grid',
                                                        max_new_tokens=24)
        assert answers['merged'] == direct_answer(merged, 'who are you?', max_new_tokens=24)
        assert answers['adapter on peft'] == direct_answer(peft, 'who are you?', adapter='kakarot', max_new_tokens=24)
        assert all(answer.startswith('I am Kakarot') for answer in answers.values())
        results = grid.run_batch(timeout=120)
        assert [r['variant'] for r in results] == grid.variants * 2
        with pytest.raises(ValueError, match="serves no model 'pirate'; it serves tiny-chat, kakarot"):
            CompareWidget(engine, variants=[('peft pirate', servers[1].url, 'pirate')])
    finally:
        engine.remove_lora('kakarot-grid')
        for server, other in zip(servers, (merged, peft)):
            server.stop()
            other.shutdown()
