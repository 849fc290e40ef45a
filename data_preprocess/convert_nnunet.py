"""`unet3d-convert nnunet` from a checkout, with the same flags
(unet3d/cli/convert/nnunet.py)."""

from unet3d.cli.convert import nnunet

if __name__ == '__main__':
  nnunet.main()
