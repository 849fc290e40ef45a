"""The one YAML reader of unet3d: safe tags only, no aliases, no duplicate keys.

Configs, plans and params.yaml are read through `load`. It refuses what
would let a small file become a large or ambiguous value: aliases (an
alias bomb of a few lines expands to gigabytes), duplicate keys (YAML keeps
the last one silently) and `!!python` tags (the safe loader's refusal).
Errors are one short line naming the source and, where known, the line.
"""

from __future__ import annotations

from typing import Any

import yaml

from unet3d.errors import ConfigError

# The longest piece of untrusted text an error message repeats.
MAX_SHOWN = 200


def shorten(text: str, limit: int = MAX_SHOWN) -> str:
  """`text` on one line, cut to at most `limit` characters."""
  text = ' '.join(str(text).split())
  return text if len(text) <= limit else text[:limit - 3] + '...'


class _Refused(yaml.YAMLError):
  """What the loader refuses, with the line it is on."""

  def __init__(self, message: str, mark):
    super().__init__(message)
    self.line = None if mark is None else mark.line + 1


class Loader(yaml.SafeLoader):
  """`yaml.SafeLoader` that refuses aliases and duplicate mapping keys."""

  def compose_node(self, parent, index):
    if self.check_event(yaml.AliasEvent):
      event = self.peek_event()
      raise _Refused(f'alias *{shorten(event.anchor, 40)}: aliases are not '
                     'allowed (write the value out)', event.start_mark)
    return super().compose_node(parent, index)

  def construct_mapping(self, node, deep=False):
    if isinstance(node, yaml.MappingNode):
      self.flatten_mapping(node)
      seen = set()
      for key_node, _ in node.value:
        key = self.construct_object(key_node, deep=True)
        try:
          duplicate = key in seen
          seen.add(key)
        except TypeError:  # an unhashable key: SafeLoader reports it
          continue
        if duplicate:
          raise _Refused(f'duplicate key {shorten(repr(key), 60)}',
                         key_node.start_mark)
    return super().construct_mapping(node, deep=deep)


def load(text: str, source: str) -> Any:
  """The value of one YAML document; a one-line ConfigError naming `source`
  (and the line) when it is not valid YAML or holds what `Loader` refuses."""
  try:
    return yaml.load(text, Loader=Loader)  # pylint: disable=no-value-for-parameter
  except _Refused as e:
    where = f' (line {e.line})' if e.line else ''
    raise ConfigError(f'{shorten(source)}: {e}{where}') from None
  except yaml.YAMLError as e:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    mark = getattr(e, 'problem_mark', None)
    where = f' (line {mark.line + 1})' if mark is not None else ''
    raise ConfigError(f'{shorten(source)}: not valid YAML: '
                      f'{shorten(first)}{where}') from None
  except RecursionError:
    raise ConfigError(f'{shorten(source)}: not valid YAML: nested too '
                      'deeply') from None
