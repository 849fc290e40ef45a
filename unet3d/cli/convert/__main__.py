"""`python -m unet3d.cli.convert <dataset> ...`: `unet3d-convert`."""

from unet3d.cli import convert

convert.main()
