"""MkDocs hook: the reference pages that must not go stale are written from the source at build time.

A page holding one of these markers gets it replaced by a table generated from the code:

    <!-- generated: config -->       every option of `pretrain train` / the recipes (the config dataclasses)
    <!-- generated: compare -->      every option of `pretrain compare` (pretrain/compare/config.py)
    <!-- generated: objectives -->   each registered objective's options (its `Options` dataclass)
    <!-- generated: families -->     the model families (models/families/*.py)
    <!-- generated: layering -->     the import layering (pyproject.toml's import-linter contracts)

The source is read with `ast`, not imported, so the site builds without torch; a new field, objective or family
appears in the docs without anyone editing them. Types and defaults are shown as written in the source, the
meaning is the field's trailing comment (or the class docstring for the section as a whole)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]

# (section name in the config tree, file, dataclass); `model` is special: preset + init_from + every ModelConfig field
TRAIN_SECTIONS = [("objective", "pretrain/train/config.py", "ObjectiveSection"),
                  ("data", "pretrain/data/corpus.py", "DataConfig"),
                  ("tokenizer", "pretrain/data/tokenizer.py", "TokenizerConfig"),
                  ("optim", "pretrain/train/config.py", "OptimSection"),
                  ("run", "pretrain/train/config.py", "RunSection")]
COMPARE_FILE = "pretrain/compare/config.py"


class Field:
    def __init__(self, name: str, kind: str, default: str, meaning: str):
        self.name, self.kind, self.default, self.meaning = name, kind, default, meaning


def _module(path: str) -> tuple[ast.Module, list[str]]:
    text = (ROOT / path).read_text()
    return ast.parse(text), text.splitlines()


def _classes(path: str) -> dict[str, ast.ClassDef]:
    tree, _ = _module(path)
    return {node.name: node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}


def _comment(lines: list[str], node: ast.AST) -> str:
    """The comment-only lines right above a field and the trailing `# ...` of its line(s)."""
    above, before = [], node.lineno - 2
    while before >= 0 and lines[before].strip().startswith("#"):
        above.insert(0, lines[before].strip().lstrip("#").strip())
        before -= 1
    trailing = []
    for line in lines[node.lineno - 1:node.end_lineno]:
        code_and_comment = re.split(r"\s#\s?", line, maxsplit=1)
        if len(code_and_comment) == 2 and code_and_comment[1].strip():
            trailing.append(code_and_comment[1].strip())
    return " ".join(above + trailing)


def _default(value: ast.AST | None, source: str) -> str:
    if value is None:
        return "(required)"
    if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "field":
        for kw in value.keywords:
            if kw.arg == "default":
                return ast.get_source_segment(source, kw.value)
            if kw.arg == "default_factory" and isinstance(kw.value, ast.Lambda):
                return " ".join(ast.get_source_segment(source, kw.value.body).split())
            if kw.arg == "default_factory":
                factory = ast.get_source_segment(source, kw.value)
                return {"dict": "{}", "list": "[]"}.get(factory, f"{factory}()")
    return ast.get_source_segment(source, value)


def dataclass_fields(path: str, name: str, seen: frozenset = frozenset()) -> list[Field]:
    """The fields of dataclass `name` in `path`, its base classes' (found in the same file or its imports) first."""
    tree, lines = _module(path)
    source = (ROOT / path).read_text()
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name)
    fields: list[Field] = []
    for base in cls.bases:
        base_name = getattr(base, "id", None)
        where = _where_defined(tree, path, base_name) if base_name else None
        if where and (where, base_name) not in seen:
            fields += dataclass_fields(where, base_name, seen | {(where, base_name)})
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            kind = ast.get_source_segment(source, node.annotation)
            if kind.startswith("ClassVar"):
                continue
            fields = [f for f in fields if f.name != node.target.id]
            fields.append(Field(node.target.id, kind, _default(node.value, source), _comment(lines, node)))
    return fields


def _where_defined(tree: ast.Module, path: str, name: str) -> str | None:
    """The file defining class `name`: this one, or the module a `from .x import name` names."""
    if any(isinstance(n, ast.ClassDef) and n.name == name for n in tree.body):
        return path
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(a.name == name for a in node.names) and node.level >= 1:
            base = Path(path).parent
            for _ in range(node.level - 1):
                base = base.parent
            candidate = base / (node.module or "").replace(".", "/")
            for file in (candidate.with_suffix(".py"), candidate / "__init__.py"):
                if (ROOT / file).is_file():
                    return str(file)
    return None


def class_doc(path: str, name: str) -> str:
    doc = ast.get_docstring(_classes(path)[name]) or ""
    return " ".join(doc.split())


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(fields: list[Field], prefix: str = "") -> str:
    rows = ["| option | type | default | meaning |", "|---|---|---|---|"]
    rows += [f"| `{prefix}{f.name}` | `{_cell(f.kind)}` | `{_cell(f.default)}` | {_cell(f.meaning)} |"
             for f in fields]
    return "\n".join(rows)


def config_reference() -> str:
    out = []
    model = dataclass_fields("models/config.py", "ModelConfig")
    out.append("### model\n\nThe network: `preset` (one of the families below) sized by any `ModelConfig` field; a "
               "field left unset (null) keeps the preset's value, and `vocab_size` and the special token ids come "
               "from the tokenizer. `init_from`: the weights to start from (a run directory, a checkpoint "
               "`RUN/checkpoints/step_N`, or a transformers folder / Hub id). The defaults shown are "
               "`ModelConfig`'s own, before a preset overrides them.\n")
    out.append(table([Field("preset", "str", '"bert"', "the model family (`models/families/`)"),
                      Field("init_from", "Optional[str]", "None", "weights to start from")] + model, "model."))
    for section, path, name in TRAIN_SECTIONS:
        out.append(f"\n### {section}\n\n{class_doc(path, name)}\n")
        out.append(table(dataclass_fields(path, name), f"{section}."))
    return "\n".join(out) + "\n"


def compare_reference() -> str:
    out = [f"Top level (`CompareConfig`): {class_doc(COMPARE_FILE, 'CompareConfig')}\n",
           table(dataclass_fields(COMPARE_FILE, "CompareConfig"))]
    for cls_name, node in _classes(COMPARE_FILE).items():
        if cls_name.endswith("Section"):
            section = cls_name[:-len("Section")].lower()
            out.append(f"\n### {section}\n\n{class_doc(COMPARE_FILE, cls_name)}\n")
            out.append(table(dataclass_fields(COMPARE_FILE, cls_name), f"{section}."))
    return "\n".join(out) + "\n"


def _str_attr(cls: ast.ClassDef, attr: str) -> str | None:
    for node in cls.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == attr for t in node.targets):
            value = node.value
            if isinstance(value, ast.Constant):
                return str(value.value)
            if isinstance(value, ast.Name):
                return value.id
            if isinstance(value, (ast.JoinedStr, ast.BinOp)):
                return None
    return None


def objectives() -> list[tuple[str, str, str, str]]:
    """(name, title, file, Options class) of every objective in objectives/, in file order; an objective without
    an Options line of its own inherits its base class's."""
    found, classes = [], {}
    for path in sorted((ROOT / "objectives").glob("*.py")):
        rel = str(path.relative_to(ROOT))
        for cls in _classes(rel).values():
            classes[cls.name] = (rel, cls)
    for cls_name, (rel, cls) in classes.items():
        name = _str_attr(cls, "name")
        if not name or cls_name == "Objective":
            continue
        options, current = None, cls
        while options is None and current is not None:
            options = _str_attr(current, "Options")
            parent = getattr(current.bases[0], "id", None) if current.bases else None
            current = classes[parent][1] if parent in classes and parent != "Objective" else None
        found.append((name, _str_attr(cls, "title") or name, rel, options or "NoOptions"))
    return sorted(found)


def _options_file(options: str) -> str | None:
    for path in sorted((ROOT / "objectives").glob("*.py")):
        rel = str(path.relative_to(ROOT))
        if options in _classes(rel):
            return rel
    return None


def objectives_reference() -> str:
    out = ["| `objective.name` | what it is | file |", "|---|---|---|"]
    out += [f"| `{name}` | {title} | `{path}` |" for name, title, path, _ in objectives()]
    for name, title, path, options in objectives():
        where = _options_file(options)
        fields = dataclass_fields(where, options) if where else []
        out.append(f"\n### `{name}` options\n")
        out.append(table(fields, "") if fields else "No options.")
    return "\n".join(out) + "\n"


def families_reference() -> str:
    rows = ["| `model.preset` | family | file | transformers class | default objective |", "|---|---|---|---|---|"]
    for path in sorted((ROOT / "models" / "families").glob("*.py")):
        tree, _ = _module(str(path.relative_to(ROOT)))
        for call in ast.walk(tree):
            if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Family":
                kw = {k.arg: k.value for k in call.keywords}
                value = lambda key: (kw[key].value if isinstance(kw.get(key), ast.Constant) else "")  # noqa: E731
                rows.append(f"| `{value('name')}` | {value('title')} | `{path.relative_to(ROOT)}` | "
                            f"{('`' + value('hf_class') + '`') if value('hf_class') else '(none)'} | "
                            f"`{value('default_objective')}` |")
    return "\n".join(rows) + "\n"


def layering_reference() -> str:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    out = []
    for c in contracts:
        where = f" inside `{', '.join(c['containers'])}`" if c.get("containers") else ""
        layers = " > ".join(f"`{layer}`" for layer in c.get("layers", []))
        out.append(f"- **{c['name']}** ({c['type']}{where})" + (f": {layers}" if layers else ""))
    return "\n".join(out) + "\n\nA layer may import the layers to its right, never those to its left.\n"


GENERATORS = {"config": config_reference, "compare": compare_reference, "objectives": objectives_reference,
              "families": families_reference, "layering": layering_reference}


def on_page_markdown(markdown: str, **kwargs) -> str:
    for key, make in GENERATORS.items():
        marker = f"<!-- generated: {key} -->"
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown
