"""ChatWidget driven through its methods on both backends and through the HTTP server."""
import html
import time

import pytest

from conftest import direct_answer, settles
from swiftnb import UsageError, serve
from swiftnb.widgets import ChatWidget
from swiftnb.redraw import PER_SECOND
from swiftnb.widgets.markdown import render_markdown


def test_two_turns_equal_the_engine_and_keep_the_seed_history(adapter_engine):
    chat = ChatWidget(adapter_engine, system='You are a helpful assistant.', max_tokens=64)
    first = chat.send('Who are you?')
    second = chat.send('What can you do?')
    assert first == direct_answer(adapter_engine, 'Who are you?', system='You are a helpful assistant.',
                                  max_new_tokens=64)
    assert second == direct_answer(adapter_engine, 'What can you do?', [['Who are you?', first]],
                                   system='You are a helpful assistant.', max_new_tokens=64)
    assert chat.history == [['Who are you?', first], ['What can you do?', second]]
    assert [m['role'] for m in chat.messages] == ['system', 'user', 'assistant', 'user', 'assistant']
    assert chat.last_view.body_html == render_markdown(second)  # the final redraw shows the whole answer
    assert len(chat.transcript.children) == 2
    assert chat.last_answer.finish_reason == 'stop' and chat.last_answer.tokens > 0
    assert 'tokens/s' in chat.last_view.footer_html and 'TTFT' in chat.last_view.footer_html


def test_an_adapter_and_seeded_sampling_equal_the_engine(adapter_engine):
    chat = ChatWidget(adapter_engine, model='pirate', temperature=0.9, seed=7, max_tokens=48)
    assert chat.send('Who are you?') == direct_answer(adapter_engine, 'Who are you?', adapter='pirate',
                                                      temperature=0.9, seed=7, max_new_tokens=48)
    assert chat.model_select.options == (adapter_engine.model_type, 'kakarot', 'pirate')


def test_a_long_answer_redraws_a_bounded_number_of_times(adapter_engine):
    chat = ChatWidget(adapter_engine, max_tokens=400, ignore_eos=True)
    start = time.perf_counter()
    text = chat.send('Tell me about China.')
    seconds = time.perf_counter() - start
    assert text == direct_answer(adapter_engine, 'Tell me about China.', max_new_tokens=400, ignore_eos=True)
    assert chat.last_answer.tokens == 400 and chat.last_answer.finish_reason == 'length'
    updates = chat.last_view.num_updates
    assert updates <= seconds * PER_SECOND + 2, (updates, seconds)  # at most PER_SECOND redraws a second
    assert updates < 400  # and so, with tokens coming faster than that, not one redraw per token
    print(f'{adapter_engine.backend}: 400 tokens in {seconds:.2f} s, {updates} redraws')


def test_submit_returns_at_once_and_stop_aborts_in_the_engine(adapter_engine):
    chat = ChatWidget(adapter_engine, max_tokens=2000, ignore_eos=True)
    future = chat.submit('Tell me about China.')
    assert not future.done() and chat.streaming  # the caller (a cell) goes on while it streams
    assert settles(lambda: adapter_engine.num_running == 1)
    assert chat.stop_button.disabled is False and chat.send_button.disabled is True
    with pytest.raises(UsageError, match='still streaming'):
        chat.send('Another question')
    assert len(chat.transcript.children) == 1  # the refused message added no turn
    assert settles(lambda: chat.last_answer.tokens > 0)  # Stop pressed on an answer under way, not before it
    chat.stop()
    partial = future.result(timeout=30)
    assert settles(lambda: adapter_engine.num_running == 0)
    assert chat.last_answer.finish_reason == 'abort' and 0 < chat.last_answer.tokens < 2000
    assert chat.history == [['Tell me about China.', partial]]  # what was shown stays in the conversation
    assert chat.send_button.disabled is False


@pytest.mark.parametrize('field, value, message', [
    ('temperature', 'hot', "temperature: Input should be a valid number, unable to parse string as a number (got 'hot')"),
    ('temperature', '-1', "temperature: Input should be greater than or equal to 0 (got '-1')"),
    ('max_tokens', '0', "max_tokens: Input should be greater than or equal to 1 (got '0')"),
])
def test_a_bad_setting_is_shown_and_the_widget_keeps_working(adapter_engine, field, value, message):
    chat = ChatWidget(adapter_engine, max_tokens=32)
    chat.send('Hello')
    original, chat.settings.fields[field].value = chat.settings.fields[field].value, value
    chat.prompt.value = 'Who are you?'
    chat._from_ui(chat.submit, chat.prompt.value)  # as the Send button does
    assert message in html.unescape(chat.status.value)
    assert chat.prompt.value == 'Who are you?' and len(chat.history) == 1  # nothing the user gave is lost
    with pytest.raises(ValueError):  # from code: raised as well as shown
        chat.send('Who are you?')
    chat.settings.fields[field].value = original
    assert chat.send('Who are you?') == direct_answer(adapter_engine, 'Who are you?', [chat.history[0]],
                                                      max_new_tokens=32)
    assert chat.status.value == '' and len(chat.history) == 2


def test_unknown_model_and_empty_message_are_clear_errors(adapter_engine):
    with pytest.raises(ValueError, match="no model or adapter named 'nope'; known: .*kakarot, pirate"):
        ChatWidget(adapter_engine, model='nope')
    chat = ChatWidget(adapter_engine)
    with pytest.raises(ValueError, match='the message is empty'):
        chat.send('  ')
    with pytest.raises(UsageError, match='unknown generation setting.*tempreature'):
        ChatWidget(adapter_engine, tempreature=0.5)


def test_clear_forgets_and_rereads_the_adapters(adapter_engine):
    chat = ChatWidget(adapter_engine, max_tokens=16)
    chat.send('Hello')
    adapter_engine.add_lora('late', str(adapter_engine.adapters['kakarot'].lora_path))
    try:
        chat.clear()
        assert chat.history == [] and chat.transcript.children == ()
        assert 'late' in chat.model_select.options
    finally:
        adapter_engine.remove_lora('late')


def test_the_same_widget_on_a_url_gives_the_same_answers(adapter_engine):
    server = serve(adapter_engine, port=0)
    try:
        chat = ChatWidget(server.url, model='kakarot', max_tokens=64)
        assert chat.model_select.options == (adapter_engine.model_type, 'kakarot', 'pirate')
        answer = chat.send('Who are you?')
        assert answer == direct_answer(adapter_engine, 'Who are you?', adapter='kakarot', max_new_tokens=64)
        assert chat.last_answer.tokens == len(adapter_engine.hf_tokenizer(answer)['input_ids']) + 1  # + EOS
        second = chat.send('What do you eat?')
        assert second == direct_answer(adapter_engine, 'What do you eat?', [['Who are you?', answer]],
                                       adapter='kakarot', max_new_tokens=64)
        chat.settings.fields['temperature'].value = '-2'
        with pytest.raises(ValueError, match='temperature'):
            chat.send('Hello')
    finally:
        server.stop()


def test_cells_run_while_an_answer_streams_in_a_real_kernel():
    import nbformat
    from nbclient import NotebookClient
    cells = ["from swiftnb import get_pt_engine\nfrom swiftnb.widgets import ChatWidget\n"
             "chat = ChatWidget(get_pt_engine(), max_tokens=2000, ignore_eos=True)\nchat",
             "future = chat.submit('Tell me about China.')",
             "print('this cell ran while the answer streamed:', chat.streaming, not future.done())",
             "chat.stop(wait=True)\nprint(chat.last_answer.finish_reason)"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=300, kernel_name='python3').execute()
    assert nb.cells[2].outputs[0]['text'] == 'this cell ran while the answer streamed: True True\n'
    assert nb.cells[3].outputs[0]['text'].startswith('abort')
    # stored as JupyterLab saves it: the widget's state in the notebook's metadata, and a readable fallback
    # (text and HTML) where the widget cannot run: an untrusted notebook, GitHub
    shown, snapshot = [o['data'] for o in nb.cells[0].outputs if o['output_type'] == 'display_data'][-2:]
    assert shown['text/plain'].startswith('ChatWidget: a chat with tiny-chat') and 'ChatWidget' in shown['text/html']
    model_id = shown['application/vnd.jupyter.widget-view+json']['model_id']
    assert model_id in nb.metadata['widgets']['application/vnd.jupyter.widget-state+json']['state']
    # and below it the widget as it was at the end, refreshed when the answer ended (the user's turn, the stopped
    # answer and its figures): what GitHub shows
    assert set(snapshot) == {'text/html'} and snapshot['text/html'].startswith('<div class="swiftnb-static">')
    assert 'ChatWidget as it was when the notebook was saved' in snapshot['text/html']
    assert 'Tell me about China.' in snapshot['text/html'] and '· abort' in snapshot['text/html']
