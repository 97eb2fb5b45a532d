"""What a terminal shows of the text written to it."""

from __future__ import annotations


def screen(written: str) -> list[str]:
    """The rows a terminal shows after ``written``: a carriage return goes back to the start of the
    row, a newline to a new row, and each character overwrites the one under the cursor."""
    rows: list[list[str]] = [[]]
    column = 0
    for char in written:
        if char == "\r":
            column = 0
        elif char == "\n":
            rows.append([])
            column = 0
        else:
            row = rows[-1]
            row[column : column + 1] = [char]
            column += 1
    return ["".join(row).rstrip() for row in rows]
