"""`unet3d-convert decathlon` from a checkout, with the same flags
(unet3d/cli/convert/decathlon.py)."""

from unet3d.cli.convert import decathlon

if __name__ == '__main__':
  decathlon.main()
