"""`unet3d-convert png_slices` from a checkout, with the same flags
(unet3d/cli/convert/png_slices.py)."""

from unet3d.cli.convert import png_slices

if __name__ == '__main__':
  png_slices.main()
