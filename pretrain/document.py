"""Documents the toolkit writes (the comparison report, model cards) are written once, as markdown, from small
pieces; the HTML version is rendered from that markdown (Python-Markdown), with the pictures embedded, so the two
never say different things."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import markdown

STYLE = ("body{font-family:sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;line-height:1.4}"
         "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 7px;"
         "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
         "pre{background:#f7f7f7;padding:8px;white-space:pre-wrap;font-size:12px}img{max-width:100%}")


def text(value) -> str:
    """Plain text (a user's sentence, a file name) that markdown must not read as HTML."""
    return html.escape(str(value), quote=False)


def cell(value) -> str:
    """Text that stays inside one markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in cells) + " |" for cells in rows]
    return "\n".join(lines)


def key_values(rows: list[tuple]) -> str:
    """A two-column table without a header row of its own."""
    return table(["", ""], [list(r) for r in rows])


def bullets(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def image(alt: str, path: str) -> str:
    return f"![{alt}]({path})"


def code(text: str, language: str = "") -> str:
    return f"```{language}\n{text}\n```"


LIST_ITEM = re.compile(r"^(?:[-*+]|\d+\.) ")


def separated(block: str) -> str:
    """A blank line around every list and table next to a line of text: Python-Markdown (unlike GitHub) reads a
    list or table directly under a paragraph line as more of the paragraph, and a line under a list as more of its
    last item. Fenced code is left alone."""
    out, fenced, previous = [], False, ""  # previous: "" (blank), "text", "list" or "table"
    for line in block.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        if fenced or line.startswith("```"):
            out.append(line)
            previous = "text"
            continue
        kind = "" if not line.strip() else "list" if LIST_ITEM.match(line) else "table" \
            if line.startswith("|") else ("list" if previous == "list" and line.startswith(" ") else "text")
        if kind and previous and kind != previous:  # a list or table begins or ends: set it apart
            out.append("")
        out.append(line)
        previous = kind
    return "\n".join(out)


def join(*blocks: str) -> str:
    """Blocks separated by blank lines (empty blocks dropped), each list and table set apart (see separated)."""
    return "\n\n".join(separated(b.strip("\n")) for b in blocks if b and b.strip()) + "\n"


def to_html(text: str, title: str, base_dir: Path) -> str:
    """A self-contained HTML page of the markdown `text`: pictures it names (relative to base_dir) embedded."""
    body = markdown.markdown(text, extensions=["tables", "fenced_code"])

    def embed(match):
        src = match.group(1)
        path = Path(base_dir) / html.unescape(src)
        if src.startswith(("data:", "http:", "https:")) or not path.is_file():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'

    body = re.sub(r'src="([^"]+)"', embed, body)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")
