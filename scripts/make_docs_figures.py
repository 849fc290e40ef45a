"""Makes the pictures of docs/ (a shim of `python -m unet3d.examples.docs_figures`).

  python scripts/make_docs_figures.py [--work_dir=docs_figures_run]
"""

from unet3d.examples import docs_figures

if __name__ == '__main__':
  docs_figures.run_main()
