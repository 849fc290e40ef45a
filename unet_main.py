"""`python unet_main.py ...` from a checkout: the `unet3d` command
(unet3d/cli/main.py) with the same flags."""

from unet3d.cli import main

if __name__ == '__main__':
  main.run_main()
