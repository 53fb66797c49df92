"""The widgets in JupyterLab, in a real browser: Debian's chromium driven by Playwright.

JupyterLab runs headless on a free port; a notebook makes a pt engine with the demo adapters and
shows the chat, the comparison, the blind comparison and a divergence view. The test types into them as a
user does and waits for the streamed answers in the DOM, which must equal what the engine answers alone; it
votes in the blind one with a button and with a key, and reads the rows from the votes file. Screenshots go to
the test's directory (and to $SWIFTNB_SCREENSHOTS, which `make screenshots` sets to docs/, for the README).
"""
import json
import os
import shutil

import nbformat
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from browser import chromium_page, free_port, text_without_deletions, web_server
from conftest import direct_answer

CELLS = [
    "from swiftnb import DEMO_ADAPTERS, get_pt_engine\n"
    "from swiftnb.widgets import ChatWidget, CompareWidget\n"
    "engine = get_pt_engine(enable_lora=True)\n"
    "for name, path in DEMO_ADAPTERS.items():\n"
    "    if name not in engine.adapters:  # the test may run all cells twice (widget_shown)\n"
    "        engine.add_lora(name, str(path))",
    "chat = ChatWidget(engine, max_tokens=64)\nchat",
    "compare = CompareWidget(engine, variants=[None, 'kakarot', 'pirate'], max_tokens=48)\ncompare",
    "from swiftnb.widgets import BlindCompare\n"
    "blind = BlindCompare(engine, variants=[None, 'kakarot', 'pirate'], votes_file='votes.jsonl', max_tokens=32,\n"
    "                     seed=1)\nblind",
    "from swiftnb import divergence\ndivergence(engine, 'who are you?', 'kakarot', max_tokens=24)",
]


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp('lab')
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    notebook.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    nbformat.write(notebook, root / 'widgets.ipynb')
    settings = root / '.settings' / '@jupyterlab' / 'apputils-extension'
    settings.mkdir(parents=True)  # no "get notified about Jupyter news?" toast over the screenshots
    (settings / 'notification.jupyterlab-settings').write_text('{"fetchNews": "false"}')
    tracker = root / '.settings' / '@jupyterlab' / 'notebook-extension'
    tracker.mkdir(parents=True)  # the notebook's kernel starts without a "Select Kernel" dialog
    (tracker / 'tracker.jupyterlab-settings').write_text('{"autoStartDefaultKernel": true}')
    port, token = free_port(), 'swiftnb-test'
    env = {'JUPYTER_CONFIG_DIR': str(root / '.config'), 'JUPYTERLAB_SETTINGS_DIR': str(root / '.settings'),
           'JUPYTERLAB_WORKSPACES_DIR': str(root / '.workspaces'), 'JUPYTER_RUNTIME_DIR': str(root / '.runtime')}
    args = ['jupyterlab', '--no-browser', '--allow-root', f'--port={port}', '--ServerApp.ip=127.0.0.1',
            f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root}',
            '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate', '--LabApp.news_url=']
    with web_server(args, f'http://127.0.0.1:{port}/api/status?token={token}', root / 'lab.log', env):
        yield f'http://127.0.0.1:{port}/lab/tree/widgets.ipynb?token={token}', root


def run_all_cells(page, tries: int = 3):
    """Lab's menu Run > Run All Cells, again if a click landed before the notebook was ready for it
    (seen once in CI: the kernel was idle, the click ran nothing)."""
    started = ("() => [...document.querySelectorAll('.jp-InputArea-prompt')]"
               ".some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))")  # a prompt shows [*] or [1]
    for attempt in range(tries):
        dismiss_dialogs(page)
        page.get_by_role('menuitem', name='Run', exact=True).click()
        page.get_by_role('menuitem', name='Run All Cells', exact=True).click()
        try:
            page.wait_for_function(started, timeout=20_000)
            return
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise


def dismiss_dialogs(page) -> None:
    """A JupyterLab dialog in front of the menu (seen in CI under load: a modal intercepted the next click) is named
    in the test's output and answered with its buttons: "Select Kernel" (seen once in CI, where Escape left it open)
    with the notebook's Python 3, any other with its cancel button, so that the widgets' test goes on."""
    for dialog in page.locator('.jp-Dialog').all():
        if dialog.is_visible():
            text = dialog.inner_text()
            print('JupyterLab dialog in the way:', ' | '.join(text.split('\n')))
            if 'Select Kernel' in text:
                dialog.locator('select').select_option(label='Python 3 (ipykernel)')
                dialog.locator('.jp-Dialog-button.jp-mod-accept').click()
            else:
                dialog.locator('.jp-Dialog-button.jp-mod-reject').first.click()
            dialog.wait_for(state='hidden', timeout=10_000)


def widget_shown(page, selector: str, root, seconds: float = 300):
    """The widget `selector` once its cell has run. Cell 1 imports torch and makes an engine: seconds here, minutes
    beside a busy suite. Where it has not shown halfway and the kernel is idle, the cells are run again once (seen
    in a run here: under load JupyterLab replaced the notebook's kernel during Run All, and the cells after the
    first never ran). Where it never shows, a failure that says what the notebook shows instead (its outputs, a
    dialog, the kernel's state) and the end of JupyterLab's log."""
    widget = page.locator(selector)
    for attempt in range(2):
        try:
            widget.wait_for(timeout=seconds * 500)
            return widget
        except PlaywrightTimeout:
            if attempt == 0 and kernel_state(page) == 'idle':
                print(f'{selector} not shown in {seconds / 2:.0f} s and the kernel idle: running all cells again')
                run_all_cells(page)
    outputs = page.locator('.jp-OutputArea-output').all_inner_texts()
    dialogs = [d.inner_text() for d in page.locator('.jp-Dialog').all() if d.is_visible()]
    log = (root / 'lab.log').read_text(errors='replace')[-3000:]
    raise AssertionError(f'{selector} not shown in {seconds:.0f} s; kernel {kernel_state(page)}; dialogs {dialogs}; '
                         f'outputs {outputs}; the end of lab.log:\n{log}')


def kernel_state(page) -> str:
    return page.evaluate("() => document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status")


COMPARE, BLIND = '.swiftnb-compare:not(.swiftnb-blind)', '.swiftnb-blind'


def answers_finished(page, widget: str) -> None:
    page.wait_for_function(f"() => [...document.querySelectorAll('{widget} .swiftnb-answer')]"
                           ".every(a => /· (stop|length)/.test(a.textContent))")


def vote_rows(root) -> list:
    votes = root / 'votes.jsonl'
    return [json.loads(line) for line in votes.read_text().splitlines()] if votes.exists() else []


def test_the_widgets_in_jupyterlab(lab, pt_engine, tmp_path):
    url, root = lab
    expected_chat = direct_answer(pt_engine, 'Who are you?', max_new_tokens=64)
    expected_columns = [direct_answer(pt_engine, 'Who are you?', adapter=a, max_new_tokens=48)
                        for a in (None, 'kakarot', 'pirate')]
    with chromium_page() as page:
        page.goto(url)
        page.wait_for_selector('.jp-Notebook .jp-Cell')
        page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]')
        run_all_cells(page)

        chat = widget_shown(page, '.swiftnb-chat', root)
        chat.locator('textarea.swiftnb-prompt').fill('Who are you?')
        chat.locator('textarea.swiftnb-prompt').press('Enter')  # Enter sends
        page.wait_for_function("([sel, text]) => document.querySelector(sel)?.textContent.includes(text)",
                               arg=['.swiftnb-chat .swiftnb-transcript', expected_chat])
        assert chat.locator('.swiftnb-answer p').inner_text() == expected_chat
        assert chat.locator('.swiftnb-answer').is_visible()
        page.wait_for_function("() => document.querySelector('.swiftnb-chat .swiftnb-answer')"
                               "?.textContent.includes('tokens/s')")
        assert chat.locator('textarea.swiftnb-prompt').input_value() == ''

        compare = page.locator(COMPARE)
        compare.locator('textarea.swiftnb-prompt').fill('Who are you?')
        compare.get_by_role('button', name='Send').click()
        answers_finished(page, COMPARE)
        # the adapters' differences are highlighted once every column has finished: a redraw after the last one
        page.wait_for_selector(f'{COMPARE} .swiftnb-answer mark')
        columns = compare.locator('.swiftnb-answer')
        assert columns.count() == 3
        for i, expected in enumerate(expected_columns):
            text = text_without_deletions(page, f'{COMPARE} .swiftnb-answer >> nth={i} >> .swiftnb-body')
            assert text.strip() == expected, i

        # Blind mode: a click on a vote button, then a key on the key strip, each appends the vote's DPO rows.
        blind = page.locator(BLIND)
        assert blind.locator('.swiftnb-answer').count() == 3
        for vote in ('click', 'key'):
            before = len(vote_rows(root))
            shown = blind.locator('.swiftnb-answer .swiftnb-body').all_inner_texts()
            blind.locator('textarea.swiftnb-prompt').fill('Who are you?' if vote == 'click' else 'Hello!')
            blind.locator('textarea.swiftnb-prompt').press('Enter')
            page.wait_for_function("""shown => [...document.querySelector('.swiftnb-blind')
                                   .querySelectorAll('.swiftnb-answer')].every(a => /· (stop|length)/.test(
                                   a.textContent) && !shown.includes(a.querySelector('.swiftnb-body').innerText))""",
                                   arg=shown)
            if vote == 'click':
                blind.get_by_role('button', name='A is better').click()
            else:
                blind.locator('.swiftnb-vote-keys').click()
                blind.locator('.swiftnb-vote-keys').press('b')
            page.wait_for_function("n => document.querySelector('.swiftnb-blind')"
                                   ".textContent.includes(`${n} votes in votes.jsonl`)", arg=1 + (vote == 'key'))
            rows = vote_rows(root)[before:]
            assert rows and all(set(row) == {'messages', 'rejected_response'} for row in rows), rows
        blind.get_by_role('button', name='Reveal win rates').click()
        page.wait_for_function("() => document.querySelector('.swiftnb-blind').textContent.includes('95% interval')")

        # each widget's static snapshot (what GitHub shows of a saved notebook) is hidden where the widget runs,
        # and JupyterLab applied its refreshes: what JupyterLab saves shows the answers
        snapshots = page.locator('.swiftnb-static')
        assert snapshots.count() == 3 and not any(snapshots.nth(i).is_visible() for i in range(3))
        assert expected_chat in snapshots.nth(0).text_content()
        assert expected_columns[0] in snapshots.nth(1).text_content()  # the others carry the diff's marks

        found = page.locator('.swiftnb-divergence')
        found.wait_for()
        assert found.locator('span[title]').count() > 10 and 'nats/token' in found.inner_text()

        shots = [tmp_path / name for name in ('chat_widget.png', 'compare_widget.png', 'blind_compare.png',
                                              'divergence.png')]
        for widget, shot in zip((chat, compare, blind, found), shots):
            widget.screenshot(path=shot)
    if os.environ.get('SWIFTNB_SCREENSHOTS'):
        for shot in shots:
            shutil.copy(shot, os.environ['SWIFTNB_SCREENSHOTS'])
    assert all(shot.stat().st_size > 10_000 for shot in shots)
