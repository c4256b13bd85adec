#!/usr/bin/env python3
"""nf_block_runner.py: runs one `script:` or `stub:` block of a Nextflow process under bash, the way
Nextflow would, for tests on machines without Nextflow (tests/cli/workflows_nextflow.sh runs it with /usr/bin/python3).

It parses the process out of its .nf file: the `input:` declarations (tuple val(..)/path(..),
path(.., stageAs: 'dir/*')), the `output:` path patterns, and the block: the Groovy statements
before the triple-quoted script (`def x = EXPR`, `if (A == B) error "msg"`) and the script itself.
Expressions understood: '...' and "..." strings with ${expr} / $name.name interpolation, a ?: b,
c ? a : b, a == b, null, integers, dotted names (task.ext.args, task.ext.prefix, task.cpus,
task.process, meta.id, inputs), x.join(sep). Anything else is reported as unsupported, so a module
that strays from these forms fails the test instead of being run wrongly. The script is
interpolated, its indentation stripped (as Nextflow does), written to WORKDIR/.command.sh and run
with `bash -euo pipefail` (nextflow.config's process.shell) after the inputs are symlinked into
WORKDIR. Then every declared output pattern must match a file that is not a staged input.

usage: nf_block_runner.py FILE.nf PROCESS script|stub WORKDIR SPEC.json
  SPEC: {"inputs": [one entry per input line; a tuple as a list; a path as a path, a list of
         paths, or "" / [] for none], "ext_args": str|null, "ext_prefix": str|null, "cpus": int}
Exit status: the script's; 90 when the block raised `error` (message on stderr, as Nextflow
prints it); 91 when a declared output is missing; 92 on a parse error or unsupported construct.
"""

import glob
import json
import os
import re
import subprocess
import sys
import textwrap


class Unsupported(Exception):
    pass


class ProcessError(Exception):
    pass


# ---- the .nf file --------------------------------------------------------------------------


def process_body(text, name):
    m = re.search(r"^process\s+" + re.escape(name) + r"\s*\{", text, re.M)
    if not m:
        raise Unsupported(f"process {name} not found")
    i, depth, quote = m.end(), 1, None
    while i < len(text) and depth:
        if text.startswith('"""', i):
            j = text.find('"""', i + 3)
            while j > 0 and text[j - 1] == "\\":
                j = text.find('"""', j + 3)
            i = j + 3
            continue
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "/" and text.startswith("//", i):
            i = text.find("\n", i)
            continue
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        i += 1
    return text[m.end():i - 1]


SECTIONS = ("input:", "output:", "when:", "script:", "shell:", "exec:", "stub:")


def sections(body):
    """{label: text} of a process body (directives before the first label are skipped)."""
    out, cur, buf, in_str = {}, None, [], False
    for line in body.split("\n"):
        s = line.strip()
        if not in_str and s in SECTIONS:
            if cur:
                out[cur] = "\n".join(buf)
            cur, buf = s[:-1], []
            continue
        if s.count('"""') % 2:
            in_str = not in_str
        buf.append(line)
    if cur:
        out[cur] = "\n".join(buf)
    return out


def split_top(s, sep=","):
    """Splits at top-level separators (outside quotes, parentheses, brackets, braces)."""
    parts, depth, quote, cur, i = [], 0, None, "", 0
    while i < len(s):
        c = s[i]
        if quote:
            if c == "\\":
                cur += s[i:i + 2]
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(cur)
            cur, i = "", i + len(sep)
            continue
        cur += c
        i += 1
    parts.append(cur)
    return [p.strip() for p in parts]


def parse_inputs(text):
    """[[(kind, name, stageAs), ...] per input line]."""
    decls = []
    for line in text.split("\n"):
        s = line.split("//")[0].strip()
        if not s:
            continue
        single = not s.startswith("tuple ")
        items = split_top(s if single else s[len("tuple "):])
        elems = []
        for it in items:
            m = re.fullmatch(r"(val|path)\s*\(\s*([A-Za-z_]\w*)\s*(?:,\s*stageAs:\s*'([^']*)')?\s*\)", it)
            if not m:
                m2 = re.fullmatch(r"(val|path)\s+([A-Za-z_]\w*)", it)
                if not m2:
                    raise Unsupported(f"input declaration: {it}")
                elems.append((m2.group(1), m2.group(2), None))
            else:
                elems.append((m.group(1), m.group(2), m.group(3)))
        decls.append((single, elems))
    return decls


def parse_outputs(text):
    """[(pattern expression, emit)] of every path(...) / path "..." in the output block."""
    outs = []
    for line in text.split("\n"):
        s = line.split("//")[0].strip()
        if not s:
            continue
        emit = re.search(r"emit:\s*(\w+)", s)
        optional = "optional: true" in s
        for m in re.finditer(r'path\s*\(\s*("(?:[^"\\]|\\.)*"|\'[^\']*\')|path\s+("(?:[^"\\]|\\.)*"|\'[^\']*\')', s):
            outs.append((m.group(1) or m.group(2), emit.group(1) if emit else "", optional))
    return outs


# ---- Groovy expressions ----------------------------------------------------------------------


class PathList(list):
    """Several staged files: Nextflow renders them blank-separated."""


def truthy(v):
    return v not in (None, "", [], {}, 0, False)


def gstr(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, PathList):
        return " ".join(v)
    if isinstance(v, list):
        return "[" + ", ".join(gstr(x) for x in v) + "]"
    if isinstance(v, dict):
        return "[" + ", ".join(f"{k}:{gstr(x)}" for k, x in v.items()) + "]"
    return str(v)


def find_top(s, tok, start=0):
    depth, quote, i = 0, None, start
    while i < len(s):
        c = s[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and s.startswith(tok, i):
            return i
        i += 1
    return -1


def lookup(name, env):
    parts = name.split(".")
    if parts[0] not in env:
        raise Unsupported(f"unknown variable '{parts[0]}'")
    v = env[parts[0]]
    for p in parts[1:]:
        if isinstance(v, dict):
            v = v.get(p)
        else:
            raise Unsupported(f"cannot take .{p} of {parts[0]}")
    return v


def interp(s, env, triple=False):
    """A GString body: escapes, ${expr} and $name.name."""
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            out.append({"n": "\n", "t": "\t", "\\": "\\", "$": "$", '"': '"', "'": "'"}.get(n, "\\" + n))
            i += 2
        elif c == "$" and s.startswith("${", i):
            depth, j = 1, i + 2
            while j < len(s) and depth:
                depth += {"{": 1, "}": -1}.get(s[j], 0)
                j += 1
            out.append(gstr(ev(s[i + 2:j - 1], env)))
            i = j
        elif c == "$" and re.match(r"[A-Za-z_]", s[i + 1:i + 2]):
            m = re.match(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*", s[i + 1:])
            out.append(gstr(lookup(m.group(0), env)))
            i += 1 + len(m.group(0))
        elif c == "$":
            raise Unsupported(f"bare '$' in a GString (escape it as \\$): ...{s[max(0, i - 20):i + 20]}...")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def wrapped(e):
    """True when e is one parenthesised expression: (a ? b : c), not (a) == (b)."""
    if not (e.startswith("(") and e.endswith(")")):
        return False
    depth, quote, i = 0, None, 0
    while i < len(e):
        c = e[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0 and i < len(e) - 1:
                return False
        i += 1
    return True


def ev(expr, env):
    e = expr.strip()
    while wrapped(e):
        e = e[1:-1].strip()
    i = find_top(e, "?")
    if i >= 0:
        if e[i + 1:i + 2] == ":":
            a = ev(e[:i], env)
            return a if truthy(a) else ev(e[i + 2:], env)
        j = find_top(e, ":", i + 1)
        if j < 0:
            raise Unsupported(f"ternary without ':': {e}")
        return ev(e[i + 1:j], env) if truthy(ev(e[:i], env)) else ev(e[j + 1:], env)
    i = find_top(e, "==")
    if i >= 0:
        return gstr(ev(e[:i], env)) == gstr(ev(e[i + 2:], env))
    if len(e) >= 2 and e[0] == e[-1] == '"':
        return interp(e[1:-1], env)
    if len(e) >= 2 and e[0] == e[-1] == "'":
        return e[1:-1].replace("\\'", "'").replace("\\\\", "\\")
    if e == "null":
        return None
    if re.fullmatch(r"-?\d+", e):
        return int(e)
    m = re.fullmatch(r"(.+)\.join\((.*)\)", e)
    if m:
        v = ev(m.group(1), env)
        return ev(m.group(2), env).join(gstr(x) for x in (v if isinstance(v, list) else [v]))
    if re.fullmatch(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*", e):
        return lookup(e, env)
    raise Unsupported(f"expression: {e}")


def run_block(block, env):
    """Evaluates the Groovy statements, returns the interpolated, dedented script."""
    m = re.search(r'"""(.*?)(?<!\\)"""', block, re.S)
    if not m:
        raise Unsupported("no triple-quoted script in the block")
    for line in block[:m.start()].split("\n"):
        s = line.split("//")[0].strip()
        if not s:
            continue
        d = re.fullmatch(r"def\s+([A-Za-z_]\w*)\s*=\s*(.+)", s)
        if d:
            env[d.group(1)] = ev(d.group(2), env)
            continue
        f = re.fullmatch(r"if\s*\((.+)\)\s*error\s+(.+)", s)
        if f:
            if truthy(ev(f.group(1), env)):
                raise ProcessError(ev(f.group(2), env))
            continue
        raise Unsupported(f"statement: {s}")
    if block[m.end():].strip():
        raise Unsupported(f"code after the script string: {block[m.end():].strip()[:60]}")
    return textwrap.dedent(interp(m.group(1), env, triple=True)).lstrip("\n")


# ---- staging and running ---------------------------------------------------------------------


def stage(paths, stage_as, workdir, staged):
    """Symlinks input files into workdir (or its stageAs folder); returns the names the script sees."""
    names = []
    for p in paths:
        sub = os.path.dirname(stage_as) if stage_as else ""
        dest_dir = os.path.join(workdir, sub)
        os.makedirs(dest_dir, exist_ok=True)
        name = os.path.join(sub, os.path.basename(p.rstrip("/")))
        os.symlink(os.path.abspath(p), os.path.join(workdir, name))
        staged.add(os.path.normpath(name))
        names.append(name)
    return names


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__.split("\n\n")[-2])
    nf, proc, which, workdir, spec_path = sys.argv[1:]
    with open(spec_path) as fh:
        spec = json.load(fh)
    os.makedirs(workdir, exist_ok=True)
    try:
        body = process_body(open(nf).read(), proc)
        secs = sections(body)
        if which not in secs:
            raise Unsupported(f"process {proc} has no {which}: block")
        decls = parse_inputs(secs.get("input", ""))
        if len(decls) != len(spec["inputs"]):
            raise Unsupported(f"{proc} declares {len(decls)} inputs, the spec gives {len(spec['inputs'])}")
        env, staged = {}, set()
        for (single, elems), given in zip(decls, spec["inputs"]):
            values = [given] if single else given
            if len(values) != len(elems):
                raise Unsupported(f"input {[e[1] for e in elems]}: {len(values)} values given")
            for (kind, name, stage_as), v in zip(elems, values):
                if kind == "val":
                    env[name] = v
                elif v in ("", [], None):
                    env[name] = []
                else:
                    files = stage(v if isinstance(v, list) else [v], stage_as, workdir, staged)
                    env[name] = PathList(files) if (isinstance(v, list) or stage_as) else files[0]
        env["task"] = {"ext": {"args": spec.get("ext_args"), "prefix": spec.get("ext_prefix")},
                       "cpus": spec.get("cpus", 1), "process": proc}
        env["params"] = spec.get("params", {})
        script = run_block(secs[which], env)
    except Unsupported as e:
        print(f"[nf_block_runner] {nf}: {proc}: unsupported: {e}", file=sys.stderr)
        sys.exit(92)
    except ProcessError as e:
        print(f"ERROR ~ {e}", file=sys.stderr)
        sys.exit(90)
    with open(os.path.join(workdir, ".command.sh"), "w") as fh:
        fh.write("#!/bin/bash -euo pipefail\n" + script)
    with open(os.path.join(workdir, ".command.out"), "w") as out, \
            open(os.path.join(workdir, ".command.err"), "w") as err:
        rc = subprocess.call(["bash", "-euo", "pipefail", ".command.sh"], cwd=workdir, stdout=out, stderr=err)
    with open(os.path.join(workdir, ".exitcode"), "w") as fh:
        fh.write(f"{rc}\n")
    if rc != 0:
        sys.stderr.write(open(os.path.join(workdir, ".command.err")).read())
        sys.exit(rc)
    missing = []
    for pat_expr, emit, optional in parse_outputs(secs.get("output", "")):
        try:
            pat = ev(pat_expr, env)
        except Unsupported as e:
            print(f"[nf_block_runner] output pattern {pat_expr}: {e}", file=sys.stderr)
            sys.exit(92)
        hits = [h for h in glob.glob(os.path.join(workdir, pat))
                if os.path.normpath(os.path.relpath(h, workdir)) not in staged]
        print(f"{emit or '-'}\t{pat}\t{' '.join(sorted(os.path.relpath(h, workdir) for h in hits))}")
        if not hits and not optional:
            missing.append(f"{pat} (emit: {emit})")
    if missing:
        print(f"[nf_block_runner] {proc} {which}: missing outputs: {', '.join(missing)}", file=sys.stderr)
        sys.exit(91)


if __name__ == "__main__":
    main()
