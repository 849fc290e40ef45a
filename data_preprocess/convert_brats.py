"""`unet3d-convert brats` from a checkout, with the same flags
(unet3d/cli/convert/brats.py)."""

from unet3d.cli.convert import brats

if __name__ == '__main__':
  brats.main()
