"""Word-level differences between two answers, as HTML (difflib's SequenceMatcher over words)."""
import difflib
import html
import re

_INSERTED = '<mark style="background:#fff1a8" title="not in the first column">{}</mark>'
_DELETED = '<del style="color:#b00" title="only in the first column">{}</del>'


def _words(text: str) -> list[str]:
    """Words with their trailing spaces, so that joining them gives the text back."""
    return re.findall(r'\S+\s*|\s+', text)


def word_diff_html(reference: str, text: str) -> str:
    """`text` with the words that differ from `reference` marked (inserted) and its missing ones struck."""
    old, new = _words(reference), _words(text)
    parts = []
    for op, i1, i2, j1, j2 in _matcher(old, new).get_opcodes():
        if op in ('delete', 'replace'):
            parts.append(_DELETED.format(html.escape(''.join(old[i1:i2]))))
        if op in ('insert', 'replace'):
            parts.append(_INSERTED.format(html.escape(''.join(new[j1:j2]))))
        if op == 'equal':
            parts.append(html.escape(''.join(new[j1:j2])))
    return f'<div style="white-space:pre-wrap">{"".join(parts)}</div>'


def num_changed_words(reference: str, text: str) -> int:
    """How many words of `text` are not matched in `reference`."""
    new = _words(text)
    return len(new) - sum(block.size for block in _matcher(_words(reference), new).get_matching_blocks())


def _matcher(old: list[str], new: list[str]) -> difflib.SequenceMatcher:
    """Words compared without their spaces: 'China.' at the end equals 'China. ' before more text."""
    return difflib.SequenceMatcher(a=[w.strip() for w in old], b=[w.strip() for w in new], autojunk=False)
