#!/usr/bin/env bash
# Debian programs medveil calls: tesseract (burned-in text) and dciodvfy from dicom3tools (tests).
set -u
tools="tesseract-ocr tesseract-ocr-eng dicom3tools"
if command -v tesseract >/dev/null && command -v dciodvfy >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "note: install $tools (Debian/Ubuntu) yourself: this step needs root and apt-get" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $tools >/dev/null \
  || echo "note: apt-get could not install $tools" >&2
exit 0
