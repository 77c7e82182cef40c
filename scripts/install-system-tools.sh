#!/usr/bin/env bash
# From Debian: Tesseract's English model (burned-in text; tesserocr's wheel carries the library, not
# the model), dciodvfy from dicom3tools (tests), and a real PACS and modality for the gateway's tests
# and benchmark: Orthanc with its DICOMweb plugin, dcmtk's storescu.
set -u
tools="tesseract-ocr-eng dicom3tools orthanc orthanc-dicomweb dcmtk"
if ls /usr/share/tesseract-ocr/*/tessdata/eng.traineddata >/dev/null 2>&1 && command -v dciodvfy >/dev/null \
   && command -v Orthanc >/dev/null && command -v storescu >/dev/null \
   && [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then
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
