"""Where the YAML recipes of the top-level configs/ folder are.

A (non-editable) install ships them as unet3d/configs/; in a checkout, and in
an editable install, they are configs/ beside unet3d/. Plain Python.
"""

import os

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_PLACES = (os.path.join(_PACKAGE, 'configs'),
           os.path.join(os.path.dirname(_PACKAGE), 'configs'))


def configs_dir() -> str:
  """The folder holding demo.yaml, brats/, cloud/, ..."""
  for path in _PLACES:
    if os.path.isfile(os.path.join(path, 'demo.yaml')):
      return path
  raise FileNotFoundError(f'configs: no demo.yaml in {" or ".join(_PLACES)}; '
                          'reinstall unet3d-tf')


def recipe(name: str) -> str:
  """The path of a shipped recipe: 'demo.yaml' -> <configs>/demo.yaml."""
  return os.path.join(configs_dir(), name)
