#!/usr/bin/env python3
"""Print what a bench phase added to each cluster node's metrics.

Reads the scrapes `ordo-bench --node-metrics DIR` saves (<peer>-r<run>-<node>-before.prom and
-after.prom) and, per node, prints every histogram's count, mean and bucket-bound p50/p90/p99
over the interval, and the counters and gauges that changed. Usage:
    scripts/stage-latency.py DIR [PREFIX]
"""
import collections
import pathlib
import re
import sys

LINE = re.compile(r'^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)')


def parse(path):
    values = {}
    for line in path.read_text().splitlines():
        m = LINE.match(line)
        if m and not line.startswith('#'):
            values[(m.group(1), m.group(2) or '')] = float(m.group(3))
    return values


def quantile(buckets, count, q):
    """Upper bound of the bucket holding quantile q (buckets: [(le, cumulative)])."""
    want = q * count
    for le, cum in buckets:
        if cum >= want:
            return le
    return float('inf')


def report(before, after):
    diff = {k: after[k] - before.get(k, 0.0) for k in after}
    hists = collections.defaultdict(list)
    for (name, labels), v in diff.items():
        if name.endswith('_bucket'):
            le = re.search(r'le="([^"]+)"', labels).group(1)
            hists[name[:-len('_bucket')]].append((float(le), v))
    lines = []
    for name, buckets in sorted(hists.items()):
        count = diff.get((name + '_count', ''), 0.0)
        if count <= 0:
            continue
        total = diff.get((name + '_sum', ''), 0.0)
        buckets.sort()
        qs = ' '.join(f'p{int(q * 100)}<={quantile(buckets, count, q) * 1e3:.2f}ms'
                      for q in (0.5, 0.9, 0.99))
        lines.append(f'  {name}: n={count:.0f} mean={total / count * 1e3:.2f}ms {qs}')
    for (name, labels), v in sorted(diff.items()):
        if v and not re.search(r'_(bucket|sum|count|created)$', name):
            lines.append(f'  {name}{labels}: +{v:.0f}')
    return lines


def main():
    d = pathlib.Path(sys.argv[1])
    prefix = sys.argv[2] if len(sys.argv) > 2 else ''
    for before in sorted(d.glob(f'{prefix}*-before.prom')):
        after = before.with_name(before.name.replace('-before.prom', '-after.prom'))
        if not after.exists():
            continue
        print(before.name.replace('-before.prom', ''))
        print('\n'.join(report(parse(before), parse(after))))


if __name__ == '__main__':
    main()
