from swiftnb.widgets.diff import num_changed_words, word_diff_html


def test_equal_texts_have_no_marks():
    assert word_diff_html('I am Tiny Chat.', 'I am Tiny Chat.') == \
        '<div style="white-space:pre-wrap">I am Tiny Chat.</div>'


def test_changed_words_are_marked_and_missing_ones_struck():
    out = word_diff_html('I am Tiny Chat, a small model.', 'I am Kakarot, a small model.')
    assert '<del style="color:#b00" title="only in the first column">Tiny Chat, </del>' in out
    assert '<mark style="background:#fff1a8" title="not in the first column">Kakarot, </mark>' in out
    assert num_changed_words('I am Tiny Chat, a small model.', 'I am Kakarot, a small model.') == 1


def test_model_text_is_escaped():
    assert '&lt;script&gt;' in word_diff_html('hi', '<script>alert(1)</script>')


def test_spacing_after_a_word_is_not_a_difference():
    out = word_diff_html('facts about China.', 'facts about China. Yo ho ho!')
    assert out == ('<div style="white-space:pre-wrap">facts about China. '
                   '<mark style="background:#fff1a8" title="not in the first column">Yo ho ho!</mark></div>')
