"""What one parser kept that another lost, per document: compares two `chunk_texts` outputs of the same folder
(for example before and after a parser change) by the words of each document.

  python3 benches/ingest/compare_parsers.py before.jsonl after.jsonl [--keep-navigation]

Prints each document whose `after` text lacks a word its `before` text had, then totals. Rows of DocBook/Sphinx
navigation tables in `before` (a table row with a `Prev`, `Next`, `Up` or `Home` cell, as the hand-written
scanner wrote them: cells joined by ` | `) are left out of the comparison unless --keep-navigation is given:
the HTML parser drops that page chrome on purpose.
"""
import collections, json, re, sys

NAVIGATION = {"Prev", "Next", "Up", "Home"}

def words(path, drop_navigation):
    docs = collections.defaultdict(set)
    for line in open(path):
        row = json.loads(line)
        text = row["text"]
        if drop_navigation:
            text = "\n".join(
                l for l in text.split("\n")
                if not (l.rstrip().endswith("|") and NAVIGATION & {c.strip() for c in l.split("|")})
            )
        docs[row["document"]].update(re.findall(r"\w+", text.lower()))
    return docs

args = [a for a in sys.argv[1:] if not a.startswith("--")]
before = words(args[0], "--keep-navigation" not in sys.argv)
after = words(args[1], False)
lost_docs, lost_total = 0, collections.Counter()
for doc in sorted(before):
    missing = before[doc] - after.get(doc, set())
    if missing:
        lost_docs += 1
        lost_total.update(missing)
        print(f"{doc}: {' '.join(sorted(missing))}")
print(f"documents: {len(before)} before, {len(after)} after; {lost_docs} lost at least one word")
print("words lost in most documents:", ", ".join(f"{w} ({n})" for w, n in lost_total.most_common(20)) or "none")
