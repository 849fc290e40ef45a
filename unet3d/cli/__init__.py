"""The console commands: `unet3d` (main.py), `unet3d-convert` (convert/) and
`unet3d-demo` (demo.py). Flags and printing live here, the work in unet3d."""

import sys

from absl import flags


def describe_in_help(module_name: str) -> None:
  """Makes --help show the docstring and flags of `module_name`.

  absl's --help prints the __main__ module's docstring and the key flags of
  sys.argv[0]; when a console script or a shim runs a command, its flags and
  docs live in the command's module instead.
  """
  main = sys.modules['__main__']
  module = sys.modules[module_name]
  if main is module:
    return
  main.__doc__ = module.__doc__
  for flag in flags.FLAGS.get_key_flags_for_module(module_name):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
