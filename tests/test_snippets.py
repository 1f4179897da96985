"""tests/snippets.py: a ``# -> value`` comment in a docs snippet is compared with what the code gives."""

from __future__ import annotations

import pytest

from snippets import SnippetValueError, checked, expected_part, matches


def run(code: str) -> int:
    compiled, namespace, count = checked(code, "<snippet>")
    exec(compiled, namespace)
    return count


def test_a_true_comparison_and_a_rounded_number_pass():
    assert run("x = 1.8604\nx   # -> 1.86\nx > 1  # -> True\n") == 2


def test_a_number_off_by_more_than_its_written_precision_fails():
    with pytest.raises(SnippetValueError, match="1.87"):
        run("1.8604  # -> 1.87")


def test_a_tuple_is_compared_element_by_element_and_prose_after_a_colon_is_ignored():
    assert run("(36, 19)  # -> (36, 19): each client masks with 36 neighbours") == 1
    with pytest.raises(SnippetValueError):
        run("(36, 20)  # -> (36, 19): each client masks with 36 neighbours")


def test_a_count_mismatch_fails():
    with pytest.raises(SnippetValueError):
        run("(1, 2, 3)  # -> (1, 2)")


def test_a_print_is_compared_with_what_it_printed():
    assert run("print(2, 'weight', 1.0, 3.0)  # -> 2 weight 1.0 3.0") == 1
    with pytest.raises(SnippetValueError, match="printed"):
        run("print(2, 'bias', 1.0, 3.0)  # -> 2 weight 1.0 3.0")


def test_arrays_and_numpy_scalars_are_flattened():
    assert run("import numpy as np\nnp.array([6, 6, 6, 6], dtype=np.uint64)  # -> [6, 6, 6, 6]") == 1


def test_a_check_inside_a_block_is_rewritten_too():
    assert run("try:\n    raise ValueError\nexcept ValueError:\n    print('caught')  # -> caught\n") == 1


def test_a_comment_without_an_arrow_checks_nothing():
    assert run("1 + 1  # 3, but only prose\n") == 0


def test_expected_part_stops_at_a_colon_outside_brackets():
    assert expected_part("{1: 2}: a dict") == "{1: 2}"
    assert not matches([1.0], "2")


def test_a_bare_expression_a_repl_would_echo_must_fit_a_screen():
    # Issue 25: the first snippet ended with `result.transcript`, 45 KB of bytes in a REPL.
    compiled, namespace, _ = checked("x = list(range(10))\nx\n", "<snippet>")
    exec(compiled, namespace)
    compiled, namespace, _ = checked("x = list(range(10_000))\nx\n", "<snippet>")
    with pytest.raises(SnippetValueError, match="line 2: a REPL would print"):
        exec(compiled, namespace)
