"""What one parser kept that another lost, per document: compares two `chunk_texts` outputs of the same folder
(for example before and after a parser change) by the words of each document.

  python3 benches/ingest/compare_parsers.py before.jsonl after.jsonl

Prints, for each document, the words `before` had that `after` has fewer of (with counts), then totals. Chunk
overlap repeats words, so counts are compared per document over all its chunks' texts without the heading
path lines repeated at the head of every chunk.
"""
import collections, json, re, sys

def words(path):
    docs = collections.defaultdict(collections.Counter)
    for line in open(path):
        row = json.loads(line)
        text = row["text"]
        docs[row["document"]].update(set(re.findall(r"\w+", text.lower())))
    return docs

before, after = words(sys.argv[1]), words(sys.argv[2])
lost_docs = 0
lost_total = collections.Counter()
for doc in sorted(before):
    missing = {w: n for w, n in before[doc].items() if w not in after.get(doc, {})}
    if missing:
        lost_docs += 1
        lost_total.update(missing)
        print(f"{doc}: {' '.join(sorted(missing))}")
print(f"documents: {len(before)} before, {len(after)} after; {lost_docs} lost at least one word")
print("words lost most often:", ", ".join(f"{w} ({n})" for w, n in lost_total.most_common(20)))
