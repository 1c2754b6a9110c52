#!/usr/bin/env bash
# The TextMate grammar (editors/vscode/syntaxes/sde.tmLanguage.json) through VS Code's TextMate
# engine: installs vscode-textmate and vscode-oniguruma with npm into a temporary folder (nothing in
# the repository) and runs grammar.js. Exit 77 (skip) without node and npm.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "SKIP: node and npm not found"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm install --no-audit --no-fund --silent vscode-textmate@9 vscode-oniguruma@2 >/dev/null)
NODE_PATH="$work/node_modules" node "$root/tests/editors/grammar.js" "$root"
