"""`python -m unet3d.examples.walkthrough_mni152` from a checkout, with the
same flags (unet3d/examples/walkthrough_mni152.py)."""

from unet3d.examples import walkthrough_mni152

if __name__ == '__main__':
  walkthrough_mni152.run_main()
