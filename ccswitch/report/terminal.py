"""Text for a terminal: what a client chose (a model name, a session key) written so a terminal or a
page shows it as it is, labels shortened and told apart, and tables of aligned columns that fit a
terminal's width (in blocks of columns, each led by the rows' labels)."""
from __future__ import annotations

import re
import textwrap
import unicodedata
from collections import Counter
from collections.abc import Iterable

LABEL_WIDTH = 40        # longer labels (session keys can be long) are shortened in the table, kept whole in JSON
LONGEST_LABEL = 120     # what two labels that shorten alike may take to tell them apart


def printable(text: str) -> str:
    """Text a terminal shows as it is: a model name or session key is the client's to choose, and
    its control characters (escape sequences, line breaks) are written as escapes, not obeyed."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


#: control characters, and those that reorder the text around them: a client's model may carry them
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def visible_controls(text: str) -> str:
    r"""`text` with each control character shown as its escape (`\n`, `\u202e`): a model name
    `claude-\u202eevil\u202c-sonnet` or `my-odd\nname` must not read as another one on a page,
    where a line break shows as a blank (`printable`, for a terminal, escapes every character
    it would not print; a page keeps the rest, emoji sequences' joiners among them)."""
    return _CONTROLS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def short_label(label: str, width: int = LABEL_WIDTH) -> str:
    """Head and tail of a long label: session keys differ at the end (a UUID) as often as at the start.
    ASCII dots, so a terminal without UTF-8 prints it too."""
    if len(label) <= width:
        return label
    tail = (width - 3) // 2
    return label[:width - 3 - tail] + "..." + label[-tail:]


def short_labels(labels: Iterable[str]) -> dict[str, str]:
    """Each label as a table shows it: shortened, and those that would then read alike (two model
    names that differ only in their middle: the version) shortened less, up to LONGEST_LABEL, and
    past that numbered, in the labels' order."""
    shown = {label: short_label(label) for label in labels}
    for room in range(LABEL_WIDTH + 10, LONGEST_LABEL + 1, 10):
        if not (alike := _alike(shown)):
            return shown
        shown.update((label, short_label(label, room)) for label in alike)
    alike = _alike(shown)
    for short in {shown[label] for label in alike}:
        same = [label for label in alike if shown[label] == short]
        shown.update((label, f"{short} ({n})") for n, label in enumerate(same, 1))
    return shown


def _alike(shown: dict[str, str]) -> list[str]:
    """The labels whose shown text another label's shares, in order."""
    seen = Counter(shown.values())
    return sorted(label for label, short in shown.items() if seen[short] > 1)


def width(text: str) -> int:
    """The columns `text` takes in a terminal: a wide character (CJK, most emoji) takes two, a
    combining mark none; `len` put the columns after such a name out of line."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def padded(text: str, columns: int, left: bool) -> str:
    pad = " " * max(0, columns - width(text))
    return text + pad if left else pad + text


def column_blocks(widths: list[int], fit: int | None) -> list[list[int]]:
    """A table's columns in blocks that each fit in ``fit`` terminal columns, each led by the first
    (the rows' labels): a narrow terminal gets the table in pieces, one under the other, instead of
    every row wrapped over two lines.  ``fit`` None (a file, a pipe): one block."""
    every = list(range(len(widths)))
    if fit is None or sum(widths) + 2 * (len(widths) - 1) <= fit:
        return [every]
    blocks, block, used = [], [], widths[0]
    for i in every[1:]:
        if block and used + 2 + widths[i] > fit:
            blocks.append([0, *block])
            block, used = [], widths[0]
        block.append(i)
        used += 2 + widths[i]
    return [*blocks, [0, *block]]


def table_lines(rows: list[list[str]], is_left, rules_before: set[int] = frozenset(),
                fit: int | None = None) -> list[str]:
    """Lines of a table whose first row is its head (`is_left(i)`: column i is left-aligned), with a
    rule under the head and before each body row in ``rules_before``; in blocks when ``fit`` asks."""
    widths = [max(width(r[i]) for r in rows) for i in range(len(rows[0]))]
    out: list[str] = []
    for block in column_blocks(widths, fit):
        shown = {i: widths[i] for i in block}
        last = block[-1]
        if fit is not None and len(block) == 2 and is_left(last) and widths[0] + 2 + widths[last] > fit:
            shown[last] = max(fit - widths[0] - 2, 20)     # a text alone too wide: wrapped within its column
        sep = "  ".join("-" * shown[i] for i in block)
        out += [*([""] if out else []), *_row_lines(rows[0], shown, widths, is_left), sep]
        for n, row in enumerate(rows[1:]):
            if n in rules_before:
                out.append(sep)
            out += _row_lines(row, shown, widths, is_left)
    return out


def _row_lines(row: list[str], shown: dict[int, int], widths: list[int], is_left) -> list[str]:
    """One row in the columns `shown` (index: the width it gets), a cell given less than its width
    wrapped at word ends over as many lines as it takes."""
    pieces = {i: (textwrap.wrap(row[i], room, break_long_words=False) or [""]) if room < widths[i] else [row[i]]
              for i, room in shown.items()}
    return ["  ".join(padded(pieces[i][n] if n < len(pieces[i]) else "", room, is_left(i)) for i, room in shown.items())
            .rstrip() for n in range(max(map(len, pieces.values())))]


def prose(text: str, fit: int | None, indent: str = "") -> list[str]:
    """A line of text, wrapped at word ends where ``fit`` is narrower."""
    if fit is None or width(text) <= fit:
        return [text]
    return textwrap.wrap(text, fit, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)
