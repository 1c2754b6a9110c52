#!/usr/bin/env python3
"""Writes the JSON example of docs/language.md section 10 from a real run.

    dsl run every.sde --json > every.json && python3 docs/scripts/json_example.py every.json

every.sde is the file `Every` of section 6 with the query `mean(log(x[0]))` added (tests/DocsTests.fs
builds it the same way and checks the example in the doc against a run of it). Numbers are rounded
to three significant digits; the arrays of the second density and of the score, and the method of
a response whose method an earlier result already showed, are elided as `...`.
"""
import json
import sys


def num(v):
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, int):
        return str(v)
    s = '%.3g' % v
    if 'e' in s:
        m, e = s.split('e')
        s = str(float(m) * 10 ** int(e))
        s = s[:-2] if s.endswith('.0') else s
    return s


def val(v):
    if isinstance(v, list):
        return '[ ' + ', '.join(val(x) for x in v) + ' ]' if v else '[]'
    if isinstance(v, dict):
        return '{ ' + ', '.join('"%s": %s' % (k, val(x)) for k, x in v.items()) + ' }'
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return num(v)


def result(r, seen_methods, elide_arrays):
    parts = []
    for k, v in r.items():
        if (k in ('grid', 'values', 'stderrs') or (k in ('bias', 'bias_stderr') and isinstance(v, list))) and elide_arrays:
            parts.append('"%s": [ ... ]' % k)
        elif k == 'method' and v in seen_methods and r['kind'] == 'response':
            parts.append('"method": "..."')
        else:
            parts.append('"%s": %s' % (k, val(v)))
    if 'method' in r:
        seen_methods.add(r['method'])
    # lines of at most ~100 characters, continuation lines indented under the brace
    lines, line = [], '{ '
    for i, p in enumerate(parts):
        piece = p + (', ' if i < len(parts) - 1 else '')
        if len(line) + len(piece) > 100 and line.strip() != '{':
            lines.append(line.rstrip())
            line = '  ' + piece
        else:
            line += piece
    lines.append(line.rstrip() + ' }')
    return lines


def main(path):
    d = json.load(open(path))
    out = ['{', '  "model": %s,' % val(d['model']), '  "source": %s,' % val(d['source']),
           '  "settings": %s,' % val(d['settings']), '  "sets": [']
    seen, densities = set(), 0
    for si, s in enumerate(d['sets']):
        out.append('    { "name": %s, "params": %s,' % (val(s['name']), val(s['params'])))
        out.append('      "results": [')
        rs = s['results']
        for i, r in enumerate(rs):
            densities += r['kind'] == 'density'
            elide = (r['kind'] == 'density' and densities > 1) or r['kind'] == 'score'
            lines = result(r, seen, elide)
            lines[-1] += ',' if i < len(rs) - 1 else ''
            out.append('        ' + lines[0])
            out.extend('        ' + l for l in lines[1:])
        out.append('      ] }' + (',' if si < len(d['sets']) - 1 else ''))
    out.append('  ],')
    if 'warnings' in d:
        out.append('  "warnings": %s,' % val(d['warnings']))
    out.append('  "timing": %s' % val(d['timing']))
    out.append('}')
    print('\n'.join(out))


if __name__ == '__main__':
    main(sys.argv[1])
