"""The README and docs/ say what the code does: every documented command's
entry point exists, its --flags are that entry point's flags, config keys
(in --params_override and in yaml blocks) are keys of the schema, and
links between pages resolve. Parse only: nothing here trains or converts.

Other projects' commands belong in tables or `text` blocks; fenced `bash`,
`sh` and `console` blocks are ours and are checked.
"""

import dataclasses
import functools
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
import typing

import pytest
import yaml

from unet3d import config
from unet3d.config import schema

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHELL_LANGS = ('bash', 'sh', 'console', 'shell')
# Programs that are not ours: their commands are not checked.
EXTERNAL = {'pip', 'pip3', 'git', 'cd', 'export', 'source', '.', 'ls', 'cat',
            'grep', 'mkdocs', 'tensorboard', 'nvidia-smi', 'gcloud', 'gsutil',
            'lscpu', 'echo', 'mkdir', 'rm', 'cp', 'mv', 'time', 'docker',
            'deactivate', 'sed', 'head', 'tail', 'wc', 'du', 'tar', 'curl',
            'hyperfine'}
# `python -m` modules of other projects that the docs may run.
EXTERNAL_MODULES = {'pytest', 'venv', 'pip', 'build'}


def doc_files() -> list[str]:
  files = [os.path.join(REPO, 'README.md'), os.path.join(REPO, 'CHANGELOG.md')]
  for root, _, names in os.walk(os.path.join(REPO, 'docs')):
    files += [os.path.join(root, n) for n in sorted(names) if n.endswith('.md')]
  return sorted(f for f in files if os.path.exists(f))


def _rel(path: str) -> str:
  return os.path.relpath(path, REPO)


_FENCE = re.compile(r'^([ \t]*)(`{3,})[ \t]*([\w+-]*)[^\n]*\n(.*?)^\1\2[ \t]*$',
                    re.M | re.S)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
  """[(language, body)] of the fenced code blocks of a markdown text."""
  return [(m.group(3).lower(), m.group(4)) for m in _FENCE.finditer(text)]


def shell_commands(body: str) -> list[str]:
  """The commands of a shell block: continuation lines joined, comments and
  console prompts dropped, each pipeline / `&&` / `;` part on its own."""
  lines, current = [], ''
  for raw in body.splitlines():
    line = raw.rstrip()
    if not current and (not line.strip() or line.lstrip().startswith('#')):
      continue
    if line.lstrip().startswith('$ '):
      line = line.lstrip()[2:]
    if line.endswith('\\'):
      current += line[:-1] + ' '
      continue
    lines.append(current + line)
    current = ''
  if current:
    lines.append(current)
  commands = []
  for line in lines:
    # Drop a trailing comment (a # after whitespace, outside quotes).
    try:
      words = shlex.split(line, comments=True)
    except ValueError as e:
      raise AssertionError(f'cannot parse shell line {line!r}: {e}') from e
    part = []
    for word in words + ['&&']:
      if word in ('&&', '||', '|', ';'):
        if part:
          commands.append(part)
        part = []
      else:
        part.append(word)
  return commands


@functools.lru_cache(maxsize=None)
def console_scripts() -> dict[str, str]:
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)['project']['scripts']


@dataclasses.dataclass(frozen=True)
class EntryPoint:
  """What runs: a module to import (its absl flags) and/or a file to read
  (its argparse flags); `shell` for shell scripts (no flags checked)."""
  name: str
  module: str = ''
  path: str = ''
  shell: bool = False


def entry_point(words: list[str]) -> tuple[EntryPoint | None, list[str]]:
  """(the entry point of a command, its arguments); None for commands of
  other programs. Raises AssertionError for ours that do not exist."""
  while words and re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*=.*', words[0]):
    words = words[1:]  # VAR=value prefixes
  if not words:
    return None, []
  program, args = words[0], words[1:]
  scripts = console_scripts()
  if program == 'unet3d-convert':
    assert args, 'unet3d-convert needs a dataset'
    if args[0] in ('--help', '-h', 'help'):
      return None, []
    from unet3d.cli import convert  # pylint: disable=g-import-not-at-top
    assert args[0] in convert.CONVERTERS, (
        f'unet3d-convert {args[0]}: not a dataset ({list(convert.CONVERTERS)})')
    return EntryPoint(f'unet3d-convert {args[0]}',
                      module=f'unet3d.cli.convert.{args[0]}'), args[1:]
  if program in scripts:
    module = scripts[program].split(':')[0]
    return EntryPoint(program, module=module), args
  if program in ('python', 'python3'):
    if args[:1] == ['-c']:
      return None, []
    if args[:1] == ['-m']:
      module = args[1]
      if module.split('.')[0] in EXTERNAL_MODULES:
        return None, []
      spec = importlib.util.find_spec(module)
      assert spec is not None, f'python -m {module}: no such module'
      if spec.submodule_search_locations:  # a package: its __main__
        module += '.__main__'
      origin = importlib.util.find_spec(module).origin
      return EntryPoint(f'python -m {args[1]}', module=module,
                        path=origin), args[2:]
    path = os.path.join(REPO, args[0])
    assert os.path.isfile(path), f'python {args[0]}: no such file'
    return EntryPoint(f'python {args[0]}', path=path), args[1:]
  if program.endswith('.sh') or program.startswith(('scripts/', './')):
    path = os.path.join(REPO, program)
    assert os.path.isfile(path), f'{program}: no such file'
    return EntryPoint(program, path=path, shell=True), args
  # '<peer venv>/bin/python': a placeholder for another project's program.
  if program in EXTERNAL or program.startswith(('nnUNetv2_', '<')):
    return None, []
  raise AssertionError(f'{program}: not a command of this project (add it to '
                       'tests/test_docs.py EXTERNAL if it is another program)')


_FLAG_DUMP = r'''
import json, runpy, sys
from absl import flags
sys.argv = ['docs-check']
target, kind = sys.stdin.read().split('\n')[:2]
if kind == 'module':
  __import__(target)
else:
  runpy.run_path(target, run_name='__docs_check__')
names = set()
for name, flag in flags.FLAGS._flags().items():
  names.add(name)
print(json.dumps(sorted(names)))
'''


@functools.lru_cache(maxsize=None)
def flags_of(entry: EntryPoint) -> frozenset[str]:
  """Every flag name of an entry point: its absl flags (imported in a fresh
  process, as the command would) and argparse options in its source."""
  names = set()
  target, kind = (entry.module, 'module') if entry.module else (
      entry.path, 'path')
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep +
             os.environ.get('PYTHONPATH', ''), TF_CPP_MIN_LOG_LEVEL='3')
  out = subprocess.run([sys.executable, '-c', _FLAG_DUMP],
                       input=f'{target}\n{kind}\n', capture_output=True,
                       text=True, cwd=REPO, env=env, timeout=300, check=False)
  assert out.returncode == 0, f'{entry.name}: cannot import: {out.stderr[-2000:]}'
  names.update(json.loads(out.stdout.strip().splitlines()[-1]))
  paths = [entry.path] if entry.path else []
  if entry.module and not entry.path:
    spec = importlib.util.find_spec(entry.module)
    paths.append(spec.origin)
  for path in paths:
    with open(path) as f:
      source = f.read()
    names.update(re.findall(r"add_argument\(\s*'--([\w-]+)'", source))
    names.update(re.findall(r"add_argument\([^)]*?'--([\w-]+)'", source))
  return frozenset(names)


def _flag_names(args: list[str]) -> list[tuple[str, str | None]]:
  """[(name, value or None)] of the --flags and -f short flags in args."""
  out = []
  for arg in args:
    if arg.startswith('--') and len(arg) > 2:
      name, _, value = arg[2:].partition('=')
      out.append((name, value if _ else None))
    elif re.fullmatch(r'-[A-Za-z]', arg):
      out.append((arg[1:], None))
  return out


def _schema_keys(cls=config.Config, prefix='') -> set[str]:
  hints = typing.get_type_hints(cls)
  keys = set()
  for f in dataclasses.fields(cls):
    if dataclasses.is_dataclass(hints[f.name]):
      keys.add(prefix + f.name)
      keys |= _schema_keys(hints[f.name], prefix + f.name + '.')
    else:
      keys.add(prefix + f.name)
  return keys


SCHEMA_KEYS = frozenset(_schema_keys()) | schema.LEGACY_IGNORED_KEYS


def override_keys(text: str) -> list[str]:
  """The dotted keys of a --params_override value (`a.b=c,d=e` or YAML)."""
  text = text.strip()
  if text.startswith('{') or ':' in text.split('=')[0]:
    return flatten_keys(yaml.safe_load(text))
  keys, depth, token = [], 0, ''
  for ch in text + ',':
    if ch in '[{(':
      depth += 1
    elif ch in ']})':
      depth -= 1
    if ch == ',' and depth == 0:
      if '=' in token:
        keys.append(token.split('=', 1)[0].strip())
      token = ''
    else:
      token += ch
  return keys


def flatten_keys(mapping, prefix='') -> list[str]:
  keys = []
  for key, value in (mapping or {}).items():
    name = prefix + str(key)
    if isinstance(value, dict) and name in SCHEMA_KEYS and name not in (
        'predict.largest_component',):
      keys += flatten_keys(value, name + '.') or [name]
    else:
      keys.append(name)
  return keys


def _commands():
  found = []
  for path in doc_files():
    with open(path) as f:
      text = f.read()
    for lang, body in fenced_blocks(text):
      if lang in SHELL_LANGS:
        for words in shell_commands(body):
          found.append(pytest.param(words, id=f'{_rel(path)}: {" ".join(words)[:60]}'))
  return found


def _yaml_blocks():
  found = []
  for path in doc_files():
    with open(path) as f:
      text = f.read()
    for i, (lang, body) in enumerate(fenced_blocks(text)):
      if lang in ('yaml', 'yml'):
        found.append(pytest.param(body, id=f'{_rel(path)}#{i}'))
  return found


def test_docs_have_commands_and_pages():
  assert len(_commands()) > 40
  names = {_rel(p) for p in doc_files()}
  for page in ('getting_started', 'data', 'planning', 'training',
               'evaluation', 'inference', 'distribution', 'troubleshooting',
               'benchmarks', 'config_reference', 'development'):
    assert f'docs/{page}.md' in names, page
  for page in ('model_garden', 'nvidia_unet3d_medical', 'unet3plus',
               'intel_decathlon', 'pytorch3dunet', 'nnunet', 'monai'):
    assert f'docs/coming_from/{page}.md' in names, page


@pytest.mark.parametrize('words', _commands())
def test_documented_command_exists_with_its_flags(words):
  entry, args = entry_point(list(words))
  if entry is None or entry.shell:
    return
  known = flags_of(entry) | {'help', 'helpfull', 'helpshort'}  # app.run's
  for name, value in _flag_names(args):
    bare = name[2:] if name.startswith('no') and name[2:] in known else name
    assert bare in known, f'{entry.name}: no flag --{name}'
    if name == 'params_override' and value:
      for key in override_keys(value):
        assert key in SCHEMA_KEYS, f'--params_override: {key} is no config key'


@pytest.mark.parametrize('body', _yaml_blocks())
def test_yaml_blocks_use_config_keys(body):
  for key in flatten_keys(yaml.safe_load(body)):
    assert key in SCHEMA_KEYS, f'{key} is no config key'


def _anchors(text: str) -> set[str]:
  """GitHub's heading anchors of a markdown text."""
  anchors = set()
  counts = {}
  text = _FENCE.sub('', text)
  for heading in re.findall(r'^#{1,6}\s+(.*?)\s*#*\s*$', text, re.M):
    slug = re.sub(r'[^\w\- ]', '', heading.lower()).replace(' ', '-')
    n = counts.get(slug, 0)
    counts[slug] = n + 1
    anchors.add(slug if n == 0 else f'{slug}-{n}')
  return anchors


def _links(text: str) -> list[str]:
  text = _FENCE.sub('', text)
  text = re.sub(r'`[^`\n]*`', '', text)
  return re.findall(r'\]\(([^)\s]+)\)', text)


@pytest.mark.parametrize('path', doc_files(), ids=_rel)
def test_links_resolve(path):
  with open(path) as f:
    text = f.read()
  for link in _links(text):
    if re.match(r'[a-z]+://|mailto:', link):
      continue
    target, _, anchor = link.partition('#')
    target_path = os.path.normpath(os.path.join(os.path.dirname(path),
                                                target)) if target else path
    assert os.path.exists(target_path), f'{_rel(path)}: {link}: no such file'
    if anchor:
      assert target_path.endswith('.md'), f'{_rel(path)}: {link}: anchor on a non-page'
      with open(target_path) as f:
        assert anchor in _anchors(f.read()), (
            f'{_rel(path)}: {link}: no heading #{anchor} in {_rel(target_path)}')


HISTORY_WORDS = ('previous host', 'reported to us', 'earlier run',
                 'previous session', 'earlier session', 'this session',
                 'suite has taken')
# A dated suite time, e.g. "731 tests in 495 s".
SUITE_TIME = re.compile(r'\d+ tests,? (in|took) \d+', re.I)


@pytest.mark.parametrize('path', doc_files(), ids=_rel)
def test_no_history_or_developer_paths(path):
  with open(path) as f:
    text = f.read()
  lowered = text.lower()
  for words in HISTORY_WORDS:
    assert words not in lowered, f'{_rel(path)}: "{words}"'
  assert not SUITE_TIME.search(text), f'{_rel(path)}: a suite time'
  for dev_path in ('/work/', '/tmp/w/', '/home/', '/root/', '/Users/'):
    assert dev_path not in text, f'{_rel(path)}: a developer path {dev_path}'


def test_readme_is_short_and_figures_live_on_the_benchmarks_page():
  with open(os.path.join(REPO, 'README.md')) as f:
    readme = f.read()
  assert len(readme.splitlines()) <= 300
  # Measured figures: seconds, steps/s, images/s, MB peaks.
  measured = re.compile(r'\b\d+(\.\d+)? ?(s/step|steps/s|images/s|'
                        r'volumes/s|voxels/s|MB)\b')
  for path in doc_files():
    if path.endswith(('benchmarks.md', 'CHANGELOG.md')):
      continue
    with open(path) as f:
      found = measured.search(f.read())
    assert not found, f'{_rel(path)}: a measured figure ({found.group(0)}) ' \
                      'belongs on docs/benchmarks.md'


def test_shell_parsing():
  body = ('# a comment\nFOO=1 unet3d --mode=eval \\\n  --model_dir=/r  # trailing\n'
          '$ pip install x && python -m pytest tests -q\n')
  assert shell_commands(body) == [
      ['FOO=1', 'unet3d', '--mode=eval', '--model_dir=/r'],
      ['pip', 'install', 'x'], ['python', '-m', 'pytest', 'tests', '-q']]
  assert override_keys("predict.save_probabilities=nifti,input_image_size=[1,2,3],"
                       "data.fold=0") == [
                           'predict.save_probabilities', 'input_image_size',
                           'data.fold']
  assert _anchors('## Predict: NIfTI in, NIfTI out on the input\'s grid\n') == {
      'predict-nifti-in-nifti-out-on-the-inputs-grid'}


def test_the_checks_catch_mistakes():
  entry, args = entry_point(['unet3d', '--mode=eval', '--no_such_flag'])
  assert 'mode' in flags_of(entry) and 'no_such_flag' not in flags_of(entry)
  assert args == ['--mode=eval', '--no_such_flag']
  with pytest.raises(AssertionError, match='no such file'):
    entry_point(['python', 'scripts/no_such_script.py'])
  with pytest.raises(AssertionError, match='not a dataset'):
    entry_point(['unet3d-convert', 'no_such_dataset'])
  with pytest.raises(AssertionError, match='not a command'):
    entry_point(['unet3d_typo', '--mode=eval'])
  assert 'model.layer_order' in SCHEMA_KEYS
  assert 'model.no_such_key' not in SCHEMA_KEYS
  assert flatten_keys({'model': {'name': 'unet3d'}, 'train_steps': 1}) == [
      'model.name', 'train_steps']
