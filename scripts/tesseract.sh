#!/usr/bin/env bash
# Make sure Tesseract (OCR of scanned PDFs and images) is installed with the languages Prism
# reads: Debian's tesseract-ocr, tesseract-ocr-deu and tesseract-ocr-fra (English comes with
# tesseract-ocr).
#
#   scripts/tesseract.sh ensure    install what is missing (needs root and apt-get)
#
# Without root or apt-get it says what to install and exits 0: the OCR tests then skip
# locally, and fail in CI (CI=true).
set -euo pipefail

PACKAGES=(tesseract-ocr tesseract-ocr-deu tesseract-ocr-fra)
LANGUAGES=(eng deu fra)

missing() {
  command -v tesseract >/dev/null 2>&1 || return 0
  local installed
  installed="$(tesseract --list-langs 2>/dev/null || true)"
  for lang in "${LANGUAGES[@]}"; do
    grep -qx "$lang" <<<"$installed" || return 0
  done
  return 1
}

case "${1:-ensure}" in
  ensure)
    if ! missing; then
      exit 0
    fi
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "Installing Tesseract (${PACKAGES[*]}) ..." >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
      exit 0
    fi
    echo "Tesseract is missing: install it (Debian: apt-get install ${PACKAGES[*]})." >&2
    echo "Without it scans and images fail extraction, and the OCR tests skip (fail in CI)." >&2
    ;;
  *)
    echo "usage: $0 ensure" >&2
    exit 2
    ;;
esac
