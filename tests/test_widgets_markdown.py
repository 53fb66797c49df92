from swiftnb.widgets.markdown import render_markdown


def test_code_blocks_and_tables_render():
    out = render_markdown('Run:\n\n```python\nprint(1)\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n')
    assert '<code class="language-python">print(1)\n</code></pre>' in out and '<pre style=' in out
    assert '<td>1</td>' in out


def test_raw_html_from_the_model_is_escaped():
    assert render_markdown('<img src=x onerror=alert(1)>') == '<p>&lt;img src=x onerror=alert(1)&gt;</p>\n'
