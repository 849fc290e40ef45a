"""Writes docs/config_reference.md (every key, then the option tables) from
the config schema and the registries (unet3d/config_reference.py), in this
checkout (unet3d installed, e.g. `pip install -e .`).

  python scripts/make_config_reference.py          # write it
  python scripts/make_config_reference.py --check  # exit 1 when out of date
"""

import argparse
import os
import sys

from unet3d import startup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REFERENCE = os.path.join(REPO, 'docs', 'config_reference.md')


def expected() -> dict[str, str]:
  """{path: the text it should hold}."""
  startup.import_tensorflow()  # the registries import it; quietly
  from unet3d import config_reference  # pylint: disable=g-import-not-at-top
  return {REFERENCE: config_reference.config_reference()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--check', action='store_true',
                      help='only report files that are out of date')
  args = parser.parse_args()
  texts = expected()  # imports TensorFlow quietly first
  from unet3d import fileio  # pylint: disable=g-import-not-at-top
  stale = []
  for path, text in texts.items():
    current = fileio.read_text(path) if fileio.exists(path) else None
    if current == text:
      continue
    stale.append(os.path.relpath(path, REPO))
    if not args.check:
      fileio.write_text(path, text)
  if args.check and stale:
    print('out of date: ' + ', '.join(stale) +
          ' (run python scripts/make_config_reference.py)', file=sys.stderr)
    sys.exit(1)
  print(('wrote ' if stale else 'up to date: ') +
        ', '.join(stale or ['docs/config_reference.md']))


if __name__ == '__main__':
  main()
