"""Model text to HTML for an ipywidgets.HTML view (markdown-it-py, CommonMark with tables).

Raw HTML in the model's text is escaped, not rendered: an answer must not be able to
inject markup or scripts into the notebook page.
"""
from markdown_it import MarkdownIt

_markdown = MarkdownIt('commonmark', {'html': False}).enable('table')

# Inline styles, because an HTML widget's value is all that reaches the page (no stylesheet of ours).
_CODE_STYLE = ('<pre style="background:#f6f8fa;padding:6px 8px;border-radius:4px;overflow-x:auto;'
               'line-height:1.35"><code')


def render_markdown(text: str) -> str:
    return _markdown.render(text).replace('<pre><code', _CODE_STYLE)
