"""`unet3d-convert lits` from a checkout, with the same flags
(unet3d/cli/convert/lits.py)."""

from unet3d.cli.convert import lits

if __name__ == '__main__':
  lits.main()
