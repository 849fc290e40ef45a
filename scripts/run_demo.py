"""`unet3d-demo` from a checkout, with the same flags (unet3d/cli/demo.py)."""

from unet3d.cli import demo

if __name__ == '__main__':
  demo.run_main()
