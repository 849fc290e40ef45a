"""`unet3d-convert lits_2d` from a checkout, with the same flags
(unet3d/cli/convert/lits_2d.py)."""

from unet3d.cli.convert import lits_2d

if __name__ == '__main__':
  lits_2d.main()
