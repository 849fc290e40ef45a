"""The recipe writer: untrusted names never leave their comment, and the
rendered text holds exactly the plan's keys and values."""

import json

import pytest
import yaml

from unet3d import config
from unet3d.planning import budgets
from unet3d.planning import planner
from unet3d.planning import recipe
from unet3d.planning import run
from tests.planning import fabricate

GPU = budgets.get_budget('gpu16g')

# Pieces that would end a comment, start YAML syntax or be very long.
HOSTILE = [
    '\nmodel_dir: /tmp/evil', '\rtrain_steps: 1', '\r\ntrain_steps: 1',
    '\x85train_steps: 1', '\u2028train_steps: 1', '\u2029train_steps: 1',
    '\x0btrain_steps: 1', '\x0ctrain_steps: 1', '\x00\x1b[31m', '\x7f',
    '# not a key', 'a: b', '{x: 1}', "it's", 'say "hi"', '&anchor',
    '*alias', '!!python/object:os.system', '- item', '\ufeff\ufffe\uffff',
    '\ud800', '\U0001f600 left', 'x' * 5000 + '\nmodel_dir: /x',
    '\n' * 3 + 'plan:\n  budget: other',
]


def _rendered(fp):
  plan = planner.make_plan(fp, GPU, '/data')
  return plan, recipe.render(plan, ['planned from ' + fp.path])


def _flat(tree, prefix=''):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[prefix + key] = value
  return out


@pytest.fixture(scope='module')
def benign():
  plan, text = _rendered(fabricate.make())
  return plan, _flat(yaml.safe_load(text))


@pytest.mark.parametrize('piece', HOSTILE)
@pytest.mark.parametrize('where', ['label', 'modality', 'path'])
def test_hostile_names_stay_in_their_comments(benign, piece, where):
  labels = {'0': 'background', '1': 'organ ' + piece, '2': piece + ' lesion'}
  path = '/data/' + piece + '/dataset.json' if where == 'path' else '/d.json'
  fp = fabricate.make(path=path,
                      labels=labels if where == 'label' else None,
                      modality=piece if where == 'modality' else 'T1')
  plan, text = _rendered(fp)
  assert text.splitlines() == text[:-1].split('\n')  # no \x85, \u2028...
  parsed = _flat(config.parse_yaml(text, 'hostile'))
  _, benign_values = benign
  assert set(parsed) == {k for k, _, _ in plan.entries} == set(benign_values)
  for key, value, _ in plan.entries:
    assert parsed[key] == json.loads(json.dumps(value)), key
  assert parsed['plan.dataset_json'] == path
  assert parsed['train_steps'] == benign_values['train_steps']
  recipe.check_rendered(text, plan, 'hostile')


@pytest.mark.parametrize('piece', HOSTILE)
def test_safe_comment_and_yaml_value_cannot_break_a_line(piece):
  comment = '# ' + recipe.safe_comment(piece)
  assert yaml.safe_load(comment + '\nk: 1\n') == {'k': 1}
  value = recipe.yaml_value({'name': piece, 'list': [piece]})
  assert yaml.safe_load('k: ' + value + '\n') == {
      'k': {'name': piece, 'list': [piece]}}


def test_a_rendered_plan_whose_keys_differ_is_refused():
  plan, text = _rendered(fabricate.make())
  with pytest.raises(ValueError, match='rendered keys differ'):
    recipe.check_rendered(text + 'model_dir: "/x"\n', plan, 'recipe')
  with pytest.raises(ValueError, match='duplicate key'):
    recipe.check_rendered(text + 'seed: 1\n', plan, 'recipe')
  changed = text.replace('"polynomial"', '"cosine"')
  with pytest.raises(ValueError, match='values differ'):
    recipe.check_rendered(changed, plan, 'recipe')


def test_plan_dataset_writes_a_safe_recipe_for_hostile_labels(tmp_path):
  info = fabricate.dataset_info(labels={
      '0': 'background', '1': 'organ\nmodel_dir: /tmp/evil',
      '2': 'x\u2028train_steps: 1'})
  path = tmp_path / 'dataset.json'
  path.write_text(json.dumps(info))
  result = run.plan_dataset(str(tmp_path), 'gpu16g')
  text = open(result['plan_file']).read()
  parsed = _flat(config.parse_yaml(text, 'plan'))
  assert 'model_dir' not in parsed
  assert parsed['train_steps'] == planner.GPU_TRAIN_STEPS


@pytest.mark.parametrize('multi_label', [False, True])
def test_labels_absent_from_every_case_are_warned_about(multi_label):
  labels = ({'0': 'organ', '1': 'lesion\nmodel_dir: x'} if multi_label else
            {'0': 'background', '1': 'organ', '2': 'lesion\nmodel_dir: x'})
  counts = [100, 0] if multi_label else [1000, 100, 0]
  components = {'0' if multi_label else '1': {'count': 1,
                                              'largest_voxels': [100]}}
  centroids = {'0' if multi_label else '1': [20.0, 32.0, 32.0]}
  fp = fabricate.make(labels=labels, multi_label=multi_label,
                      class_voxel_counts=counts, components=components,
                      centroid_voxel=centroids)
  plan, text = _rendered(fp)
  absent = [w for w in plan.warnings if 'absent from every case' in w]
  assert len(absent) == 1 and 'lesion' in absent[0]
  assert 'organ' not in absent[0]
  warnings = text.split('# WARNINGS:')[1]
  assert 'absent from every case' in warnings
  assert 'model_dir' not in _flat(yaml.safe_load(text))


def test_no_absent_label_warning_when_every_label_has_voxels():
  plan, _ = _rendered(fabricate.make())
  assert not [w for w in plan.warnings if 'absent' in w]
