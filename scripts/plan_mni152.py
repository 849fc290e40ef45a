"""`python -m unet3d.examples.plan_mni152` from a checkout, with the
same flags (unet3d/examples/plan_mni152.py)."""

from unet3d.examples import plan_mni152

if __name__ == '__main__':
  plan_mni152.run_main()
